"""Vision-language families beyond Llava: what differs per family, kept here so that anatomy, trace and models stay
generic. A family says which Hugging Face class it is, which processor outputs its forward needs, how its prompt is
built (its chat template), and where each image token sits on the image, read from the model's own code.

Qwen2-VL and Qwen2.5-VL (dynamic resolution): the processor resizes the whole image (no crop) to a multiple of
patch_size × merge_size on each side, with its pixel count within [min_pixels, max_pixels]; each 2 × 2 block of
patches becomes one image token, so an image gives (H/28)·(W/28) tokens on a grid that follows its aspect ratio.
The language model places each image token with 3-D rotary positions (time, row, column): the model's own
`get_rope_index` is run on the prompt, and its row and column are the token's place on the grid. Token (r, c) covers
the original image's rectangle [c·w/cols, (c+1)·w/cols) × [r·h/rows, (r+1)·h/rows) (`imaging.patch_boxes`).

Gemma 3: the whole image is resized (squashed, no crop) to the SigLIP tower's square input; its patch features are
average-pooled to a fixed side × side grid (mm_tokens_per_image), one token per pooled cell, placed in the order the
projector flattens them (`_pooled_layout` runs the projector's own pooling on coordinates). The language model
differs in ways the decomposition must follow (llavamech.anatomy and attribution): embeddings scaled by √d,
RMSNorm gains 1 + g, q/k norms, norms on the attention and FFN outputs before they join the residual stream,
sliding-window layers, attention among image tokens both ways, and an optional final logit soft-cap.

LLaVA-OneVision: LLaVA-NeXT's any-resolution tiles (more of them) over Qwen2, whose unpadded high-resolution grid is
pooled bilinearly to at most anyres_max_N tiles' worth of tokens; the layout comes from the model's own packing run on
coordinates, as LLaVA-NeXT's does (llavamech.trace.image_layout).

Idefics3: the image resized so that its sides are multiples of the tower's input, split into tiles of that size
(row by row) plus the whole image squashed to one (the "global" image, last); each tile's patches pixel-shuffled
scale_factor × scale_factor into one token; each tile's tokens announced by a text token, <row_i_col_j> or
<global-img>. The layout reads the announcing tokens and runs the connector's own pixel shuffle on coordinates.
SmolVLM is Idefics3's architecture under classes of its own (over a smaller Llama), with the same layout; its
processor needs the num2words package.

InternVL (InternVL2.5, 3 and 3.5 converted to transformers' classes, over Qwen2, Qwen3 or InternLM2 read as Llama):
the image squashed to a grid of cols × rows tiles of the tower's input (448 px), the grid whose aspect ratio is
closest to the image's among those of min_patches to max_patches tiles (GotOcr2's crop_to_patches), split row by row,
then the whole image squashed to one more tile (the thumbnail, last; none when the grid is one tile). Each tile's
patches are pixel-shuffled 1/downsample_ratio × 1/downsample_ratio into one token (32 × 32 patches of 14 -> 256
tokens), and all the tiles' tokens stand in one block, <img> <IMG_CONTEXT> × (256 · tiles) </img>, in the order the
processor emits the tiles. Nothing in the processor's output says the grid: the image's size is added to the inputs
(as LLaVA-NeXT's processor gives it, `Family.sized`) and the grid found again by the processor's own choice among the
grids of that many tiles; within a tile, the model's own pixel shuffle is run on coordinates.

Mistral 3 (Mistral Small 3.1 and 3.2, Magistral Small, Ministral 3: Mistral3ForConditionalGeneration, over Mistral or
Ministral 3): Pixtral's processing resizes the whole image (no crop), downscaled to fit longest_edge with its aspect
ratio kept, then each side rounded up to a multiple of patch_size × spatial_merge_size (28 px); the Pixtral tower reads
its patches of 14 at that size and the projector's patch merger joins each 2 × 2 block into one token, so a
rows × cols grid follows the image. The processor writes the tokens row by row, [IMG] × cols then [IMG_BREAK], the
last break replaced by [IMG_END]: breaks and the end are text tokens (embedded as such; only [IMG] positions receive
image features), so the image positions are the [IMG] tokens alone. The image's resized size is among the
processor's outputs (image_sizes, which the model's forward takes); the layout runs the patch merger's own grouping on
coordinates.

GLM-4.1V (Glm4vForConditionalGeneration, over GLM-4's language model; GLM-4.5V is its mixture-of-experts sibling,
Glm4vMoeForConditionalGeneration, not read): Qwen2-VL's processing and placement. The whole image is resized (no crop)
to multiples of patch_size × merge_size (28 px) a side, its pixel count — counted over the temporal_patch_size frames
an image is repeated to — within [shortest_edge, longest_edge] (GLM's smart_resize, which also scales up an image
with a side under 28 px); the processor writes the patches 2 × 2 block by block, the tower's strided convolution
merges each block into one token, and the tokens stand row by row between <|begin_of_image|> and <|end_of_image|>.
The language model places them with 3-D rotary positions from the model's own `get_rope_index` (Qwen2-VL's signature
and inputs), whose row and column are the token's place on the grid (`_rope_layout`).
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import transformers
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape
from transformers.utils import cached_file

from .errors import LlavamechError
from .hooks import hooked


@dataclass(frozen=True)
class Family:
    model_type: str            # config.model_type
    class_name: str            # the transformers class that loads it
    processor_name: str | None  # its processor class; None for a language model alone
    text_types: tuple          # the model types its text_config may have
    input_keys: tuple          # processor outputs its forward takes besides input_ids, attention_mask, pixel_values
    layout: Callable | None    # (model, inputs, tokenizer) -> [N, 3] (tile, row, col) of each image token, in order
    resized: bool = False      # the image resized to a size that follows it (dynamic resolution): bounded tokens
    norm_gain_offset: float = 0.0   # RMSNorm scales by offset + g (Gemma: 1 + g)
    sized: bool = False        # the layout needs the image's size, which the processor does not give: image_sizes

    @property
    def model_class(self):
        return getattr(transformers, self.class_name)


def of(model: torch.nn.Module) -> Family | None:
    """The family of a Hugging Face model, or None for the Llava classes and language models alone."""
    return FAMILIES.get(getattr(model.config, "model_type", None))


# ---- where the image tokens are ----
def _rope_layout(model: torch.nn.Module, inputs: dict, tokenizer=None) -> torch.Tensor:
    """Qwen-VL, GLM-4.1V: the (tile, row, col) of every image token from the 3-D rotary positions the model assigns
    (`get_rope_index`): their height and width components, less their first value (one image: tile 0)."""
    ids = inputs["input_ids"]
    positions, _ = model.model.get_rope_index(ids, inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
                                              attention_mask=inputs.get("attention_mask"))
    image = ids[0] == model.config.image_token_id
    rows, cols = positions[1, 0, image].cpu(), positions[2, 0, image].cpu()
    return torch.stack([torch.zeros_like(rows), rows - rows.min(), cols - cols.min()], 1)


def _pooled_layout(model: torch.nn.Module, inputs: dict, tokenizer=None) -> torch.Tensor:
    """Gemma 3: the projector's own pooling and flattening run on the patch grid's coordinates (instead of features):
    each image token gets the mean (row, col) of the patches pooled into it, divided by the pooling kernel."""
    projector = model.model.multi_modal_projector
    side = projector.patches_per_image
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).float()[None]
    pooled = projector.avg_pool(grid.to(projector.mm_input_projection_weight.device)).flatten(2)[0].T.cpu()
    cells = (pooled - (projector.kernel_size - 1) / 2) / projector.kernel_size     # centre of a cell -> its index
    n = int((inputs["input_ids"][0] == model.config.image_token_id).sum())
    if n != len(cells):
        raise ValueError(f"{n} image tokens but the projector pools {len(cells)}")
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), cells.round().long()], 1)


def _packed_layout(model: torch.nn.Module, inputs: dict, tokenizer=None) -> torch.Tensor:
    """LLaVA-OneVision: the model's own packing (tiles -> one grid -> padding removed -> pooled to at most
    anyres_max_N tiles' worth -> a newline per row -> after the base image) run on coordinates instead of features.
    The base image's tokens keep their (tile 0, row, col); the pooled grid's tokens are numbered by where packing
    put them (tile 1, row r between the r-th and (r+1)-th newlines, col c within the row): a pooled token blends
    neighbouring patches, so its own coordinates are fractional. [N, 3]; a newline is (-1, -1, -1)."""
    vision, sizes = model.config.vision_config, inputs["image_sizes"]
    side = vision.image_size // vision.patch_size
    tiles_h, tiles_w = get_anyres_image_grid_shape(sizes[0].tolist(), model.config.image_grid_pinpoints,
                                                   vision.image_size)
    rc = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).reshape(2, -1).T
    coords = [torch.cat([torch.full((side * side, 1), float(t)), rc], 1) for t in range(tiles_h * tiles_w + 1)]
    packed, _ = model.model.pack_image_features([torch.stack(coords)], sizes.cpu(),
                                                image_newline=torch.full((3,), -1.0),
                                                vision_aspect_ratio=model.config.vision_aspect_ratio)
    packed = packed[0]
    layout = torch.full((len(packed), 3), -1, dtype=torch.long)
    layout[:side * side] = packed[:side * side].round().long()              # the base image, exact
    row = col = 0
    for i in range(side * side, len(packed)):
        if (packed[i] == -1).all():
            row, col = row + 1, 0
        else:
            layout[i] = torch.tensor([1, row, col])
            col += 1
    return layout


TILE_TAG = re.compile(r"<row_(\d+)_col_(\d+)>")


def _announced_layout(model: torch.nn.Module, inputs: dict, tokenizer) -> torch.Tensor:
    """Idefics3: each block of image tokens is announced by the text token before it, <row_i_col_j> for the tile in
    row i and column j of the split image, <global-img> for the whole image (tile 0). Within a block, the order is
    the connector's own pixel shuffle run on the patch grid's coordinates: each token gets the block of
    scale_factor × scale_factor patches shuffled into it. Tile (i, j)'s tokens are placed at rows (i-1)·t + r and
    columns (j-1)·t + c of the assembled grid (t tokens a side per tile), the tile numbered from 1 row-major."""
    ids, connector, image_id = inputs["input_ids"][0].cpu(), model.model.connector, model.config.image_token_id
    vision = model.config.vision_config
    side, scale = vision.image_size // vision.patch_size, connector.scale_factor
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(1, -1, 2)
    shuffled = connector.pixel_shuffle(grid.float(), scale)[0].reshape(-1, scale * scale, 2)   # [tokens, s², (r, c)]
    within, t = (shuffled.amin(1) // scale).long(), side // scale                # (r, c) of each token in its tile
    starts = [p for p in range(len(ids)) if ids[p] == image_id and (p == 0 or ids[p - 1] != image_id)]
    tags = [TILE_TAG.fullmatch(tokenizer.convert_ids_to_tokens(int(ids[p - 1]))) if p else None for p in starts]
    cols = max([int(tag.group(2)) for tag in tags if tag] or [0])
    blocks = []
    for tag in tags:
        if tag is None:   # <global-img>: the whole image, tile 0
            blocks.append(torch.cat([torch.zeros(len(within), 1, dtype=torch.long), within], 1))
            continue
        i, j = int(tag.group(1)) - 1, int(tag.group(2)) - 1
        tile = torch.full((len(within), 1), 1 + i * cols + j)
        blocks.append(torch.cat([tile, within + torch.tensor([i * t, j * t])], 1))
    return torch.cat(blocks)


def _tiled_layout(model: torch.nn.Module, inputs: dict, tokenizer=None) -> torch.Tensor:
    """InternVL: n tiles in the processor's order, the cols × rows grid (row by row) and then the thumbnail, or one
    tile alone (the whole image, tile 0). The grid is the one the processor's own `get_optimal_tiled_canvas` picks for
    the image's size among the grids of n - 1 tiles: it picked the grid among those of min_patches to max_patches
    tiles, and the best of a larger set is the best of the part of it that holds it. Within a tile, the order is
    the model's own pixel shuffle run on the patch grid's coordinates, as `_announced_layout`. Grid tile (i, j) is
    tile 1 + i·cols + j, its tokens at rows i·t + r and columns j·t + c of the assembled grid; the thumbnail tile 0."""
    vision, ratio = model.config.vision_config, model.config.downsample_ratio
    (height, width), (patch, _) = vision.image_size, vision.patch_size
    side, scale = height // patch, round(1 / ratio)
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)[None].float()
    shuffled = model.model.pixel_shuffle(grid, ratio).reshape(-1, scale * scale, 2)   # [tokens, s², (r, c)]
    within, t = (shuffled.amin(1) // scale).long(), side // scale                # (r, c) of each token in its tile
    n = len(inputs["pixel_values"])
    whole = torch.cat([torch.zeros(len(within), 1, dtype=torch.long), within], 1)
    if n == 1:
        return whole
    cols, rows = get_optimal_tiled_canvas(tuple(inputs["image_sizes"][0].tolist()), (height, width), n - 1, n - 1)
    if cols * rows != n - 1:
        raise ValueError(f"{n} tiles, but no grid of {n - 1} tiles and a thumbnail for this image")
    blocks = [torch.cat([torch.full((len(within), 1), 1 + k), within + torch.tensor([k // cols * t, k % cols * t])], 1)
              for k in range(n - 1)]
    return torch.cat(blocks + [whole])


class _Merged(Exception):
    """Raised by `_merged_layout`'s hook once the patch merger has grouped the coordinates, before its linear layer
    (which takes features, not coordinates)."""


def _merged_layout(model: torch.nn.Module, inputs: dict, tokenizer=None) -> torch.Tensor:
    """Mistral 3: the patch merger's own grouping (the image's patch grid cut into spatial_merge_size² blocks by
    `unfold`, blocks in the order the model places them) run on the patch grid's coordinates and read off at the
    input of its merging layer: each token gets the block of patches merged into it, its (row, col) that block's
    top-left patch divided by the merge size. One image: tile 0. [IMG_BREAK] and [IMG_END] are not image tokens."""
    merger = model.model.multi_modal_projector.patch_merger
    size, scale = inputs["image_sizes"][:1].cpu(), merger.spatial_merge_size
    rows, cols = (int(side) // merger.patch_size for side in size[0])
    grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    seen = {}

    def grouped(module, args):
        seen["blocks"] = args[0]
        raise _Merged

    with hooked(model) as hooks:
        hooks.before(merger.merging_layer, grouped)
        try:
            merger(grid.float(), size)
        except _Merged:
            pass
    blocks = seen["blocks"].reshape(-1, 2, scale * scale)       # [tokens, (r, c), s²]: each channel's block in turn
    cells = (blocks.amin(2) // scale).long().cpu()
    return torch.cat([torch.zeros(len(cells), 1, dtype=torch.long), cells], 1)


QWEN_VL_INPUTS = ("image_grid_thw", "mm_token_type_ids")   # the grid of patches; which positions are image tokens
FAMILIES = {f.model_type: f for f in (
    Family("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", ("qwen2_vl_text",), QWEN_VL_INPUTS,
           _rope_layout, resized=True),
    Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", ("qwen2_5_vl_text",),
           QWEN_VL_INPUTS, _rope_layout, resized=True),
    Family("qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", ("qwen3_vl_text",), QWEN_VL_INPUTS,
           _rope_layout, resized=True),
    # token_type_ids: which positions are image tokens, that attend to each other both ways
    Family("gemma3", "Gemma3ForConditionalGeneration", "Gemma3Processor", ("gemma3_text",), ("token_type_ids",),
           _pooled_layout, norm_gain_offset=1.0),
    Family("gemma3_text", "Gemma3ForCausalLM", None, ("gemma3_text",), (), None, norm_gain_offset=1.0),
    Family("llava_onevision", "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", ("qwen2",), (),
           _packed_layout),
    Family("idefics3", "Idefics3ForConditionalGeneration", "Idefics3Processor", ("llama",), ("pixel_attention_mask",),
           _announced_layout),
    Family("smolvlm", "SmolVLMForConditionalGeneration", "SmolVLMProcessor", ("llama",), ("pixel_attention_mask",),
           _announced_layout),
    Family("internvl", "InternVLForConditionalGeneration", "InternVLProcessor", ("qwen2", "qwen3", "llama"), (),
           _tiled_layout, sized=True),
    Family("mistral3", "Mistral3ForConditionalGeneration", "PixtralProcessor", ("mistral", "ministral3"), (),
           _merged_layout),
    Family("glm4v", "Glm4vForConditionalGeneration", "Glm4vProcessor", ("glm4v_text",), QWEN_VL_INPUTS, _rope_layout,
           resized=True))}


def layout(model: torch.nn.Module, inputs: dict, tokenizer) -> torch.Tensor:
    """(tile, row, col) of every image token in sequence order, [N, 3], as the model's family places them."""
    return of(model).layout(model, inputs, tokenizer)


