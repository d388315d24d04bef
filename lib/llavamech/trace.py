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
    """What each sequence position is: a text token, or an image token at (tile, row, col).

    `image_positions` and `grid_shape` are the patch grid that maps are drawn on: for llava-1.5 the one square grid;
    for LLaVA-NeXT the high-resolution grid assembled from its tiles (padding removed, so not square), while its
    base image (tile 0) and the row-end newline tokens are the other image positions."""
    tokens: list[str]                 # [S] token strings (image positions say '<image>')
    image_positions: torch.Tensor     # [P] sequence indices of the map's patches, in row-major grid order
    grid_shape: tuple[int, int]       # (rows, cols); (0, 0) without an image
    image_tokens: torch.Tensor | None = None   # [N, 4] every image token: (position, tile, row, col); -1 = newline

    @classmethod
    def of(cls, input_ids: torch.Tensor, tokenizer, image_token_id: int | None,
           layout: torch.Tensor | None = None) -> "Positions":
        """`layout` ([N, 3]: tile, row and col of each image token in sequence order, -1 for a newline; tiles after
        the first are numbered row-major and each row/col is within the assembled grid) comes from `image_layout`."""
        ids = input_ids.reshape(-1)
        image = (ids == image_token_id).nonzero().reshape(-1).cpu() if image_token_id is not None else ids[:0].cpu()
        tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
        if layout is None:
            side = int(round(len(image) ** 0.5))
            if side * side != len(image):
                raise ValueError(f"{len(image)} image positions do not form a square patch grid")
            layout = torch.cat([torch.zeros(len(image), 1, dtype=torch.long), grid_coords(side)], 1)
            return cls(tokens, image, (side, side), torch.cat([image[:, None], layout], 1))
        if len(layout) != len(image):
            raise ValueError(f"{len(image)} image tokens but a layout of {len(layout)}")
        hires = layout[:, 0] >= 1 if (layout[:, 0] >= 1).any() else layout[:, 0] == 0
        rows, cols = layout[hires, 1], layout[hires, 2]
        shape = (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))
        if shape[0] * shape[1] != int(hires.sum()):
            raise ValueError("the image tokens of the high-resolution grid do not fill a rectangle")
        return cls(tokens, image[hires], shape, torch.cat([image[:, None], layout], 1))

    def row_col(self, position: int) -> tuple[int, int] | None:
        """(row, col) in the map's grid of a sequence position that is one of its patches, else None."""
        hit = (self.image_positions == position).nonzero()
        if len(hit) == 0:
            return None
        return divmod(int(hit[0, 0]), self.grid_shape[1])

    def tile_row_col(self, position: int) -> tuple[int, int, int] | None:
        """(tile, row, col) of any image token (tile 0 is LLaVA-NeXT's base image; (-1, -1, -1) a newline)."""
        hit = (self.image_tokens[:, 0] == position).nonzero() if self.image_tokens is not None else []
        return None if len(hit) == 0 else tuple(int(v) for v in self.image_tokens[hit[0, 0], 1:])

    def label(self, position: int) -> str:
        rc = self.row_col(position)
        if rc:
            return f"patch {rc[0]},{rc[1]}"
        trc = self.tile_row_col(position)
        if trc:
            return "image newline" if trc[0] < 0 else f"tile {trc[0]} patch {trc[1]},{trc[2]}"
        return repr(self.tokens[position])


def grid_coords(side: int) -> torch.Tensor:
    """(row, col) of every patch of a side × side grid, in row-major order: [side², 2]."""
    return torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).reshape(2, -1).T


def image_layout(model: torch.nn.Module, image_sizes: torch.Tensor) -> torch.Tensor:
    """LLaVA-NeXT: the (tile, row, col) of every image token, read from the model's own packing code (tiles ->
    one grid -> padding removed -> a newline per row -> after the base image) run on coordinates instead of
    features, so the map follows whatever layout the model uses. [N, 3]; a newline is (-1, -1, -1)."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size
    tiles_h, tiles_w = get_anyres_image_grid_shape(image_sizes[0].tolist(), model.config.image_grid_pinpoints,
                                                   vision.image_size)
    rc = grid_coords(side)
    coords = [torch.cat([torch.zeros(side * side, 1), rc], 1)]       # the base image: tile 0
    for t in range(tiles_h * tiles_w):                               # tile t+1 at (t // tiles_w, t % tiles_w)
        ti, tj = divmod(t, tiles_w)
        coords.append(torch.cat([torch.full((side * side, 1), t + 1.0), rc + torch.tensor([ti * side, tj * side])], 1))
    packed, _ = model.model.pack_image_features([torch.stack(coords).float()], image_sizes.cpu(), "default",
                                                image_newline=torch.full((3,), -1.0))
    return packed[0].round().long()


def positions_of(model: torch.nn.Module, inputs: dict, tokenizer) -> Positions:
    """The Positions of one example's model inputs (LLaVA-NeXT's tile layout included)."""
    layout = image_layout(model, inputs["image_sizes"]) if "image_sizes" in inputs else None
    return Positions.of(inputs["input_ids"][0].cpu(), tokenizer, getattr(model.config, "image_token_id", None), layout)


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

    device = anatomy.readout_device   # readouts in float32 on one device, even when the model spans several

    def kept(x):
        return x.detach().to(device, torch.float32)

    def keep(name, x):
        store[name].append(kept(x[0] if all_positions or name == "values" else x[0, -1]))

    def attention(module, args, output):
        keep("attn", output[0])
        weights = output[1]  # None unless attention is eager
        store["weights"].append(None if weights is None else kept(weights[0, :, -1]))

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
                    lambda m, a: store["acts"].append(kept(a[0][0, -1]))),
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
    return Trace(anatomy=anatomy, positions=positions_of(model, inputs, tokenizer), input_ids=ids,
                 logits=kept(out.logits[0, -1]), resid_in=resid, attn_out=attn, mid=mid, mlp_out=mlp,
                 final_resid=final, attn_weights=stack("weights"), values=values, neuron_acts=stack("acts"),
                 **extra)
