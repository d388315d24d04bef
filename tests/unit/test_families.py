"""The families beyond Llava (llavamech.families): where each image token sits, proven from the processor's own
pixels and the model's own merged features; the prompt in the family's chat template; one line for bad input."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

import llavamech
from llavamech.errors import LlavamechError
from llavamech.imaging import box_mask, model_view, patch_boxes
from llavamech.organism.world import make_scene
from tests.conftest import tiny

Q = "What is the color of the dog?"
FAMILIES = {"qwen2-vl": ("qwen-vl", None, 0, "2"), "qwen2.5-vl": ("qwen-vl", None, 0, "2.5"),
            "qwen3-vl": ("qwen-vl", None, 0, "3"), "gemma3": ("gemma3",),
            "llava-onevision": ("llava-onevision",), "idefics3": ("idefics3",), "smolvlm": ("smolvlm",),
            "internvl": ("internvl",), "internvl-qwen3": ("internvl", None, 0, "qwen3"), "mistral3": ("mistral3",),
            "mistral3-ministral3": ("mistral3", None, 0, "ministral3"), "glm4v": ("glm4v",)}
QWEN = {k: v for k, v in FAMILIES.items() if k.startswith("qwen")}
# what a pass on input embeddings alone must be given besides them, per family
EXTRAS = {"qwen2_vl": ["position_ids"], "qwen2_5_vl": ["position_ids"], "qwen3_vl": ["position_ids"],
          "gemma3": ["token_type_ids"],
          "llava_onevision": [], "idefics3": [], "smolvlm": [], "internvl": [], "mistral3": [],
          "glm4v": ["position_ids"]}
# images: a scene of that size cut to that box (odd-sized; wide, so that a pooled grid is not square)
ODD, WIDE = (80, (0, 0, 77, 45)), (110, (0, 0, 101, 45))


@pytest.fixture(scope="module", params=list(QWEN.values()), ids=list(QWEN))
def qwen(request):
    return tiny(*request.param)


@pytest.fixture(scope="module", params=list(FAMILIES.values()), ids=list(FAMILIES))
def any_family(request):
    return tiny(*request.param)


@pytest.fixture(scope="module")
def gemma():
    return tiny("gemma3")


def cut(scene_size, box):
    return make_scene(random.Random(7), size=scene_size).image.crop(box)


@pytest.fixture(scope="module")
def odd():
    return cut(*ODD)


def test_grid_follows_the_image_and_the_rotary_positions(qwen, odd):
    """77 x 45 px -> resized to 80 x 48 (multiples of 16) -> 5 x 3 merged patches: a non-square grid whose tokens
    sit in row-major order between <|vision_start|> and <|vision_end|>."""
    inputs = qwen.inputs(odd, Q)
    t, h, w = inputs["image_grid_thw"][0].tolist()
    trace = qwen.trace(odd, Q)
    positions = trace.positions
    assert (t, h, w) == (1, 6, 10) and positions.grid_shape == (3, 5)
    start = trace.input_ids.tolist().index(qwen.tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    assert positions.image_positions.tolist() == list(range(start + 1, start + 16))
    assert trace.input_ids[start + 16] == qwen.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert [positions.row_col(start + 1 + k) for k in (0, 4, 5, 14)] == [(0, 0), (0, 4), (1, 0), (2, 4)]
    assert positions.label(start + 7) == "patch 1,1"


def test_each_token_covers_its_rectangle_of_the_processors_pixels(qwen):
    """The processor's own output, read back: an image already at a multiple of 16 px is not resized, and the four
    patches merged into token k hold exactly the pixels of the rectangle `patch_boxes` gives its (row, col)."""
    width, height = 80, 48
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 3, ys * 5, np.zeros_like(xs)], -1).astype(np.uint8)   # each pixel says where it is
    image = Image.fromarray(pixels)
    inputs = qwen.inputs(image, Q)
    ip = qwen.processor.image_processor
    patches = inputs["pixel_values"].reshape(-1, 3, 2, 8, 8)[:, :, 0]                 # [patches, C, 8, 8] (frame 0)
    mean, std = torch.tensor(ip.image_mean)[:, None, None], torch.tensor(ip.image_std)[:, None, None]
    raw = ((patches * std + mean) * 255).round()
    trace = qwen.trace(image, Q)
    boxes = patch_boxes(image.size, ip, trace.positions.grid_shape)
    for k, position in enumerate(trace.positions.image_positions.tolist()):
        row, col = trace.positions.row_col(position)
        x0, y0, x1, y1 = boxes[row, col]
        token = raw[4 * k:4 * k + 4]                                                   # its 2 x 2 merged patches
        assert token[:, 0].min() == 3 * x0 and token[:, 0].max() == 3 * (x1 - 1)
        assert token[:, 1].min() == 5 * y0 and token[:, 1].max() == 5 * (y1 - 1)


def qwen_hooks(qwen, seen):
    return [qwen.hf.model.visual.register_forward_hook(lambda m, a, o: seen.update(merged=o.pooler_output))]


def qwen_layout(qwen, trace, seen):
    """Qwen-VL: token k of the vision tower's merged output is what the model places at the k-th image position."""
    rows, cols = trace.positions.grid_shape
    for position, tile, row, col in trace.positions.image_tokens.tolist():
        torch.testing.assert_close(seen["embeds"][position], seen["merged"][row * cols + col], atol=0, rtol=0)


