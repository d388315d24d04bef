"""The paper's importance score (the book's appendix A): log-probability increase under a frozen-norm readout.

z(x) = W_U (g * x / s), with g the final norm's gain and s the RMS of the final residual h^L_T, frozen once per
example. Imp(v) = log softmax(z(base + v))_w - log softmax(z(base))_w. Since z is linear,
z(base + v) = z(base) + z(v): one readout per scored vector, one for the base.

Gemma (llavamech.anatomy): the gains are 1 + g. Its attention output o = sum_h o_h passes an RMSNorm before it joins
the residual stream, A^l = (1 + g') * o / rms(o), which is not linear in o; with rms(o) frozen at its value for the
whole layer (o at T, as s is frozen for the readout), it is, and each head's (and each position's, each neuron's)
share is its own raw output times (1 + g') / rms(o) — so heads still sum to A^l exactly, and each share is what
the head adds to the residual stream in this example. GLM-4.1V's language model has the same sandwich norms, with
gains g, and they enter the same way. Gemma's logits are soft-capped, logits = c * tanh(z / c), where
the config sets c and the model's class applies it (`Trace.soft_cap`): Imp then compares the capped logits of
base + v and of base (`capped`); the linear logit contribution stays z(v)_w, before the cap (which is not additive).

All functions are pure readouts over a Trace. `token` defaults to the model's own top-1 next token. They compute
on the trace's device (the model's); vectors ([..., d]) and logits ([..., V]) stay there, as inputs to further
readouts, while scores (indexed by layer, head, position or neuron) come back on the CPU.
"""
from __future__ import annotations

import functools

import torch

from . import validate
from .errors import LlavamechError
from .trace import Trace, stacked_on


def readout(trace: Trace, x: torch.Tensor) -> torch.Tensor:
    """Frozen-norm logits of residual-space vectors: [..., d] -> [..., V], in float32. W_U is read as the model holds
    it: a float32 W_U multiplies the vectors directly; a bfloat16 one on a GPU that can (`_split`) meets them split
    into three bfloat16 terms with float32 accumulation (`_products`): float32's product to its rounding, without a
    float32 copy of W_U (525 MB for llava-1.5-7b) or TF32's rounding; otherwise W_U is converted once
    (`Anatomy.unembed`)."""
    a = trace.anatomy
    s = a.rms(trace.final_resid)  # frozen: the final residual's RMS, not x's own
    y = a.gain(a.final_norm) * x / s
    w = a.lm_head.weight.detach()
    if _split(w):
        flat = y.reshape(1, -1, y.shape[-1])
        return _products(split_float32(flat), w.T[None], True)[0].view(*y.shape[:-1], w.shape[0])
    return y @ a.unembed().T


def capped(trace: Trace, z: torch.Tensor) -> torch.Tensor:
    """Logits as the model outputs them from readout logits `z`: soft-capped where the model's pass capped them
    (Gemma's final_logit_softcapping, which Gemma3ForCausalLM applies and, in transformers 5, the multimodal
    Gemma3ForConditionalGeneration does not), else `z` itself."""
    cap = trace.soft_cap
    return z if cap is None else cap * torch.tanh(z / cap)


def log_prob_increase(trace: Trace, base: torch.Tensor, vectors: torch.Tensor, token: int | None = None) -> torch.Tensor:
    """Imp of each vector in `vectors` [..., d] added to `base` [..., d] (broadcast against each other): [...]."""
    token = _token(trace, token)
    z0, dz = readout(trace, base), readout(trace, vectors)
    if trace.soft_cap is not None:   # the cap is not linear: the change in the capped logits
        z0, dz = capped(trace, z0), capped(trace, z0 + dz) - capped(trace, z0)
    return (dz[..., token] - _log_partition_increase(z0, dz)).cpu()