def embeddings_extras(model: torch.nn.Module, inputs: dict) -> dict:
    """What a pass on input embeddings alone must be given besides them, from the processor's outputs: Gemma 3's
    token types (its mask lets image tokens attend to each other both ways). Qwen-VL's 3-D positions are captured
    where the model computes them (hooks.language_model_call)."""
    family = of(model)
    return {"token_type_ids": inputs["token_type_ids"]} if family and "token_type_ids" in family.input_keys \
        and "token_type_ids" in inputs else {}


def check_image(model, image) -> None:
    """One line for an image the family would read in a way llavamech does not map (Gemma 3's pan-and-scan crops),
    or whose tokens alone would not fit the language model's positions (dynamic resolution)."""
    if getattr(model.processor.image_processor, "do_pan_and_scan", None):
        raise LlavamechError(f"{model.name}'s processor has pan-and-scan on (extra crops of the image), which "
                             "llavamech does not map to pixels yet; set image_processor.do_pan_and_scan = False")
    if model.family.model_type == "mistral3":
        # an image within one merged block gives one image token, which transformers' patch merger cannot split
        side = model.hf.config.vision_config.patch_size * model.hf.config.spatial_merge_size
        if image.width <= side and image.height <= side:
            raise LlavamechError(f"the {image.width} × {image.height} image is one image token for {model.name} "
                                 f"(blocks of {side} px); give an image larger than {side} px on a side")
    if not model.family.resized:
        return
    n, limit = image_token_count(model.processor, image), model.max_positions
    if limit is not None and n >= limit:
        raise LlavamechError(f"the {image.width} × {image.height} image gives {n:,} image tokens, more than the "
                             f"{limit:,} positions of {model.name}; {bound(model.processor)}")