def gemma_hooks(gemma, seen):
    projector = gemma.hf.model.multi_modal_projector
    tower = gemma.hf.model.vision_tower
    return [tower.register_forward_hook(lambda m, a, o: seen.update(patches=o.last_hidden_state)),
            projector.avg_pool.register_forward_hook(   # the first call: not the layout's, on coordinates
                lambda m, a, o: None if "pooled" in seen else seen.update(pooled=o)),
            projector.register_forward_hook(lambda m, a, o: seen.update(tokens=o))]


def gemma_layout(gemma, trace, seen):
    """Gemma 3: the 48 px image is 6 x 6 SigLIP patches pooled 2 x 2 into 3 x 3 tokens. Token (r, c) is the mean of
    patches 2r..2r+1 x 2c..2c+1 (read off the vision tower and the projector's pooling), and the projector's k-th
    output is what the model places at the k-th image position."""
    assert trace.positions.grid_shape == (3, 3)
    patches = seen["patches"][0].reshape(6, 6, -1)
    for k, (position, tile, row, col) in enumerate(trace.positions.image_tokens.tolist()):
        cell = patches[2 * row:2 * row + 2, 2 * col:2 * col + 2].reshape(4, -1).mean(0)
        torch.testing.assert_close(seen["pooled"][0, :, row, col], cell, atol=1e-6, rtol=0)
        torch.testing.assert_close(seen["embeds"][position], seen["tokens"][0, k], atol=0, rtol=0)


def onevision_hooks(ov, seen):
    return [ov.hf.model.multi_modal_projector.register_forward_hook(lambda m, a, o: seen.update(tiles=o))]


