"""Images in and out: validated loading, the view the model actually sees (resize + centre crop)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import LlavamechError

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(image) -> Image.Image:
    """A PIL image or a path -> the RGB image the model should see, whatever mode Pillow opened: greyscale, palette,
    CMYK, 16-bit and 32-bit integer, float, and alpha (composited on white); turned upright by its EXIF orientation,
    so that boxes given in the displayed image's pixels are right. Fully decoded, so a truncated file is refused
    here, not halfway through a run. Bounded by Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)."""
    if isinstance(image, str) and "://" in image:
        raise LlavamechError(f"{image} is a web address; llavamech reads local files only: download the image first")
    if isinstance(image, str) and not image.strip():
        raise LlavamechError("the image path is empty; give a PNG or JPEG file or a PIL image")
    if isinstance(image, (str, Path)):
        image = _open(Path(image).expanduser())
    if not isinstance(image, Image.Image):
        raise LlavamechError(f"expected an image path or a PIL image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise LlavamechError(f"the image is {image.width} x {image.height} pixels: empty; give a real picture")
    _check_pixels(image.width * image.height, "the image")
    try:
        image.load()   # a PIL image opened lazily by the caller is decoded here, where its damage can be named
    except (OSError, SyntaxError, ValueError) as e:
        raise LlavamechError(f"the image cannot be decoded ({e}); give a complete PNG or JPEG") from None
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _open(path: Path) -> Image.Image:
    if "\x00" in str(path):
        raise LlavamechError(f"the image path {str(path)!r} holds a NUL byte; give a plain file name")
    if not path.exists():
        raise LlavamechError(f"image not found: {path} (check the path)")
    if path.is_dir():
        raise LlavamechError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise LlavamechError(f"image file is empty: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; either way the image is refused in one line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))   # Pillow's message holds the size; reopening would refuse again
        raise LlavamechError(_too_many_pixels(str(path), int(pixels.group(1)) if pixels else None)) from None
    except PermissionError:
        raise LlavamechError(f"{path} cannot be read (permission denied)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        why = "truncated or damaged" if "truncated" in str(e) or "broken" in str(e) else type(e).__name__
        raise LlavamechError(f"{path} is not a readable image ({why}); give a PNG or JPEG") from None


def _check_pixels(pixels: int, what: str) -> None:
    if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
        raise LlavamechError(_too_many_pixels(what, pixels))


def _too_many_pixels(what: str, pixels: int | None) -> str:
    count = f"{pixels:,} pixels" if pixels else "more pixels"
    return (f"{what} has {count}, over the limit of {Image.MAX_IMAGE_PIXELS:,} (Pillow's guard against decompression "
            "bombs); downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Pillow's own convert("RGB") clips wide integer and float pixels to 0..255 (a 16-bit PNG turns white, a float
    TIFF in 0..1 black): those are rescaled to 8 bits first."""
    if image.mode in ("I", "F", *SIXTEEN_BIT_MODES):
        image = Image.fromarray(_to_8bit(np.asarray(image), image.mode), mode="L")
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError:
        raise LlavamechError(f"images in Pillow's mode {image.mode} cannot be converted to RGB; "
                             "save it as a PNG or JPEG") from None


def _to_8bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale values of any range -> uint8. 16-bit modes span 0..65535. A 32-bit integer or float image says
    nothing of its range: values within 0..1 (float) or 0..255 are taken as they are, 0..65535 as 16-bit (how Pillow
    opens 16-bit PNGs), anything else is stretched from its minimum to its maximum."""
    pixels = np.nan_to_num(pixels.astype(np.float64))
    low, high = (pixels.min(), pixels.max()) if pixels.size else (0.0, 0.0)
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and 0 <= low and 255 < high <= 65535):
        scaled = pixels / 257
    elif mode == "F" and 0 <= low and high <= 1:
        scaled = pixels * 255
    elif 0 <= low and high <= 255:
        scaled = pixels
    else:
        scaled = (pixels - low) * (255 / (high - low)) if high > low else np.zeros_like(pixels)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def tiled(image_processor) -> bool:
    """LLaVA-NeXT's any-resolution processing: the tiles and the base image cover the whole image, uncropped."""
    return bool(getattr(image_processor, "image_grid_pinpoints", None))


