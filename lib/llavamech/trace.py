"""One forward pass with forward hooks, capturing what every readout of shared/PAPER.md §2–3 needs.

Hooks sit on the language model's own modules (never a patched copy of transformers' files) and are
removed in a `finally`, so the model is unchanged afterwards. Attention weights need eager attention.

Memory: at the scored position T the trace keeps O(L·d + L·H·S + L·I) numbers; the values at every
position add L·S·d_kv. For llava-1.5-7b (L=32, d=4096, H=32, I=11008, S≈600 with one image) that is
about 32·600·4096·4 B ≈ 315 MB in fp32, dominated by the values. `all_positions=True` also keeps the layer
inputs, attention outputs and FFN outputs at every position (the lens chapters need them): 3 × 315 MB more.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .anatomy import Anatomy


@dataclass
class Positions:
    """What each sequence position is: a text token, or an image patch at (row, col) of the patch grid."""
    tokens: list[str]                 # [S] token strings (image positions say '<image>')
    image_positions: torch.Tensor     # [P] sequence indices of the image patches, in row-major patch order
    grid_shape: tuple[int, int]       # (rows, cols); (0, 0) without an image

    @classmethod
    def of(cls, input_ids: torch.Tensor, tokenizer, image_token_id: int | None) -> "Positions":
        ids = input_ids.reshape(-1)
        image = (ids == image_token_id).nonzero().reshape(-1) if image_token_id is not None else ids[:0]
        side = int(round(len(image) ** 0.5))
        if side * side != len(image):
            raise ValueError(f"{len(image)} image positions do not form a square patch grid")
        return cls(tokenizer.convert_ids_to_tokens(ids.tolist()), image.cpu(), (side, side))

    def row_col(self, position: int) -> tuple[int, int] | None:
        """(row, col) of a sequence position that is an image patch, else None."""
        hit = (self.image_positions == position).nonzero()
        if len(hit) == 0:
            return None
        return divmod(int(hit[0, 0]), self.grid_shape[1])

    def label(self, position: int) -> str:
        rc = self.row_col(position)
        return f"patch {rc[0]},{rc[1]}" if rc else repr(self.tokens[position])


@dataclass
class Trace:
    """Captured at the scored position T (the last prompt position) unless stated. Shapes are per example."""
    anatomy: Anatomy = field(repr=False)
    positions: Positions
    input_ids: torch.Tensor           # [S]
    logits: torch.Tensor              # [V] the model's own logits at T
    resid_in: torch.Tensor            # [L, d]    h^{l-1}_T, the input of layer l
    attn_out: torch.Tensor            # [L, d]    A^l_T
    mid: torch.Tensor                 # [L, d]    m^l_T = h^{l-1}_T + A^l_T
    mlp_out: torch.Tensor             # [L, d]    F^l_T
    final_resid: torch.Tensor         # [d]       h^L_T, the input of the final norm
    attn_weights: torch.Tensor        # [L, H, S] alpha^{l,h}_{T,j}
    values: torch.Tensor              # [L, S, H_kv, head_dim] v_j (no RoPE on values)
    neuron_acts: torch.Tensor         # [L, I]    c^l = SiLU(W_gate x) * (W_up x)
    resid_in_all: torch.Tensor | None = None   # [L+1, S, d] layer inputs at every position (last = h^L)
    attn_out_all: torch.Tensor | None = None   # [L, S, d]
    mlp_out_all: torch.Tensor | None = None    # [L, S, d]

    @property
    def top_token(self) -> int:
        return int(self.logits.argmax())

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)


def run_trace(model: torch.nn.Module, anatomy: Anatomy, inputs: dict, tokenizer,
              all_positions: bool = False) -> Trace:
    """Run `model(**inputs)` (batch of one) once with hooks and return the Trace at the last position."""
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("run_trace takes one example at a time (batch size 1)")
    store: dict[str, list] = {k: [] for k in ("resid", "attn", "weights", "mid", "mlp", "values", "acts", "final")}

    def keep(name, x):
        store[name].append(x[0].detach().float() if all_positions or name == "values" else x[0, -1].detach().float())

    def attention(module, args, output):
        keep("attn", output[0])
        weights = output[1]  # None unless attention is eager
        store["weights"].append(None if weights is None else weights[0, :, -1].detach().float())

    hooks = []
    try:
        for layer in anatomy.layers:
            hooks += [
                layer.input_layernorm.register_forward_pre_hook(lambda m, a: keep("resid", a[0])),
                layer.self_attn.register_forward_hook(attention),
                layer.self_attn.v_proj.register_forward_hook(lambda m, a, o: keep("values", o)),
                layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: keep("mid", a[0])),
                layer.mlp.register_forward_hook(lambda m, a, o: keep("mlp", o)),
                layer.mlp.down_proj.register_forward_pre_hook(
                    lambda m, a: store["acts"].append(a[0][0, -1].detach().float())),
            ]
        hooks.append(anatomy.final_norm.register_forward_pre_hook(lambda m, a: keep("final", a[0])))
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    if store["weights"][0] is None:
        raise RuntimeError("attention weights were not returned: load the model with attn_implementation='eager'")

    def stack(name):
        return torch.stack(store[name])

    resid, attn, mlp, final = stack("resid"), stack("attn"), stack("mlp"), store["final"][0]
    extra = {}
    if all_positions:
        extra = dict(resid_in_all=torch.cat([resid, final[None]]), attn_out_all=attn, mlp_out_all=mlp)
        resid, attn, mlp, final = resid[:, -1], attn[:, -1], mlp[:, -1], final[-1]
    mid = stack("mid")
    mid = mid[:, -1] if all_positions else mid
    values = stack("values")
    values = values.reshape(*values.shape[:2], anatomy.n_kv_heads, anatomy.head_dim)
    ids = inputs["input_ids"][0].cpu()
    return Trace(anatomy=anatomy, positions=Positions.of(ids, tokenizer, anatomy.image_token_id), input_ids=ids,
                 logits=out.logits[0, -1].detach().float(), resid_in=resid, attn_out=attn, mid=mid, mlp_out=mlp,
                 final_resid=final, attn_weights=stack("weights"), values=values, neuron_acts=stack("acts"),
                 **extra)
