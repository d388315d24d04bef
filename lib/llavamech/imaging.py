"""Images in and out: validated loading, the view the model actually sees (resize + centre crop)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import LlavamechError


def load_image(image) -> Image.Image:
    """A PIL image or a path -> RGB PIL image. Greyscale, palette and RGBA inputs are valid (RGBA over white)."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise LlavamechError(f"image not found: {path} (check the path)")
        if path.is_dir():
            raise LlavamechError(f"{path} is a folder, not an image file")
        if path.stat().st_size == 0:
            raise LlavamechError(f"image file is empty: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise LlavamechError(f"{path} is not a readable image ({type(e).__name__}); give a PNG or JPEG") from None
    if not isinstance(image, Image.Image):
        raise LlavamechError(f"expected an image path or a PIL image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def tiled(image_processor) -> bool:
    """LLaVA-NeXT's any-resolution processing: the tiles and the base image cover the whole image, uncropped."""
    return bool(getattr(image_processor, "image_grid_pinpoints", None))


def model_view(image: Image.Image, image_processor) -> Image.Image:
    """The part of `image` the model sees, at the processor's crop size: shortest edge resized, centre-cropped.
    Content outside this crop never reaches the model, so maps are drawn on this view. LLaVA-NeXT sees all of the
    image (its tiles cover it, padding removed), so there the view is the image itself."""
    if tiled(image_processor):
        return image
    crop = image_processor.crop_size
    short = image_processor.size.get("shortest_edge", min(crop["height"], crop["width"]))
    w, h = image.size
    scale = short / min(w, h)
    resized = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    left = (resized.width - crop["width"]) // 2
    top = (resized.height - crop["height"]) // 2
    return resized.crop((left, top, left + crop["width"], top + crop["height"]))


def box_mask(box, image_size: tuple[int, int], image_processor, grid_shape: tuple[int, int]):
    """[rows, cols] booleans: which patches of the model's view have their centre inside `box` (x0, y0, x1, y1 in
    the original image's pixels), following the processor's resize and centre crop (none for LLaVA-NeXT)."""
    import numpy as np

    rows, cols = grid_shape
    w, h = image_size
    if tiled(image_processor):   # the grid spans the whole image
        scale, left, top, height, width = 1.0, 0, 0, h, w
    else:
        crop = image_processor.crop_size
        scale = image_processor.size.get("shortest_edge", min(crop["height"], crop["width"])) / min(w, h)
        left, top = (round(w * scale) - crop["width"]) // 2, (round(h * scale) - crop["height"]) // 2
        height, width = crop["height"], crop["width"]
    ys = ((np.arange(rows) + 0.5) * height / rows + top) / scale    # patch centres in the image's own pixels
    xs = ((np.arange(cols) + 0.5) * width / cols + left) / scale
    x0, y0, x1, y1 = box
    return (ys[:, None] >= y0) & (ys[:, None] < y1) & (xs[None, :] >= x0) & (xs[None, :] < x1)