def onevision_layout(ov, trace, seen):
    """LLaVA-OneVision (on a wide 101 x 45 px image): the base image's tokens are the projector's tile-0 outputs;
    each newline is the newline vector; and the token numbered (row r, col c) of the pooled grid is, computed here
    from the projector's tile outputs, the tiles assembled, unpadded by transformers' own `unpad_image` and pooled
    bilinearly to the grid's size, at (r, c)."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    positions, side = trace.positions, 4
    rows, cols = positions.grid_shape
    assert rows != cols and (positions.image_tokens[:, 1] == -1).sum() == rows
    tiles_h, tiles_w = get_anyres_image_grid_shape([45, 101], ov.hf.config.image_grid_pinpoints, 32)
    grid = seen["tiles"][1:].reshape(tiles_h, tiles_w, side, side, -1).permute(4, 0, 2, 1, 3)
    grid = unpad_image(grid.reshape(grid.shape[0], tiles_h * side, tiles_w * side), torch.tensor([45, 101]))
    pooled = torch.nn.functional.interpolate(grid[None], [rows, cols], mode="bilinear")[0]
    for position, tile, row, col in positions.image_tokens.tolist():
        expected = (ov.hf.model.image_newline if tile < 0 else seen["tiles"][0, row * side + col] if tile == 0
                    else pooled[:, row, col])
        torch.testing.assert_close(seen["embeds"][position], expected, atol=1e-6, rtol=0)


def idefics3_hooks(idefics, seen):
    tower = idefics.hf.model.vision_model
    return [tower.register_forward_hook(lambda m, a, o: seen.update(patches=o.last_hidden_state)),
            idefics.hf.model.connector.register_forward_hook(lambda m, a, o: seen.update(tokens=o))]


def idefics3_layout(idefics, trace, seen):
    """Idefics3: 77 x 45 px -> 96 x 56 -> 96 x 64, split into 2 x 3 tiles of 32 px (4 x 4 patches, shuffled 2 x 2
    into 4 tokens) plus the whole image. The token at (row r, col c) of tile (i, j) holds, among its four
    shuffled-in patch vectors, exactly the patches of rows 2r..2r+1 and columns 2c..2c+1 of that tile (read off the
    vision tower), and is the connector's output for the tile its <row_i_col_j> announces (the global image last).
    SmolVLM: the same."""
    positions = trace.positions
    assert positions.grid_shape == (4, 6) and len(positions.image_tokens) == 7 * 4
    patches = seen["patches"].reshape(7, 4, 4, -1)                    # [tiles + global, rows, cols, d]
    d = patches.shape[-1]
    for k, (position, tile, row, col) in enumerate(positions.image_tokens.tolist()):
        image = 6 if tile == 0 else tile - 1                            # the global image is the last one
        r, c = (row, col) if tile == 0 else (row % 2, col % 2)
        assert tile == 0 or tile - 1 == (row // 2) * 3 + col // 2
        torch.testing.assert_close(seen["embeds"][position], seen["tokens"][image, k % 4], atol=0, rtol=0)
        shuffled = idefics.hf.model.connector.pixel_shuffle(seen["patches"][image:image + 1], 2)[0, k % 4]
        cell = patches[image, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(4, d)
        chunks = shuffled.reshape(4, d)
        assert all(any(torch.equal(chunk, p) for chunk in chunks) for p in cell)
    assert positions.label(int(positions.image_positions[7])) == "patch 1,1"


def internvl_hooks(internvl, seen):
    tower = internvl.hf.model.vision_tower
    return [tower.register_forward_hook(lambda m, a, o: seen.update(patches=o.last_hidden_state[:, 1:])),  # no CLS
            internvl.hf.model.multi_modal_projector.register_forward_hook(lambda m, a, o: seen.update(tokens=o))]


def internvl_layout(internvl, trace, seen):
    """InternVL: 77 x 45 px -> a grid of 2 x 1 tiles of 32 px (its aspect ratio, 2, the closest to 1.71 among the
    grids of at most 4 tiles) plus the thumbnail, each 4 x 4 patches shuffled 2 x 2 into 4 tokens, in one block. The
    token at (row r, col c) of tile (i, j) holds, among its four shuffled-in patch vectors, exactly the patches of
    rows 2r..2r+1 and columns 2c..2c+1 of that tile (read off the vision tower), and is the projector's output for
    that tile (the thumbnail, tile 0, last)."""
    positions, model = trace.positions, internvl.hf.model
    assert positions.grid_shape == (2, 4) and len(positions.image_tokens) == 3 * 4
    patches = seen["patches"].reshape(3, 4, 4, -1)                     # [tiles + thumbnail, rows, cols, d]
    d = patches.shape[-1]
    for k, (position, tile, row, col) in enumerate(positions.image_tokens.tolist()):
        image = 2 if tile == 0 else tile - 1
        r, c = (row, col) if tile == 0 else (row % 2, col % 2)
        assert image == k // 4 and (tile == 0 or tile - 1 == col // 2)
        torch.testing.assert_close(seen["embeds"][position], seen["tokens"][image, k % 4], atol=0, rtol=0)
        chunks = model.pixel_shuffle(patches[image:image + 1], 0.5).reshape(4, 4, d)[k % 4]
        cell = patches[image, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(4, d)
        assert all(any(torch.equal(chunk, p) for chunk in chunks) for p in cell)
    assert positions.label(int(positions.image_positions[5])) == "patch 1,1"


def mistral3_hooks(mistral, seen):
    projector = mistral.hf.model.multi_modal_projector
    return [projector.norm.register_forward_hook(lambda m, a, o: seen.update(patches=o)),   # [patches, d], normed
            projector.patch_merger.merging_layer.register_forward_pre_hook(   # the first call: not the layout's
                lambda m, a: None if "blocks" in seen else seen.update(blocks=a[0])),
            projector.register_forward_hook(lambda m, a, o: seen.update(tokens=o))]


def mistral3_layout(mistral, trace, seen):
    """Mistral 3: 77 x 45 px -> downscaled to fit 64 px (64 x 37) -> 64 x 48 (multiples of 16): 6 x 8 patches of 8
    merged 2 x 2 into 3 x 4 tokens, each row ended by [IMG_BREAK], the last by [IMG_END]. The token at (row r,
    col c) holds, among its four merged patch vectors, exactly the patches of rows 2r..2r+1 and columns 2c..2c+1
    (read off the projector's norm), and is the projector's k-th output; the breaks and the end are not image
    positions."""
    positions, tokenizer = trace.positions, mistral.tokenizer
    assert positions.grid_shape == (3, 4) and len(positions.image_tokens) == 12
    patches, d = seen["patches"].reshape(6, 8, -1), seen["patches"].shape[-1]
    for k, (position, tile, row, col) in enumerate(positions.image_tokens.tolist()):
        assert tile == 0 and (row, col) == divmod(k, 4) and position == positions.image_positions[k]
        torch.testing.assert_close(seen["embeds"][position], seen["tokens"][k], atol=0, rtol=0)
        chunks = seen["blocks"][k].reshape(d, 4).T
        cell = patches[2 * row:2 * row + 2, 2 * col:2 * col + 2].reshape(4, d)
        assert all(any(torch.equal(chunk, p) for chunk in chunks) for p in cell)
    ends = [tokenizer.convert_ids_to_tokens(int(trace.input_ids[p + 1])) for p in positions.image_positions[3::4]]
    assert ends == ["[IMG_BREAK]", "[IMG_BREAK]", "[IMG_END]"]
    assert positions.label(int(positions.image_positions[5])) == "patch 1,1"


# family: (the image; the hooks that read the vision side; the layout's checks)
QWEN_LAYOUT = (ODD, qwen_hooks, qwen_layout)
IDEFICS3_LAYOUT = (ODD, idefics3_hooks, idefics3_layout)
LAYOUTS = {"qwen2-vl": QWEN_LAYOUT, "qwen2.5-vl": QWEN_LAYOUT, "qwen3-vl": QWEN_LAYOUT,
           "gemma3": (ODD, gemma_hooks, gemma_layout), "llava-onevision": (WIDE, onevision_hooks, onevision_layout),
           "idefics3": IDEFICS3_LAYOUT, "smolvlm": IDEFICS3_LAYOUT,
           "internvl": (ODD, internvl_hooks, internvl_layout), "internvl-qwen3": (ODD, internvl_hooks, internvl_layout),
           "mistral3": (ODD, mistral3_hooks, mistral3_layout),
           "mistral3-ministral3": (ODD, mistral3_hooks, mistral3_layout), "glm4v": QWEN_LAYOUT}


@pytest.mark.parametrize("family", list(LAYOUTS))
def test_layout_names_the_feature_the_model_puts_at_each_image_position(family):
    """Each family's layout (trace.positions) read against the model's own pass: what the language model is given
    at each image position (its input embeddings, hooked) is the vision-side output (hooked, per family) that the
    layout names there."""
    (scene_size, box), hooks, layout = LAYOUTS[family]
    model, image = tiny(*FAMILIES[family]), cut(scene_size, box)
    seen = {}
    handles = hooks(model, seen) + [model.anatomy.language_model.register_forward_pre_hook(
        lambda m, a, k: seen.update(embeds=k["inputs_embeds"][0]), with_kwargs=True)]
    try:
        trace = model.trace(image, Q)
    finally:
        for h in handles:
            h.remove()
    layout(model, trace, seen)


def test_maps_are_drawn_on_the_whole_image(any_family, odd):
    ip = any_family.processor.image_processor
    assert model_view(odd, ip) is odd
    rows, cols = any_family.trace(odd, Q).positions.grid_shape
    boxes = patch_boxes(odd.size, ip, (rows, cols))
    assert tuple(boxes[0, 0]) == (0, 0, 77 / cols, 45 / rows) and tuple(boxes[-1, -1])[2:] == (77, 45)
    inside = box_mask((0, 0, 77 / cols, 45 / rows), odd.size, ip, (rows, cols))
    assert inside.sum() == 1 and inside[0, 0]


def coordinate_image(size: tuple[int, int]) -> Image.Image:
    """An image whose pixels say where they are: red 2x, green 2y."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    return Image.fromarray(np.stack([xs * 2, ys * 2, np.zeros_like(xs)], -1).astype(np.uint8))


def pixel_coordinates(pixel_values: torch.Tensor, image_processor) -> torch.Tensor:
    """The processor's pixel values of a `coordinate_image` read back as (x, y, 0) per pixel (channels at dim -3)."""
    mean, std = (torch.tensor(v)[:, None, None] for v in (image_processor.image_mean, image_processor.image_std))
    return (pixel_values * std + mean) * 255 / 2


@pytest.mark.parametrize("size, tiles, grid", [((40, 40), (1, 1), (2, 2)), ((64, 64), (2, 2), (4, 4)),
                                               ((77, 45), (2, 1), (2, 4)), ((45, 77), (1, 2), (4, 2)),
                                               ((120, 40), (3, 1), (2, 6))])
def test_internvl_tiles_cover_their_rectangles_of_the_processors_pixels(size, tiles, grid):
    """The processor's own tiles, read back from an image whose pixels say where they are: the grid of tiles is the
    one the processor chose for the image's aspect ratio (a square of 40 px stays one tile; one of 64 px, more than
    half the area of four tiles, is cut in 2 x 2), and the pixels under each image token, in its tile or in the
    thumbnail, come from the rectangle of the whole image that `patch_boxes` gives its (row, col)."""
    internvl = tiny("internvl")
    image = coordinate_image(size)
    inputs, ip = internvl.inputs(image, Q), internvl.processor.image_processor
    where = pixel_coordinates(inputs["pixel_values"], ip)                    # [tiles, (x, y, 0), 32, 32]
    n = tiles[0] * tiles[1]
    assert len(where) == n + (n > 1)
    positions = internvl.trace(image, Q).positions
    assert positions.grid_shape == grid
    for k, (position, tile, row, col) in enumerate(positions.image_tokens.tolist()):
        shape, (r, c) = (grid, (row % 2, col % 2)) if tile else ((2, 2), (row, col))
        x0, y0, x1, y1 = patch_boxes(image.size, ip, shape)[row, col]
        pixels = where[k // 4, :2, 16 * r:16 * r + 16, 16 * c:16 * c + 16].mean((1, 2))
        assert x0 < pixels[0] < x1 and y0 < pixels[1] < y1, (tile, row, col)


def test_internvl_prompt_and_its_block_of_image_tokens(odd):
    """InternVL's template asks for the image as <IMG_CONTEXT> and a line; the processor expands it into <img>, the
    tokens of every tile (3 tiles of 4 here), </img>."""
    internvl = tiny("internvl")
    assert internvl.prompt(Q, image=True) == ("<|im_start|>user\n<IMG_CONTEXT>\nWhat is the color of the dog?"
                                              "<|im_end|>\n<|im_start|>assistant\nThe color of the dog is")
    tokens = internvl.tokenizer.convert_ids_to_tokens(internvl.inputs(odd, Q)["input_ids"][0])
    start = tokens.index("<img>")
    assert tokens[start + 1:start + 14] == ["<IMG_CONTEXT>"] * 12 + ["</img>"]


@pytest.mark.parametrize("size, grid", [((40, 40), (3, 3)), ((77, 45), (3, 4)), ((45, 77), (4, 3)),
                                        ((120, 40), (2, 4)), ((32, 16), (1, 2))])
def test_mistral3_tokens_cover_their_rectangles_of_the_processors_pixels(size, grid):
    """The processor's own resize, read back from an image whose pixels say where they are: the image is downscaled
    to fit 64 px a side (120 x 40 -> 64 x 21) and its sides rounded up to multiples of 16 px (one token), so the grid
    follows the image (40 x 40 -> 3 x 3; 32 x 16 -> one row, no break, then [IMG_END]); the pixels merged into each
    image token come from the rectangle of the whole image that `patch_boxes` gives its (row, col), and every row of
    tokens is ended by [IMG_BREAK], the last by [IMG_END]."""
    mistral = tiny("mistral3")
    image = coordinate_image(size)
    inputs, ip = mistral.inputs(image, Q), mistral.processor.image_processor
    where = pixel_coordinates(inputs["pixel_values"][0], ip)                 # [(x, y, 0), 16 rows, 16 cols]
    assert inputs["image_sizes"][0].tolist() == [16 * grid[0], 16 * grid[1]]
    positions = mistral.trace(image, Q).positions
    assert positions.grid_shape == grid
    boxes = patch_boxes(image.size, ip, grid)
    for position, tile, row, col in positions.image_tokens.tolist():
        x0, y0, x1, y1 = boxes[row, col]
        pixels = where[:2, 16 * row:16 * row + 16, 16 * col:16 * col + 16].mean((1, 2))
        assert x0 < pixels[0] < x1 and y0 < pixels[1] < y1, (row, col)
    tokens = mistral.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    start = tokens.index("[IMG]")
    row_of_tokens = ["[IMG]"] * grid[1] + ["[IMG_BREAK]"]
    assert tokens[start:start + len(row_of_tokens) * grid[0]] == (row_of_tokens * grid[0])[:-1] + ["[IMG_END]"]


def test_mistral3_prompt_opens_the_answer_right_after_inst(odd):
    """Mistral's template asks for the image as [IMG] inside [INST] ... [/INST]; the answer follows [/INST] with no
    space (its turn opens on a special token, not a new line)."""
    mistral = tiny("mistral3")
    assert mistral.prompt(Q, image=True) == "<s>[INST][IMG]What is the color of the dog?[/INST]The color of the dog is"
    # the tiny tokenizer knows no "colour": the question is asked in the canonical "color" wording
    assert mistral.prompt("what is the colour of the cat", context="The cat is red.") == (
        "<s>[INST]The cat is red.\nWhat is the color of the cat?[/INST]The color of the cat is")


def test_ministral3_prompts_stop_before_its_query_scaling_starts():
    """Ministral 3 scales each query past original_max_position_embeddings (here 256), which the trace's attention
    weights do not follow: a longer prompt is refused in one line, as one past the positions of any model."""
    ministral = tiny("mistral3", family="ministral3")
    assert ministral.max_positions == 256 and tiny("mistral3").max_positions == 512
    with pytest.raises(LlavamechError, match="more than the 256 positions"):
        ministral.inputs(question=Q, context="The dog is white. " * 60)


@pytest.mark.parametrize("size, most, grid", [((40, 40), 256, (2, 2)), ((77, 45), 256, (3, 5)),
                                              ((45, 77), 256, (5, 3)), ((100, 12), 256, (1, 8)),
                                              ((120, 40), 256, (2, 8)), ((120, 40), 12, (2, 6))])
def test_glm4v_tokens_cover_their_rectangles_of_the_processors_pixels(size, most, grid):
    """GLM's own resize, read back from an image whose pixels say where they are: each side rounded to a multiple of
    16 px (one token; 40 -> 32, 77 -> 80), a side under 16 px first scaled up with the other (100 x 12 -> 133 x 16 ->
    one row of 8), and an image of more than `most` tokens' pixels, counted over its 2 frames, scaled down to fit
    (120 x 40 at 12 tokens -> 96 x 32); the four patches merged into each image token, the block the processor writes
    k-th for the k-th image position, come from the rectangle of the whole image that `patch_boxes` gives its
    (row, col), and the tokens stand in one block between <|begin_of_image|> and <|end_of_image|>."""
    glm = tiny("glm4v")
    ip = glm.processor.image_processor
    image, longest = coordinate_image(size), ip.size["longest_edge"]
    ip.size["longest_edge"] = 2 * most * 16 ** 2
    try:
        inputs, positions = glm.inputs(image, Q), glm.trace(image, Q).positions
    finally:
        ip.size["longest_edge"] = longest
    assert inputs["image_grid_thw"][0].tolist() == [1, 2 * grid[0], 2 * grid[1]] and positions.grid_shape == grid
    patches = inputs["pixel_values"].reshape(-1, 3, 2, 8, 8)[:, :, 0]        # [patches, C, 8, 8] (frame 0)
    where = pixel_coordinates(patches, ip)                                   # [patches, (x, y, 0), 8, 8]
    boxes = patch_boxes(image.size, ip, grid)
    for k, (position, tile, row, col) in enumerate(positions.image_tokens.tolist()):
        assert tile == 0 and (row, col) == divmod(k, grid[1]) and position == positions.image_positions[k]
        x0, y0, x1, y1 = boxes[row, col]
        pixels = where[4 * k:4 * k + 4, :2].mean((0, 2, 3))
        assert x0 < pixels[0] < x1 and y0 < pixels[1] < y1, (row, col)
    tokens = glm.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    start, n = tokens.index("<|begin_of_image|>"), grid[0] * grid[1]
    assert tokens[start + 1:start + n + 2] == ["<|image|>"] * n + ["<|end_of_image|>"]
    assert positions.image_positions.tolist() == list(range(start + 1, start + n + 1))


def test_glm4v_prompt_and_its_bound_on_image_tokens(odd):
    """GLM-4.1V's template: [gMASK]<sop>, the user turn after <|user|> and a new line, the image as
    <|begin_of_image|><|image|><|end_of_image|>, the answer on a new line after <|assistant|>. Its max_pixels counts
    the 2 frames an image is repeated to, so the one-line refusal names half as many tokens as Qwen's would."""
    glm = tiny("glm4v")
    assert glm.prompt(Q, image=True) == ("[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is the "
                                         "color of the dog?<|assistant|>\nThe color of the dog is")
    assert glm.prompt("what is the colour of the cat", context="The cat is red.") == (    # no "colour": "color"
        "[gMASK]<sop><|user|>\nThe cat is red.\nWhat is the color of the cat?<|assistant|>\nThe color of the cat is")
    big = Image.new("RGB", (900, 700), "white")
    glm.processor.image_processor.size["longest_edge"] *= 4
    with pytest.raises(LlavamechError, match=r"gives 1,008 image tokens, more than the 512 .* at most 1,024 image t"):
        glm.inputs(big, Q)


def test_prompt_follows_the_chat_template_with_the_answer_prefix(qwen, gemma):
    assert qwen.prompt(Q, image=True) == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the "
                                          "color of the dog?<|im_end|>\n<|im_start|>assistant\nThe color of the dog is")
    # the asker's "colour" is kept where the tokenizer knows it (tiny qwen2-vl's does not: it is asked "color")
    spelt = "colour" if qwen.knows("colour") else "color"
    assert qwen.prompt("what is the colour of the cat", context="The cat is red.") == (
        f"<|im_start|>user\nThe cat is red.\nWhat is the {spelt} of the cat?<|im_end|>\n<|im_start|>assistant\n"
        "The color of the cat is")
    assert gemma.prompt(Q, image=True) == ("<bos><start_of_turn>user\n<start_of_image>What is the color of the dog?"
                                           "<end_of_turn>\n<start_of_turn>model\nThe color of the dog is")


def test_text_only_questions_run_without_an_image(any_family):
    trace = any_family.trace(question=Q, context="The dog is white. The cat is black.")
    assert len(trace.positions.image_positions) == 0 and trace.positions.grid_shape == (0, 0)


def test_an_image_with_more_tokens_than_positions_is_one_line(qwen):
    big = Image.new("RGB", (900, 700), "white")    # max_pixels allows 256 tokens; the tiny model has 512 positions
    qwen.processor.image_processor.size["longest_edge"] *= 4
    try:
        with pytest.raises(LlavamechError, match=r"gives 1,0\d\d image tokens, more than the 512 positions.*max_pix"):
            qwen.inputs(big, Q)
    finally:
        qwen.processor.image_processor.size["longest_edge"] //= 4
    assert len(qwen.inputs(big, Q)["input_ids"][0]) < 512    # within max_pixels: downscaled, accepted


def test_a_model_without_a_chat_template_is_one_line(any_family):
    template = any_family.processor.chat_template
    any_family.processor.chat_template = None
    try:
        with pytest.raises(LlavamechError, match="has no chat template") as error:
            any_family.prompt(Q, image=True)
        assert "\n" not in str(error.value)
    finally:
        any_family.processor.chat_template = template


def test_gemma_pan_and_scan_is_one_line(gemma, odd):
    gemma.processor.image_processor.do_pan_and_scan = True
    try:
        with pytest.raises(LlavamechError, match="pan-and-scan"):
            gemma.inputs(odd, Q)
    finally:
        gemma.processor.image_processor.do_pan_and_scan = False


@pytest.mark.parametrize("name", ["tiny-random-qwen2-vl", "tiny-random-qwen2.5-vl", "tiny-random-qwen3-vl",
                                  "tiny-random-gemma3",
                                  "tiny-random-gemma3-text", "tiny-random-llava-onevision", "tiny-random-idefics3",
                                  "tiny-random-smolvlm", "tiny-random-internvl", "tiny-random-internvl-qwen3",
                                  "tiny-random-mistral3", "tiny-random-mistral3-ministral3", "tiny-random-glm4v"])
def test_load_by_name_and_from_a_folder(name, tmp_path, odd):
    memory = llavamech.load(name)
    memory.hf.save_pretrained(tmp_path)
    (memory.processor or memory.tokenizer).save_pretrained(tmp_path)
    folder = llavamech.load(str(tmp_path))
    assert type(folder.hf) is type(memory.hf) and folder.family == memory.family
    args = dict(image=odd, question=Q) if memory.is_multimodal else dict(question=Q, context="The dog is white.")
    assert folder.prompt(Q, image=memory.is_multimodal) == memory.prompt(Q, image=memory.is_multimodal)
    a, b = memory.explain(**args), folder.explain(**args)
    assert a.answer == b.answer and a.grid_shape == b.grid_shape
    torch.testing.assert_close(a.head_scores, b.head_scores, atol=1e-5, rtol=0)


def test_every_patch_method_maps_onto_the_token_grid(any_family, odd):
    """Every method scores the grid of image tokens (merged or pooled patches), drawn over the whole image. A pass
    on the input embeddings alone is given what the model derives from the token ids (Qwen-VL's 3-D positions,
    Gemma's token types for its both-ways attention among image tokens): with them, nothing removed is the traced
    model's log p (without them the model would be another one); integrated gradients are complete."""
    from llavamech import patches as P

    maps = P.patch_maps(any_family, odd, Q, ig_steps=64)
    x = maps["tool"].explanation
    for method, pm in maps.items():
        assert pm.scores.shape == tuple(x.grid_shape) and np.isfinite(pm.scores).all(), method
    emb = maps["ablation"].embedded
    assert list(emb.extras) == EXTRAS[any_family.family.model_type]
    token = x.answer_token_id
    clean, removed = P.answer_logprob(any_family, emb, token, [[], list(range(len(emb.image_positions)))])
    assert abs(clean - float(torch.log_softmax(x.trace.logits, -1)[token])) < 1e-5
    if emb.extras:
        with torch.no_grad():
            assert abs(P._logprob(any_family, emb.embeds, token).item() - clean) > 1e-6   # without them: another model
    assert abs(maps["ig"].scores.sum() - (clean - removed)) < 0.05 * abs(clean - removed) + 1e-4


def test_gemma_soft_cap_enters_the_score_exactly(gemma, odd):
    """With a final logit soft-cap (Gemma 2's 30, here 0.1, so that it bites on a random model; Gemma3ForCausalLM
    applies it, the multimodal class, in transformers 5, does not: the trace reads which from the model's own pass),
    the frozen-norm readout capped is the model's logits, and each head's and neuron's Imp is the capped log-softmax
    difference computed through the model's own modules; the linear logit contribution stays additive (before the
    cap)."""
    from llavamech import attribution as A
    from llavamech.checks import identity_errors
    from llavamech.models import Model
    from llavamech.tiny_vl import tiny_gemma3_text
    from tests.unit.test_attribution import ATOL, brute_imp, capture_o_proj_inputs, close, direct_head_output

    capped = Model("tiny-random-gemma3-text(cap 0.1)", *tiny_gemma3_text(soft_cap=0.1))
    example = dict(question=Q, context="The dog is white. The cat is black.")
    trace = capped.trace(**example)
    assert trace.logits.abs().max() < 0.1 and trace.soft_cap == 0.1
    close(A.capped(trace, A.readout(trace, trace.final_resid)), trace.logits)
    assert (A.readout(trace, trace.final_resid) - trace.logits).abs().max() > 0.05    # the cap does bite
    o_in, a, w = capture_o_proj_inputs(capped, example), capped.anatomy, 5
    heads = A.head_scores(trace, token=w)
    for l in range(a.n_layers):
        for h in range(a.n_heads):
            expected = brute_imp(capped, trace, trace.resid_in[l], direct_head_output(capped, o_in, l, h), w)
            assert abs(heads[l, h].item() - expected) < ATOL
    c = A.neuron_contributions(trace, 1)
    assert abs(A.neuron_scores(trace, 1, token=w)[7].item() - brute_imp(capped, trace, trace.mid[1], c[7], w)) < ATOL
    close(A.head_logit_contributions(trace).sum(1), A.logit_contribution(trace, trace.attn_out), atol=1e-4)
    assert max(identity_errors(capped, **example).values()) < ATOL     # the book's check caps its brute force too
    gemma.anatomy.soft_cap = 2.0      # a cap in the config that the multimodal class does not apply: none is read
    try:
        assert gemma.trace(odd, Q).soft_cap is None
    finally:
        gemma.anatomy.soft_cap = None


def test_other_families_are_refused_in_one_line_naming_the_supported(tmp_path):
    from transformers import PaliGemmaConfig

    PaliGemmaConfig().save_pretrained(tmp_path)
    supported = (r"not supported: .* paligemma model.*qwen2_vl, .*gemma3, .*idefics3, smolvlm, internvl, mistral3, "
                 r"glm4v models$")
    with pytest.raises(LlavamechError, match=supported) as e:
        llavamech.load(str(tmp_path))
    assert "\n" not in str(e.value)


def test_qwen3_deepstack_additions_are_terms_of_the_residual_stream(odd):
    """Qwen3-VL adds the vision tower's intermediate features to the residual stream at the image positions after
    its first layers: with them as a term of their own, every layer input is the previous one plus A^l, F^l and D^l
    at every position, exactly; D^l is zero at the text positions, the scored one included, so the decomposition at T
    is the usual one. A pass on the embeddings alone is handed them (`Embedded.injected`)."""
    from llavamech import patches as P

    qwen3 = tiny("qwen-vl", family="3")
    trace = qwen3.trace(odd, Q, all_positions=True)
    added = trace.visual_added_all
    rebuilt = trace.resid_in_all[:-1] + trace.attn_out_all + trace.mlp_out_all + added
    torch.testing.assert_close(trace.resid_in_all[1:], rebuilt, atol=1e-6, rtol=0)
    text = torch.ones(trace.seq_len, dtype=torch.bool)
    text[trace.positions.image_positions] = False
    assert added[:, ~text].abs().amax() > 0 and added[:, text].abs().amax() == 0   # its 2 layers: both add
    emb = P.embed(qwen3, qwen3.inputs(odd, Q))
    assert len(emb.injected["deepstack_visual_embeds"]) == 2
    token = trace.top_token
    with torch.no_grad():
        alone = P._logprob(qwen3, emb.embeds, token, emb.extras).item()      # without the additions: another model
    clean = P._logprob(qwen3, emb.embeds, token, emb.extras, emb.injected).item()
    assert abs(clean - float(torch.log_softmax(trace.logits, -1)[token])) < 1e-5 and abs(alone - clean) > 1e-6