def _log_partition_increase(z0: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """logsumexp(z0 + dz) - logsumexp(z0) over the vocabulary, so that Imp = dz_w minus this, exactly. For a small
    dz, as log1p(sum_i p0_i expm1(dz_i)): the two log-sums of order 10 would cancel to a difference of order 1e-6
    and keep only float32's rounding of them; for a large dz, the log-sums themselves (no cancellation then), for
    those rows only (few: on a CPU each pass over hundreds of vocabulary-long rows is most of a map's time)."""
    shape = torch.broadcast_shapes(z0.shape, dz.shape)
    out = torch.log1p((torch.softmax(z0, -1) * torch.expm1(dz)).sum(-1)).expand(shape[:-1]).clone()
    low, high = torch.aminmax(dz, dim=-1)
    large = (torch.maximum(-low, high) >= 1).expand(shape[:-1])
    if large.any():
        z0, dz = z0.expand(shape)[large], dz.expand(shape)[large]
        out[large] = torch.logsumexp(z0 + dz, -1) - torch.logsumexp(z0, -1)
    return out


def logit_contribution(trace: Trace, vectors: torch.Tensor, token: int | None = None) -> torch.Tensor:
    """The linear (direct) logit contribution z(v)_w of each vector: [..., d] -> [...]. Additive, unlike Imp (and
    before any soft-cap, which is not)."""
    token = _token(trace, token)
    return readout(trace, vectors)[..., token].cpu()


def _token(trace: Trace, token) -> int:
    """The scored token: the model's own answer by default; an id past the vocabulary would index out of range."""
    return trace.top_token if token is None else validate.token("token", token, trace.logits.shape[-1])


def _full(trace: Trace, what: str) -> None:
    """One clear error for a readout of what a lean trace (explain's) does not hold."""
    if trace.lean:
        raise LlavamechError(f"{what} needs a full trace: this one is explain's, which keeps only what head scores "
                             "and patch maps read; take one with model.trace(image, question)")


def _layer(trace: Trace, layer) -> int:
    return validate.layer("layer", layer, trace.anatomy.n_layers)


# ---- decompositions (appendix A) ----
def out_scale(trace: Trace, layer: int, part: str) -> torch.Tensor | None:
    """The frozen output norm of a layer's `part` ("attn" or "ffn") as a linear map: (1 + g) / rms(raw output at
    T), [d]; None where the output joins the residual stream as it is (no sandwich norm)."""
    a = trace.anatomy
    norm = a.attn_out_norm(layer) if part == "attn" else a.ffn_out_norm(layer)
    if norm is None:
        return None
    raw = (trace.attn_raw if part == "attn" else trace.mlp_raw)[layer]
    return a.gain(norm) / a.rms(raw)


def _scaled(trace: Trace, layer: int, part: str, x: torch.Tensor) -> torch.Tensor:
    scale = out_scale(trace, layer, part)
    return x if scale is None else x * scale


def head_outputs(trace: Trace, layer: int) -> torch.Tensor:
    """a^{l,h} = (sum_j alpha_{T,j} v_j) W_O^{l,h} for every head (times the frozen output norm where there is one):
    [H, d]. Sums to A^l_T."""
    layer = _layer(trace, layer)
    return _head_outputs(trace, range(layer, layer + 1))[0]


def position_contributions(trace: Trace, layer: int, head: int | None = None,
                           positions: torch.Tensor | None = None) -> torch.Tensor:
    """u^{l,h}_j = alpha_{T,j} v_j W_O^{l,h}: [S, d] for one head, or [H, S, d] for all heads (head=None); only at
    `positions` ([k] sequence indices; S becomes k) when given."""
    a = trace.anatomy
    layer = _layer(trace, layer)
    heads = list(range(a.n_heads)) if head is None else \
        [validate.whole("head", head, 0, a.n_heads - 1, f" ({a.n_heads} heads per layer, counted from 0)")]
    positions = None if positions is None else torch.as_tensor(positions, dtype=torch.long)
    where = slice(None) if positions is None else positions
    if positions is not None and len(positions) and not (0 <= int(positions.min()) and int(positions.max()) < trace.seq_len):
        raise LlavamechError(f"positions must be sequence indices from 0 to {trace.seq_len - 1}")
    v = trace.values[layer][where][:, [a.kv_head(h) for h in heads]]             # [S, h, hd]
    weighted = trace.attn_weights[layer][heads][:, where].T[..., None] * v    # [S, h, hd]
    u = _scaled(trace, layer, "attn", through_o(a, layer, weighted.transpose(0, 1), heads))   # [h, S, d]
    return u[0] if head is not None else u


def neuron_contributions(trace: Trace, layer: int) -> torch.Tensor:
    """c^l_k W_down[:, k] for every FFN neuron k (times the frozen output norm where there is one): [I, d]. Sums to
    F^l_T."""
    _full(trace, "neuron contributions")
    layer = _layer(trace, layer)
    w_down = trace.anatomy.weight(trace.anatomy.layers[layer].mlp.down_proj.weight)  # [d, I]
    return _scaled(trace, layer, "ffn", trace.neuron_acts[layer][:, None] * w_down.T)


# ---- scores ----
def layer_scores(trace: Trace, token: int | None = None) -> dict[str, torch.Tensor]:
    """Imp of every attention layer (base h^{l-1}_T, v = A^l_T) and FFN layer (base m^l_T, v = F^l_T): [L] each."""
    _full(trace, "layer scores")
    return {"attn": log_prob_increase(trace, trace.resid_in, trace.attn_out, token),
            "ffn": log_prob_increase(trace, trace.mid, trace.mlp_out, token)}


def layer_logit_contributions(trace: Trace, token: int | None = None) -> dict[str, torch.Tensor]:
    """Linear logit contribution z(v)_w of every attention layer (v = A^l_T) and FFN layer (v = F^l_T): [L] each.
    The additive companion of `layer_scores` (no base, no saturation)."""
    _full(trace, "layer logit contributions")
    return {"attn": logit_contribution(trace, trace.attn_out, token),
            "ffn": logit_contribution(trace, trace.mlp_out, token)}


def all_head_outputs(trace: Trace) -> torch.Tensor:
    """a^{l,h} for every layer and head: [L, H, d]."""
    return _head_outputs(trace, range(trace.anatomy.n_layers))


def _head_outputs(trace: Trace, layers: range) -> torch.Tensor:
    """a^{l,h} for the heads of consecutive `layers`: [len(layers), H, d]. The mixed values of every layer at once
    (split into bfloat16 terms at once, where `_split` says), then each layer's heads in one batched product with its
    W_O as it is (`_products`, as `through_o` for one layer; for llava-1.5-7b in bfloat16, a float32 copy of W_O and
    per-head products as big as W_O took a GPU 4.5 ms per explain)."""
    a = trace.anatomy
    n, group = len(layers), a.n_heads // a.n_kv_heads
    # query head h reads kv head h // group
    weights = trace.attn_weights[layers.start:layers.stop].view(n, a.n_kv_heads, group, -1)
    values = trace.values[layers.start:layers.stop]
    mixed = torch.einsum("lkgs,lskd->lkgd", weights, values).reshape(n, a.n_heads, 1, a.head_dim)
    w_o = [a.o_heads(l) for l in layers]
    split = [_split(w) for w in w_o]   # per layer: a device map may put some layers on the CPU
    terms = split_float32(mixed) if any(split) else None   # for every layer at once: on a GPU each operation counts
    products = [_products((terms if s else mixed)[i].to(w.device), w, s) for i, (w, s) in enumerate(zip(w_o, split))]
    out = stacked_on(a.readout_device, products)[:, :, 0]
    if a.attn_out_norm(0) is not None:
        out = out * torch.stack([out_scale(trace, l, "attn") for l in layers])[:, None]
    return out


def through_o(a, layer: int, x: torch.Tensor, heads: list[int] | None = None) -> torch.Tensor:
    """x_h @ W_O^{l,h} for each head h of `layer`: x [h, m, head_dim] in float32 (h = every head, or the listed
    `heads`) -> [h, m, d] in float32 on the readout device, W_O read as it is (`Anatomy.o_heads`, `_products`)."""
    w = a.o_heads(layer)
    w = w if heads is None else w[heads]
    split = _split(w)
    x = x.to(w.device)
    return _products(split_float32(x) if split else x, w, split).to(a.readout_device)


# PyTorch multiplies bfloat16 matrices into float32 on NVIDIA GPUs from 2.8 on (decided once: comparing the version
# string takes 20 us, and `_split` runs once per layer per explain)
_BFLOAT16_INTO_FLOAT32 = torch.__version__ >= (2, 8) and torch.version.hip is None


def _split(w: torch.Tensor) -> bool:
    """Whether products with `w` take the float32 factor split into bfloat16 terms (`_products`): for a bfloat16 `w` on
    an NVIDIA GPU that multiplies bfloat16 matrices into float32 (PyTorch 2.8 on, compute capability 8.0 on: not a
    T4 or V100). float16 is left out: its exponents stop at 6e-8, so the small terms of small values would be lost;
    a float16 W, as any other outside this case, is converted to float32 for the product."""
    return (w.dtype == torch.bfloat16 and w.device.type == "cuda" and _BFLOAT16_INTO_FLOAT32
            and _capability_8(w.device))


@functools.cache
def _capability_8(device: torch.device) -> bool:
    """Whether the GPU has compute capability 8.0 or more (asked once per device)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def split_float32(x: torch.Tensor) -> torch.Tensor:
    """float32 `x` [..., m, k] as three bfloat16 terms that sum to it, stacked along m: [..., 3m, k]. Each term holds
    what the ones before it left over, so three terms of 8 significant bits carry all of float32's 24 (bfloat16 has
    float32's exponents: nothing a float32 holds overflows or underflows)."""
    terms, rest = [], x
    for _ in range(3):
        terms.append(rest.to(torch.bfloat16))
        rest = rest - terms[-1].float()
    return torch.cat(terms, -2)


def _products(x: torch.Tensor, w: torch.Tensor, split: bool) -> torch.Tensor:
    """x @ w in float32, [B, m, k] @ [B, k, n] -> [B, m, n], for a float32 `x` and a `w` in the model's dtype, without
    a float32 copy of `w` where none is needed: a float32 `w` multiplies `x` as it is (at PyTorch's float32 matmul
    precision: IEEE unless the user has allowed TF32); with `split`, `x` comes as `split_float32`'s three terms,
    multiplied with products accumulated in float32 on the GPU (`torch.bmm`'s out_dtype) and summed, which gives
    float32's product to its rounding; otherwise `w` is converted. A large product (a readout over the vocabulary)
    takes its three terms one at a time into one buffer, so that it holds two float32 outputs at most, not four."""
    if w.dtype == torch.float32:
        return torch.bmm(x, w)
    if not split:
        return torch.bmm(x, w.float())
    m = x.shape[1] // 3
    if m * w.shape[-1] <= 2 ** 20:   # small (a layer's head outputs): one product, as on a GPU each launch counts
        out = torch.bmm(x, w, out_dtype=torch.float32)
        return out.view(len(out), 3, m, out.shape[-1]).sum(1)
    out = torch.bmm(x[:, :m], w, out_dtype=torch.float32)
    for i in (1, 2):
        out += torch.bmm(x[:, i * m:(i + 1) * m], w, out_dtype=torch.float32)
    return out


def head_scores(trace: Trace, token: int | None = None) -> torch.Tensor:
    """Imp of every head (base h^{l-1}_T, v = a^{l,h}): [L, H]. One batched readout ([L, H, V] logits)."""
    return log_prob_increase(trace, trace.resid_in[:, None], all_head_outputs(trace), token)


def head_logit_contributions(trace: Trace, token: int | None = None) -> torch.Tensor:
    """Linear logit contribution of every head: [L, H]."""
    return logit_contribution(trace, all_head_outputs(trace), token)


def position_scores(trace: Trace, layer: int, head: int, token: int | None = None,
                    positions: torch.Tensor | None = None) -> torch.Tensor:
    """Imp of every source position j inside head (layer, head) (base h^{l-1}_T, v = u_j): [S], or [k] at
    `positions` only (the map reads the image's)."""
    layer = _layer(trace, layer)
    return log_prob_increase(trace, trace.resid_in[layer], position_contributions(trace, layer, head, positions),
                             token)


def neuron_scores(trace: Trace, layer: int, token: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Imp of every FFN neuron of a layer (base m^l_T): [I]. Chunked: 7B has 11008 neurons x 32k logits."""
    chunk = validate.whole("chunk", chunk, 1)
    c = neuron_contributions(trace, layer)
    return torch.cat([log_prob_increase(trace, trace.mid[layer], c[i:i + chunk], token) for i in range(0, len(c), chunk)])


def top_heads(scores: torch.Tensor, k: int = 10) -> list[dict]:
    """The k best heads of a [L, H] score table as [{layer, head, score}], best first (ties in layer, head order);
    all of them, ranked, when the model has fewer than k."""
    validate.whole("k", k, 1)
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise LlavamechError(f"top_heads ranks a [layers, heads] score table, got shape {tuple(scores.shape)}")
    flat = scores.flatten()
    idx = flat.argsort(descending=True, stable=True)[:k]
    n_heads = scores.shape[1]
    return [{"layer": int(i) // n_heads, "head": int(i) % n_heads, "score": float(flat[i])} for i in idx]
