"""One forward pass with forward hooks, capturing what every readout of the score and its
decompositions needs (the book's appendix A, book/appendix_identities.py, defines them).

Hooks sit on the language model's own modules (never a patched copy of transformers' files) and are
removed in a `finally`, so the model is unchanged afterwards. The pass runs with fused attention (SDPA), so it costs
one plain forward: the attention weights from the scored position are recomputed from the captured query at T and
the keys (after RoPE; grouped-query aware), an [H, S] row per layer instead of eager attention's [H, S, S].

Memory: at the scored position T the trace keeps O(L·d + L·H·S + L·I) numbers; the values at every
position add L·S·d_kv. For llava-1.5-7b (L=32, d=4096, H=32, I=11008, S≈600 with one image) that is
about 32·600·4096·4 B ≈ 315 MB in fp32, dominated by the values. `all_positions=True` also keeps the layer
inputs, attention outputs and FFN outputs at every position (the lens chapters need them): 3 × 315 MB more.
Until the pass ends, its hooks also hold what the modules returned at every position (each layer's input, attention
output, mid-point, FFN output, queries, keys and values, in the model's dtype), which the pass would otherwise have
freed layer by layer: for llava-1.5-7b in bfloat16 about 7 × 32 × 600 × 4096 × 2 B ≈ 1.1 GB (measured on an H200:
explain peaked at 16.5 GB, the weights being 14.1). explain's lean trace holds four of the seven (five with sandwich
norms)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

from . import families
from .anatomy import Anatomy
from .hooks import VISUAL_KWARGS, hooked, sdpa_attention


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
        order = ((rows - rows.min()) * shape[1] + cols - cols.min()).argsort()   # row-major (Idefics3: tile by tile)
        return cls(tokens, image[hires][order], shape, torch.cat([image[:, None], layout], 1))

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
    """The Positions of one example's model inputs (LLaVA-NeXT's tile layout, and the grids of the families of
    llavamech.families, included)."""
    if families.of(model) is not None and "pixel_values" in inputs:
        layout = families.layout(model, inputs, tokenizer)
    else:
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
    attn_out: torch.Tensor | None     # [L, d]    A^l_T (None in a lean trace, as mid, mlp_out and neuron_acts)
    mid: torch.Tensor | None          # [L, d]    m^l_T = h^{l-1}_T + A^l_T
    mlp_out: torch.Tensor | None      # [L, d]    F^l_T
    final_resid: torch.Tensor         # [d]       h^L_T, the input of the final norm
    attn_weights: torch.Tensor        # [L, H, S] alpha^{l,h}_{T,j}
    values: torch.Tensor              # [L, S, H_kv, head_dim] v_j (no RoPE on values)
    neuron_acts: torch.Tensor | None  # [L, I]    c^l = SiLU(W_gate x) * (W_up x)
    resid_in_all: torch.Tensor | None = None   # [L+1, S, d] layer inputs at every position (last = h^L)
    attn_out_all: torch.Tensor | None = None   # [L, S, d]
    mlp_out_all: torch.Tensor | None = None    # [L, S, d]
    # Gemma's sandwich norms: A^l and F^l are the normed outputs; these are what the norms received (o_proj's and
    # down_proj's outputs at T), whose RMS the decomposition freezes (llavamech.attribution). None without them.
    attn_raw: torch.Tensor | None = None       # [L, d]
    mlp_raw: torch.Tensor | None = None        # [L, d]
    soft_cap: float | None = None              # the final logit soft-cap the pass applied (llavamech.attribution)
    # Qwen3-VL adds visual features to the residual stream at the image positions after its first layers: with
    # all_positions, what it added after each layer, [L, S, d] (zero elsewhere), so that layer l + 1's input is
    # h^l = h^{l-1} + A^l + F^l + D^l at every position; None without such additions. At T, a text position, D^l = 0.
    visual_added_all: torch.Tensor | None = None
    # explain's trace (run_trace's `lean`): attn_out, mid, mlp_out, neuron_acts (and mlp_raw) are None
    lean: bool = False

    @property
    def top_token(self) -> int:
        return int(self.logits.argmax())

    @property
    def seq_len(self) -> int:
        return len(self.input_ids)


def run_trace(model: torch.nn.Module, anatomy: Anatomy, inputs: dict, tokenizer,
              all_positions: bool = False, lean: bool = False) -> Trace:
    """Run `model(**inputs)` (batch of one) once with hooks and return the Trace at the last position. The pass runs
    with fused attention (SDPA): the attention weights from the last position are computed from the captured query
    and keys (`scored_attention`), so no [H, S, S] weights are ever materialised.

    `lean` (explain's trace) keeps only what head scores and patch maps read: the layer inputs, queries, keys,
    values and the final residual (and, with sandwich norms, the raw attention outputs whose RMS they freeze). Its
    attention and FFN outputs, mid-points and neuron activations are None, and the readouts that need them say so.
    It registers five hooks a layer where a full trace registers eight (ten with sandwich norms; one hook takes what
    the attention receives and what it returns).

    The hooks only keep references to what the modules return; slicing, conversion to float32 and the scored
    attention happen once after the pass, batched over the layers. On a GPU the forward pass of a 7B model is bound
    by launching its kernels, so each operation a hook added in each of 32 layers cost as much as a kernel of the
    pass itself (measured: a trace that worked inside its hooks cost 2.6 plain forward passes), and each hooked
    module call costs the host the time of a kernel launch or more (PyTorch's slow path for a module with hooks).
    Nothing the hooks keep is modified in place by the pass (the identity tests of every supported class check
    that)."""
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("run_trace takes one example at a time (batch size 1)")
    if lean and all_positions:
        raise ValueError("a lean trace keeps the scored position only: all_positions needs a full one")
    store: dict[str, list] = {k: [] for k in ("resid", "attn", "mid", "mlp", "query", "keys", "values", "acts",
                                              "kwargs", "final", "attn_raw", "mlp_raw", "unembedded", "visual")}

    def keep(name):
        return lambda m, a: store[name].append(a[0])

    def keep_out(name):
        return lambda m, a, o: store[name].append(o[0] if isinstance(o, tuple) else o)

    def attention(output):   # what the attention received (its rotary angles and mask) and, unless None, its output
        def hook(m, args, kwargs, out):
            store["kwargs"].append(kwargs)
            if output:
                store[output].append(out[0] if isinstance(out, tuple) else out)
        return hook

    # the attention module's own output: with sandwich norms the raw one (what joins the stream is the normed one)
    attention_output = "attn_raw" if anatomy.sandwich else None if lean else "attn"
    with sdpa_attention(model), hooked(model) as hooks, torch.no_grad():
        for l, layer in enumerate(anatomy.layers):
            hooks.after(layer.self_attn, attention(attention_output), with_kwargs=True)
            hooks.after(layer.self_attn.q_proj, keep_out("query"))
            hooks.after(layer.self_attn.k_proj, keep_out("keys"))
            hooks.after(layer.self_attn.v_proj, keep_out("values"))
            hooks.before(layer.input_layernorm, keep("resid"))
            if lean:
                continue
            hooks.before(anatomy.pre_ffn_norm(l), keep("mid"))
            # the FFN's hidden activations at T only: [1, I] per layer, not the [1, S, I] the pass makes
            hooks.before(layer.mlp.down_proj, lambda m, a: store["acts"].append(a[0][:, -1]))
            if anatomy.sandwich:
                hooks.after(anatomy.attn_out_norm(l), keep_out("attn"))
                hooks.after(layer.mlp, keep_out("mlp_raw"))
                hooks.after(anatomy.ffn_out_norm(l), keep_out("mlp"))
            else:
                hooks.after(layer.mlp, keep_out("mlp"))
        hooks.before(anatomy.final_norm, keep("final"))
        if all_positions:
            hooks.before(anatomy.language_model, lambda m, a, k: store["visual"].append(
                {key: k.get(key) for key in VISUAL_KWARGS}), with_kwargs=True)
        if anatomy.soft_cap is not None:   # whether the class applies its config's cap shows in its own pass
            hooks.after(anatomy.lm_head, lambda m, a, o: store["unembedded"].append(o[0, -1]))
        out = model(**inputs, use_cache=False, logits_to_keep=1)

        device = anatomy.readout_device   # readouts in float32 on one device, even when the model spans several

        def kept(x):
            return x.detach().to(device, torch.float32)

        def stacked(name):   # [L, 1, S, ...] -> [L, S, ...] on the readout device
            return stacked_on(device, store.pop(name))[:, 0]

        def at_t(name):      # [L, ...] at T, float32; every position as well with all_positions
            x = stacked(name)
            return kept(x if all_positions else x[:, -1])

        resid = at_t("resid")
        final = kept(store["final"][0][0] if all_positions else store["final"][0][0, -1])
        extra = {}
        attn = mlp = mid = acts = None
        if not lean:
            attn, mlp, mid = at_t("attn"), at_t("mlp"), kept(stacked("mid")[:, -1])
            acts = kept(stacked("acts"))
        if all_positions:
            extra = dict(resid_in_all=torch.cat([resid, final[None]]), attn_out_all=attn, mlp_out_all=mlp,
                         visual_added_all=_visual_added(store["visual"][0], attn.shape, kept))
            resid, attn, mlp, final = resid[:, -1], attn[:, -1], mlp[:, -1], final[-1]
        if anatomy.sandwich:
            extra.update(attn_raw=kept(stacked("attn_raw")[:, -1]))
            if not lean:
                extra.update(mlp_raw=kept(stacked("mlp_raw")[:, -1]))
        weights = scored_attention_all(anatomy, stacked("query")[:, -1], stacked("keys"), store["kwargs"])
        values = kept(stacked("values"))
        values = values.reshape(*values.shape[:2], anatomy.n_kv_heads, anatomy.head_dim)
    if store["unembedded"] and not torch.equal(store["unembedded"][0], out.logits[0, -1]):
        extra.update(soft_cap=anatomy.soft_cap)
    return Trace(anatomy=anatomy, positions=positions_of(model, inputs, tokenizer),
                 input_ids=inputs["input_ids"][0].cpu(), logits=kept(out.logits[0, -1]), resid_in=resid, attn_out=attn,
                 mid=mid, mlp_out=mlp, final_resid=final, attn_weights=weights, values=values, neuron_acts=acts,
                 lean=lean, **extra)


def stacked_on(device: torch.device, tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack of one tensor per layer, on `device`: layers spread over devices (a device map) are moved one by one
    first, while layers on one device are stacked in one operation (on a GPU every operation per layer counts)."""
    if len({x.device for x in tensors}) > 1:
        tensors = [x.to(device) for x in tensors]
    return torch.stack(tensors).to(device)


def _visual_added(visual: dict, shape: torch.Size, kept) -> torch.Tensor | None:
    """[L, S, d]: the features the language model added at the image positions after each layer (Qwen3-VL's
    deepstack, one per early layer; the language model's own `visual_pos_masks` say where), else None."""
    if visual.get("deepstack_visual_embeds") is None:
        return None
    added = torch.zeros(shape, device=visual["deepstack_visual_embeds"][0].device)
    where = visual["visual_pos_masks"][0]
    for layer, features in enumerate(visual["deepstack_visual_embeds"]):
        added[layer, where] = features.float()
    return kept(added)


# ---- the attention weights from the scored position, whatever attention implementation runs ----
def scored_attention_all(anatomy: Anatomy, queries: torch.Tensor, keys: torch.Tensor,
                         kwargs: list[dict]) -> torch.Tensor:
    """alpha_{T,j} of every layer, [L, H, S] in float32: `queries` [L, H * head_dim] at T and `keys`
    [L, S, H_kv * head_dim] as the projections returned them, `kwargs` what each attention module received (its
    rotary angles and mask). Layers that share their class, angles, mask and scaling (all of a Llama's; Gemma 3's
    local and global layers apart) are computed in one batch."""
    groups: dict[tuple, list[int]] = {}
    for l, (layer, received) in enumerate(zip(anatomy.layers, kwargs)):
        module, mask = layer.self_attn, received.get("attention_mask")
        cos, sin = received["position_embeddings"]
        groups.setdefault((type(module), id(cos), id(sin), id(mask), module.scaling, module.head_dim), []).append(l)
    weights = [None] * len(kwargs)
    for layers in groups.values():
        index = torch.tensor(layers, device=keys.device) if len(layers) < len(kwargs) else slice(None)
        received = kwargs[layers[0]]
        alpha = scored_attention([anatomy.layers[l].self_attn for l in layers], queries[index], keys[index],
                                 received["position_embeddings"], received.get("attention_mask"))
        for l, row in zip(layers, alpha):
            weights[l] = row
    return torch.stack(weights)


def scored_attention(modules: list[torch.nn.Module], queries: torch.Tensor, keys: torch.Tensor, rotary: tuple,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """alpha_{T,j} = softmax_j(q_T . k_j * scaling + mask_{T,j}) for every head of G attention modules of one class
    that received the same rotary angles and mask, as eager attention computes its last row: queries [G, H * head_dim]
    at T and keys [G, S, H_kv * head_dim] as the projections return them (the q/k norms, where a family has them, and
    RoPE are applied here with the modules' own norms, function and angles), `mask` as the modules received it
    ([B, 1, S, S], additive floats or booleans = attend; None when fused attention needs none, which for the last
    position means every position is visible). Scores and softmax in float32: [G, H, S]."""
    module = modules[0]
    rope = sys.modules[type(module).__module__].apply_rotary_pos_emb
    head_dim, n, s = module.head_dim, len(modules), keys.shape[1]
    cos, sin = rotary
    q = queries.view(n, 1, -1, head_dim).transpose(1, 2)                # [G, H, 1, hd]
    k = keys.view(n, s, -1, head_dim).transpose(1, 2)                   # [G, H_kv, S, hd]
    if hasattr(module, "q_norm"):   # Gemma 3, Qwen3: each head's query and key RMS-normed over head_dim, before RoPE
        q = torch.stack([m.q_norm(x) for m, x in zip(modules, q)])      # (per vector: the layout does not matter;
        k = torch.stack([m.k_norm(x) for m, x in zip(modules, k)])      # each layer's own norm)
    # the rotary function turns a query and a key at once; each call here wants one, so the other is a one-head
    # stand-in that broadcasts against the angles (turning the keys twice doubled the largest operation here)
    q = rope(q, q[:1, :1], cos[:, -1:], sin[:, -1:])[0][:, :, 0].float()   # [G, H, hd]
    k = rope(k, k[:1, :1], cos, sin)[0].float()                            # [G, H_kv, S, hd]
    kv_heads = k.shape[1]
    scores = torch.einsum("nkgd,nksd->nkgs", q.view(n, kv_heads, -1, head_dim), k).reshape(n, q.shape[1], s)
    scores = scores * module.scaling
    if mask is not None:
        row = mask[0, :, -1] if mask.dim() == 4 else mask[0][None]       # [1, S]
        scores = scores + row if row.is_floating_point() else scores.masked_fill(~row.bool(), float("-inf"))
    return torch.softmax(scores, -1)
