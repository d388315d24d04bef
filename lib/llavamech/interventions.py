"""Causal checks: run the model with parts of it ablated, through forward hooks removed on exit (the model is
unchanged afterwards), and measure what the answer loses.

Ablations: heads (their slice of o_proj's input), whole attention or FFN layers, and image patches (their visual
embeddings, the projector's outputs). `how="zero"` sets the part to zero; `how="mean"` to its mean over the
positions of a reference example set (`activation_means`), which keeps the activations in their usual range.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .batching import first_batch, in_batches
from .examples import Example
from .hooks import hooked
from .report import progress
from .stats import bootstrap


@dataclass
class Means:
    """Mean activations over every position of a reference set: what mean ablation puts in place of a part. On
    the CPU (each ablation hook moves its part to where that part of the model runs)."""
    o_proj_in: torch.Tensor    # [L, H * head_dim] the heads' outputs before o_proj
    attn: torch.Tensor         # [L, d] attention outputs
    ffn: torch.Tensor          # [L, d] FFN outputs
    visual: torch.Tensor | None  # [d] visual embeddings (projector outputs); None for a text-only model


def _projector(model):
    return model.hf.model.multi_modal_projector if model.is_multimodal else None


def activation_means(model, examples: list[Example], mode: str) -> Means:
    """Means of every ablatable part over all positions of `examples` (run in `mode`)."""
    a = model.anatomy
    sums: dict = {}

    def add(name, x):
        x = x.detach().float().reshape(-1, x.shape[-1])
        total, count = sums.get(name, (0.0, 0))
        sums[name] = (total + x.sum(0), count + len(x))

    modules = [(f"o{l}", layer.self_attn.o_proj, True) for l, layer in enumerate(a.layers)]
    modules += [(f"a{l}", layer.self_attn, False) for l, layer in enumerate(a.layers)]
    modules += [(f"f{l}", layer.mlp, False) for l, layer in enumerate(a.layers)]
    if _projector(model) is not None:
        modules.append(("visual", _projector(model), False))
    with hooked(model.hf) as hooks, torch.no_grad():
        for name, module, pre in modules:
            if pre:
                hooks.before(module, lambda m, args, name=name: add(name, args[0]))
            else:
                hooks.after(module, lambda m, args, out, name=name: add(name, out[0] if isinstance(out, tuple) else out))
        for example in progress(examples, "activation means"):
            model.hf(**model.inputs(**example.inputs(mode)), use_cache=False, logits_to_keep=1)
    mean = lambda name: (sums[name][0] / sums[name][1]).cpu()
    return Means(torch.stack([mean(f"o{l}") for l in range(a.n_layers)]),
                 torch.stack([mean(f"a{l}") for l in range(a.n_layers)]),
                 torch.stack([mean(f"f{l}") for l in range(a.n_layers)]),
                 mean("visual") if "visual" in sums else None)


@contextlib.contextmanager
def ablated(model, heads=(), attn_layers=(), ffn_layers=(), patches=None, how: str = "zero",
            means: Means | None = None):
    """Within the block, the model runs with the given parts ablated.

    heads: [(layer, head), ...]; attn_layers / ffn_layers: [layer, ...]; patches: patch indices (row-major) ablated
    in every batch row, or one list per batch row (to ablate a different patch in each copy of an image)."""
    if how not in ("zero", "mean"):
        raise ValueError(f"how must be 'zero' or 'mean', not {how!r}")
    if how == "mean" and means is None:
        raise ValueError("mean ablation needs means=activation_means(model, reference_examples, mode)")
    a = model.anatomy
    hd = a.head_dim

    def fill(x, value):
        return torch.zeros_like(x) if how == "zero" else value.to(x.device, x.dtype).expand_as(x).clone()

    def heads_hook(layer, chosen):
        def hook(module, args):
            x = args[0].clone()
            for h in chosen:
                sl = slice(h * hd, (h + 1) * hd)
                x[..., sl] = fill(x[..., sl], None if how == "zero" else means.o_proj_in[layer, sl])
            return (x,) + args[1:]
        return hook

    def output_hook(value):
        def hook(module, args, out):
            if isinstance(out, tuple):
                return (fill(out[0], value),) + out[1:]
            return fill(out, value)
        return hook

    def patches_hook(module, args, out):
        out = out.clone()
        rows = patches if patches and isinstance(patches[0], (list, tuple, range, np.ndarray, torch.Tensor)) \
            else [patches] * len(out)
        if len(rows) != len(out):
            raise ValueError(f"{len(rows)} patch lists for a batch of {len(out)} images")
        for r, chosen in enumerate(rows):
            idx = torch.as_tensor(list(chosen), dtype=torch.long)
            if len(idx):
                out[r, idx] = fill(out[r, idx], None if how == "zero" else means.visual)
        return out

    with hooked(model.hf) as hooks:
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        for layer, chosen in by_layer.items():
            hooks.before(a.layers[layer].self_attn.o_proj, heads_hook(layer, chosen))
        for layer in attn_layers:
            hooks.after(a.layers[layer].self_attn, output_hook(None if how == "zero" else means.attn[layer]))
        for layer in ffn_layers:
            hooks.after(a.layers[layer].mlp, output_hook(None if how == "zero" else means.ffn[layer]))
        if patches is not None and len(patches):
            if _projector(model) is None:
                raise ValueError(f"{model.name} is text-only: it has no image patches to ablate")
            if getattr(model.hf.config, "image_grid_pinpoints", None):  # the projector's rows are tiles, not the grid
                raise ValueError(f"{model.name} is a LLaVA-NeXT model: ablate its patches through the input "
                                 "embeddings (llavamech.patches.ablation_scores), which follow its tile layout")
            hooks.after(_projector(model), patches_hook)
        yield model


def same_length_groups(model, examples: list[Example], mode: str) -> list[tuple[list[int], list[dict]]]:
    """The model inputs of `examples` grouped by sequence length (batched without padding, each row is computed
    as it would be alone): [(indices into examples, their inputs)]."""
    groups: dict[int, tuple[list[int], list[dict]]] = {}
    for i, example in enumerate(examples):
        enc = model.inputs(**example.inputs(mode))
        indices, inputs = groups.setdefault(enc["input_ids"].shape[1], ([], []))
        indices.append(i)
        inputs.append(enc)
    return list(groups.values())


@torch.no_grad()
def answer_scores(model, examples: list[Example], mode: str, batch: int = 64, **ablation) -> dict[str, np.ndarray]:
    """Per example, under the ablation given as keyword arguments of `ablated`: `log p` of the true colour and
    `correct` (top-1 is the true colour): arrays [n]. Every example needs its colour. At most `batch` examples per
    forward pass, fewer where the device's memory is short."""
    missing = [e.source for e in examples if e.colour is None]
    if missing:
        raise ValueError(f"causal checks need the true colour; {missing[0]} has none")
    targets = np.array([model.token_id(e.colour) for e in examples])
    logp, correct = np.zeros(len(examples)), np.zeros(len(examples))

    def last_logits(encoded: list[dict]) -> torch.Tensor:
        inputs = {key: torch.cat([enc[key] for enc in encoded]) for key in encoded[0]}
        return model.hf(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float().cpu()

    with ablated(model, **ablation):
        for indices, encoded in same_length_groups(model, examples, mode):
            size = first_batch(model, len(encoded), encoded[0]["input_ids"].shape[1], batch)
            logits = torch.cat(in_batches(last_logits, encoded, "the causal checks", size))
            t = torch.as_tensor(targets[indices])
            logp[indices] = torch.log_softmax(logits, -1)[torch.arange(len(indices)), t].cpu().numpy()
            correct[indices] = (logits.argmax(-1) == t).float().cpu().numpy()
    return {"log p": logp, "correct": correct}


def effect(clean: dict, ablated_scores: dict) -> dict[str, np.ndarray]:
    """Per-example change from the clean run: `Δ log p` and `Δ accuracy` (negative = the ablation hurt)."""
    return {"Δ log p": ablated_scores["log p"] - clean["log p"],
            "Δ accuracy": ablated_scores["correct"] - clean["correct"]}


def against_random(model, heads, effect_of, draws: int, rng) -> tuple[dict, np.ndarray, np.ndarray]:
    """The effect of an intervention on `heads` and on as many heads drawn at random from the others, `draws`
    times. `effect_of(heads)` -> per-example {"Δ log p", "Δ accuracy"}. Returns (the heads' effect, the draws' mean
    Δ log p, the draws' mean Δ accuracy)."""
    everyone = [(l, h) for l in range(model.anatomy.n_layers) for h in range(model.anatomy.n_heads)]
    others = [h for h in everyone if h not in heads]
    hit = effect_of(list(heads))
    randoms = [effect_of([others[i] for i in rng.choice(len(others), len(heads), replace=False)]) for _ in range(draws)]
    return (hit, np.array([r["Δ log p"].mean() for r in randoms]),
            np.array([r["Δ accuracy"].mean() for r in randoms]))


def head_ablation_test(model, examples: list[Example], mode: str, ranked_heads: list[tuple[int, int]],
                       ks=(1, 3, 5), draws: int = 20, how: str = "mean", means: Means | None = None,
                       seed: int = 0) -> pd.DataFrame:
    """Ablate the top-k heads of `ranked_heads`, and k heads drawn at random (from all the others) `draws` times.
    One row per k: the top-k effect with its bootstrap interval over examples, the random draws' mean effect and
    the 2.5–97.5 % range over draws, and the share of draws that hurt log p at least as much as the top k."""
    rng = np.random.default_rng(seed)
    clean = answer_scores(model, examples, mode)

    def effect_of(heads):
        return effect(clean, answer_scores(model, examples, mode, heads=heads, how=how, means=means))

    rows = []
    for k in progress(ks, "top-k vs random heads"):
        top = list(ranked_heads[:k])
        hit, rand_logp, rand_acc = against_random(model, top, effect_of, draws, rng)
        top_logp, top_acc = bootstrap(hit["Δ log p"], seed=seed), bootstrap(hit["Δ accuracy"], seed=seed)
        rows.append({"k": k, "heads": ", ".join(f"{l}_{h}" for l, h in top),
                     "top-k Δ accuracy": top_acc, "random Δ accuracy": spread(rand_acc),
                     "top-k Δ log p": top_logp, "random Δ log p": spread(rand_logp),
                     "random draws hurting as much": float((rand_logp <= top_logp.mean).mean()),
                     "draws": draws, "n": len(examples), "_random log p": rand_logp})
    return pd.DataFrame(rows).set_index("k")


def spread(values: np.ndarray) -> str:
    low, high = np.percentile(values, [2.5, 97.5])
    return f"{values.mean():.3g} ({low:.3g} to {high:.3g})"