def dynamic(image_processor) -> bool:
    """Qwen2-VL's dynamic resolution: the whole image resized (aspect ratio kept to within one merged patch) to a
    multiple of patch_size × merge_size, uncropped; its grid follows the image."""
    size = image_processor.size or {}
    return getattr(image_processor, "merge_size", None) is not None and size.get("longest_edge") is not None


def squashed(image_processor) -> bool:
    """Gemma 3's processing: the whole image resized to a fixed height × width (aspect ratio not kept), uncropped."""
    size = image_processor.size or {}
    return (not getattr(image_processor, "do_center_crop", False) and size.get("height") is not None
            and size.get("shortest_edge") is None)


def split(image_processor) -> bool:
    """Idefics3's processing: the whole image resized to multiples of the tower's input and split into tiles of it
    (plus the whole image squashed to one), uncropped."""
    return getattr(image_processor, "max_image_size", None) is not None


def fitted(image_processor) -> bool:
    """Pixtral's processing (Mistral 3): the whole image downscaled to fit longest_edge (aspect ratio kept), its sides
    rounded up to multiples of the patch (times the merge, which the processor passes), uncropped; its grid follows
    the image."""
    size = image_processor.size or {}
    return (not getattr(image_processor, "do_center_crop", False) and size.get("longest_edge") is not None
            and getattr(image_processor, "patch_size", None) is not None)


def whole_image(image_processor) -> bool:
    """Whether the model sees all of the image, its patch grid spanning it edge to edge (no centre crop)."""
    return (tiled(image_processor) or dynamic(image_processor) or squashed(image_processor) or split(image_processor)
            or fitted(image_processor))


def model_view(image: Image.Image, image_processor) -> Image.Image:
    """The part of `image` the model sees, at the processor's crop size: shortest edge resized, centre-cropped.
    Content outside this crop never reaches the model, so maps are drawn on this view. LLaVA-NeXT and the families of
    llavamech.families see all of the image (tiles with the padding removed, or a resize without a crop), so there
    the view is the image itself."""
    if whole_image(image_processor):
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
    the original image's pixels), following the processor's resize and centre crop (none where the model sees all of
    the image: `whole_image`)."""
    rows, cols = grid_shape
    scale, left, top, height, width = _grid_frame(image_size, image_processor)
    ys = ((np.arange(rows) + 0.5) * height / rows + top) / scale    # patch centres in the image's own pixels
    xs = ((np.arange(cols) + 0.5) * width / cols + left) / scale
    x0, y0, x1, y1 = box
    return (ys[:, None] >= y0) & (ys[:, None] < y1) & (xs[None, :] >= x0) & (xs[None, :] < x1)


def _grid_frame(image_size: tuple[int, int], image_processor) -> tuple[float, int, int, int, int]:
    """Where the patch grid lies: (scale, left, top, height, width) such that the grid spans [left, left + width) ×
    [top, top + height) of the image resized by `scale` (the whole image, unscaled, where the model sees all of it)."""
    w, h = image_size
    if whole_image(image_processor):
        return 1.0, 0, 0, h, w
    crop = image_processor.crop_size
    scale = image_processor.size.get("shortest_edge", min(crop["height"], crop["width"])) / min(w, h)
    left, top = (round(w * scale) - crop["width"]) // 2, (round(h * scale) - crop["height"]) // 2
    return scale, left, top, crop["height"], crop["width"]


def patch_boxes(image_size: tuple[int, int], image_processor, grid_shape: tuple[int, int]) -> np.ndarray:
    """[rows, cols, 4]: the rectangle (x0, y0, x1, y1), in the original image's pixels, that each cell of the map's
    grid covers. The processor's resize is a scaling of each axis, so a cell of a grid spanning the whole image covers
    an equal share of it; under a centre crop, its share of the crop mapped back through the resize (the cropped-off
    margins lie in no cell)."""
    rows, cols = grid_shape
    scale, left, top, height, width = _grid_frame(image_size, image_processor)
    ys = (np.arange(rows + 1) * height / rows + top) / scale   # cell edges in the image's own pixels
    xs = (np.arange(cols + 1) * width / cols + left) / scale
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([xs[c], ys[r], xs[c + 1], ys[r + 1]], -1)