def image_token_count(processor, image) -> int:
    """How many image tokens a dynamic-resolution processor gives `image` (before anything is tokenised)."""
    ip = processor.image_processor
    return ip.get_number_of_image_patches(image.height, image.width, {}) // ip.merge_size ** 2


def bound(processor) -> str:
    """The processor setting that bounds an image's token count, as the one-line error names it (GLM-4.1V's counts
    the pixels of the temporal_patch_size frames an image is repeated to)."""
    ip = processor.image_processor
    most = ip.size["longest_edge"]
    frames = ip.temporal_patch_size if type(ip).__name__.startswith("Glm4v") else 1
    return (f"lower the image processor's max_pixels (now {most:,} pixels, at most "
            f"{most // frames // (ip.patch_size * ip.merge_size) ** 2:,} image tokens) or downscale the image")


# ---- the prompt ----
def chat_prompt(model, text: str, image: bool, answer_prefix: str) -> str:
    """The family's own chat template (one user turn: the image, then the text), the assistant's turn opened, and
    the question's answer prefix after it (without its leading space where the turn opens on a new line, or right
    after a special token, as Mistral's answer follows its [/INST])."""
    template_owner = model.processor if model.processor is not None else model.tokenizer
    if not getattr(template_owner, "chat_template", None):
        raise LlavamechError(f"{model.name} has no chat template (chat_template.jinja in its folder); llavamech asks "
                             "its questions in the model's own chat format")
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    prompt = template_owner.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                add_generation_prompt=True)
    special = [t.content for t in model.tokenizer.added_tokens_decoder.values() if t.special]
    opened = prompt[-1:].isspace() or prompt.endswith(tuple(special))
    return prompt + (answer_prefix.lstrip() if opened else answer_prefix)


