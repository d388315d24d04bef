"""Numerical proof, for the book, that each decomposition holds on a given model and input: every identity of
the book's appendix A compared with an independent computation through the model's own modules.
(tests/unit proves the same with its own code.)"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import attribution as A, validate
from .hooks import hooked
from .models import load


def _o_proj_inputs(model, inputs) -> tuple[list[torch.Tensor], list]:
    """o_proj's input at T per layer, and what the model's own norm after attention does to o_proj's output there,
    norm(o) / o (Gemma: the frozen scale of its attention output, read off the model); 1.0 without such a norm."""
    a, seen, outputs = model.anatomy, [], []
    with hooked(model.hf) as hooks, torch.no_grad():
        for layer in a.layers:
            hooks.before(layer.self_attn.o_proj, lambda m, args: seen.append(args[0][0, -1].float()))
            if a.sandwich:
                hooks.after(layer.self_attn.o_proj, lambda m, args, out: outputs.append(out[0, -1]))
        model.hf(**inputs)
        scales = [a.attn_out_norm(l)(o) / o for l, o in enumerate(outputs)] if a.sandwich else [1.0] * a.n_layers
    return seen, scales


def _hidden_states(model, inputs) -> list[torch.Tensor]:
    """The model's own hidden states at T, as transformers returns them: the input of every layer, then the final
    residual after the final norm."""
    with torch.no_grad():
        return [h[0, -1].float() for h in model.hf(**inputs, output_hidden_states=True).hidden_states]


def identity_errors(model, image=None, question: str = "", context: str | None = None,
                    neurons: int = 16) -> dict[str, float]:
    """Max absolute error of each identity, over all layers/heads/positions (neurons: the `neurons` largest
    contributions of the last layer, each a readout of the whole vocabulary): {identity, in TeX: error}. "Brute
    force" recomputes a score through the model's own final norm and unembedding for each vector added to its base,
    independently of the library's batched readout."""
    neurons = validate.whole("neurons", neurons)
    trace = model.trace(image, question, context)
    a = model.anatomy
    inputs = model.inputs(image, question, context)
    o_in, o_scale = _o_proj_inputs(model, inputs)
    hidden = _hidden_states(model, inputs)
    with torch.no_grad():
        scale = a.final_norm(trace.final_resid) / trace.final_resid  # g / s, from the model's own norm

        def brute_imp(base, v):
            z0, z1 = A.capped(trace, a.lm_head(scale * base)), A.capped(trace, a.lm_head(scale * (base + v)))
            w = trace.top_token
            return torch.log_softmax(z1, -1)[w] - torch.log_softmax(z0, -1)[w]

        head_direct = torch.stack([torch.stack([o_scale[l] * (
            a.layers[l].self_attn.o_proj.weight[:, h * a.head_dim:(h + 1) * a.head_dim].float()
            @ o_in[l][h * a.head_dim:(h + 1) * a.head_dim]) for h in range(a.n_heads)]) for l in range(a.n_layers)])
        heads = A.all_head_outputs(trace)
        layers = A.layer_scores(trace)
        err = lambda x, y: float((x.cpu() - y.cpu()).abs().max())   # scores come back on the CPU
        last, best = a.n_layers - 1, A.top_heads(A.head_scores(trace), 1)[0]
        u = A.position_contributions(trace, best["layer"], best["head"])
        c = A.neuron_contributions(trace, last)
        strongest = c.norm(dim=1).topk(min(neurons, len(c))).indices
        after = torch.stack([*hidden[1:a.n_layers], trace.final_resid.float()])   # h^l, the final one before its norm
        return {
            r"\sum_h a^{l,h} = A^l": err(heads.sum(1), trace.attn_out),
            r"\sum_j u^{l,h}_j = a^{l,h}": err(heads, head_direct),
            r"\sum_k c^l_k\, W_{down}[:,k] = F^l": max(err(A.neuron_contributions(trace, l).sum(0), trace.mlp_out[l])
                                   for l in range(a.n_layers)),
            r"h^{l-1} + A^l = m^l": err(trace.resid_in + trace.attn_out, trace.mid),
            r"h^{l-1} = \text{the model's hidden states}": max(err(trace.resid_in, torch.stack(hidden[:a.n_layers])),
                                                                err(a.final_norm(trace.final_resid), hidden[-1])),
            r"m^l + F^l = h^l": err(trace.mid + trace.mlp_out, after),
            r"z(h^L_T) = \text{the logits}": err(A.capped(trace, A.readout(trace, trace.final_resid)),
                                                 trace.logits),
            r"\mathrm{Imp}(A^l) = \text{brute force}": max(err(layers["attn"][l], brute_imp(trace.resid_in[l], trace.attn_out[l]))
                                                      for l in range(a.n_layers)),
            r"\mathrm{Imp}(a^{l,h}) = \text{brute force}": err(A.head_scores(trace), torch.stack([
                torch.stack([brute_imp(trace.resid_in[l], head_direct[l, h]) for h in range(a.n_heads)])
                for l in range(a.n_layers)])),
            r"\mathrm{Imp}(F^l) = \text{brute force}": max(err(layers["ffn"][l], brute_imp(trace.mid[l], trace.mlp_out[l]))
                                                      for l in range(a.n_layers)),
            r"\mathrm{Imp}(u_j) = \text{brute force}": err(
                A.position_scores(trace, best["layer"], best["head"]),
                torch.stack([brute_imp(trace.resid_in[best["layer"]], v) for v in u])),
            r"\mathrm{Imp}(c_k W_{down}[:,k]) = \text{brute force}": err(
                A.neuron_scores(trace, last)[strongest.cpu()], torch.stack([brute_imp(trace.mid[last], c[k]) for k in strongest])),
        }


NEAR_TIE = 0.1   # logits: a float32 margin bfloat16's rounding (8 significant bits; logits of order 10) can cross


def dtype_agreement(name: str, examples, dtype: str = "bfloat16", device: str = "cpu"):
    """The tool in `dtype` against float32 on the same examples (VQA): one row per example with the float32 margin
    (top logit minus the second; below NEAR_TIE the answer is a near-tie), whether the answer and best head agree,
    and the largest differences in p(answer), head scores (relative to the largest score) and the map."""
    full, half = load(name, device=device), load(name, device=device, dtype=dtype)
    rows = []
    for ex in examples:
        a, b = (m.explain(ex.image, question=ex.question) for m in (full, half))
        best = [(x.top_heads[0]["layer"], x.top_heads[0]["head"]) for x in (a, b)]
        top2 = a.trace.logits.topk(2).values
        rows.append({"float32 margin": float(top2[0] - top2[1]), "same answer": a.answer == b.answer,
                     "same best head": best[0] == best[1],
                     "Δ p(answer)": abs(a.answer_prob - b.answer_prob),
                     "Δ head score / largest": float((a.head_scores - b.head_scores).abs().max()
                                                     / a.head_scores.abs().max()),
                     "Δ map": float(np.abs(np.asarray(a.patch_grid) - np.asarray(b.patch_grid)).max())})
    frame = pd.DataFrame(rows)
    frame["near-tie"] = frame["float32 margin"] < NEAR_TIE
    return frame