# ---- processors ----
def image_only(processor_class):
    """transformers' Qwen-VL and SmolVLM processors also take a video processor, whose base class needs torchvision;
    llavamech reads images only, so this subclass leaves the video processor out (it keeps the class's name, so a
    saved folder reads as the real processor wherever torchvision is installed). Other processors are returned as
    they are."""
    if "video_processor" not in inspect.signature(processor_class.__init__).parameters:
        return processor_class

    class ImageOnly(processor_class):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs)

        def apply_chat_template(self, conversation, chat_template=None, **kwargs):
            # the processors' own template rendering: SmolVLM's override only adds its video processor's frame
            # defaults, which it reads even for a prompt without video
            return transformers.ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    return ImageOnly


def load_processor(family: Family, source, tokenizer, model: torch.nn.Module):
    """The family's processor from a folder or Hub id: its image processor (the PIL backend: no torchvision needed),
    the saved tokenizer, the chat template saved with either, and what the processor must know of the model to count
    its image tokens (read off the model's config)."""
    images = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=True, backend="pil")
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        saved = cached_file(source, "chat_template.jinja", local_files_only=True,
                            _raise_exceptions_for_missing_entries=False)
        template = open(saved).read() if saved else None
    vision, extra = getattr(model.config, "vision_config", None), {}
    if family.model_type == "gemma3":
        extra = {"image_seq_length": model.config.mm_tokens_per_image}
    if family.model_type in ("idefics3", "smolvlm"):
        extra = {"image_seq_len": (vision.image_size // vision.patch_size) ** 2 // model.config.scale_factor ** 2}
    if family.model_type == "internvl":
        extra = {"image_seq_length": round(vision.image_size[0] // vision.patch_size[0]
                                           * model.config.downsample_ratio) ** 2}
    if family.model_type == "mistral3":   # the tower's patch and the merger's block: the size of one image token
        extra = dict(patch_size=vision.patch_size, spatial_merge_size=model.config.spatial_merge_size)
    if family.model_type == "llava_onevision":   # what its processor must know of the model to count image tokens
        extra = dict(num_image_tokens=(vision.image_size // vision.patch_size) ** 2,
                     vision_feature_select_strategy=model.config.vision_feature_select_strategy,
                     vision_aspect_ratio=model.config.vision_aspect_ratio)
    return image_only(processor_class(family.processor_name))(images, tokenizer, chat_template=template, **extra)


def processor_class(name: str):
    """transformers' processor class of that name. PixtralProcessor's module imports one function, which sizes an
    image for its token count, from the torchvision image processor's module (whose import needs torchvision); where
    torchvision is missing, the PIL image processor's module, which defines the same function, stands in for that
    module while the processor's module is imported, and the real class is returned."""
    if name != "PixtralProcessor" or importlib.util.find_spec("torchvision") is not None:
        return getattr(transformers, name)
    from transformers.models.pixtral import image_processing_pil_pixtral

    torchvision_module = "transformers.models.pixtral.image_processing_pixtral"
    sys.modules[torchvision_module] = image_processing_pil_pixtral
    try:
        from transformers.models.pixtral.processing_pixtral import PixtralProcessor
    finally:
        del sys.modules[torchvision_module]
    return PixtralProcessor
