"""One image loader for every mode Pillow opens: what reaches the model looks like the picture (not clipped white or
black), upright by its EXIF orientation, bounded in size, and fully decoded (a damaged file is refused up front); a
box on the picture mapped onto the patch grid through the processor's resize and centre crop, and back."""
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from llavamech import LlavamechError
from llavamech.imaging import box_mask, load_image, patch_boxes
from tests.conftest import tiny

GREY = (np.arange(48 * 40).reshape(48, 40) * 7 % 256).astype(np.uint8)   # every grey level, some several times


def saved(tmp_path, name, image, **options):
    image.save(tmp_path / name, **options)
    return tmp_path / name


@pytest.mark.parametrize("name, image", [
    ("16bit.png", Image.fromarray(GREY.astype(np.uint16) * 257)),                  # opened as I;16
    ("float.tiff", Image.fromarray((GREY / 255).astype(np.float32))),              # F, in 0..1
    ("float255.tiff", Image.fromarray(GREY.astype(np.float32))),                   # F, in 0..255
    ("int32.tiff", Image.fromarray(GREY.astype(np.int32) * 257)),                  # I, 16-bit values
    ("palette.png", Image.fromarray(GREY, "L").convert("P")),
    ("grey-alpha.png", Image.merge("LA", [Image.fromarray(GREY, "L"), Image.new("L", (40, 48), 255)])),
    ("rgba.png", Image.fromarray(GREY, "L").convert("RGBA")),
    ("cmyk.tiff", Image.fromarray(GREY, "L").convert("CMYK")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_every_mode_reaches_the_model_as_the_8bit_picture(tmp_path, name, image):
    reference = np.asarray(Image.fromarray(GREY, "L").convert("RGB"), dtype=float)
    seen = load_image(saved(tmp_path, name, image))
    assert seen.mode == "RGB" and seen.size == (40, 48)
    assert abs(np.asarray(seen, dtype=float).mean() - reference.mean()) <= 1, "within 1/255 of the 8-bit picture"


def test_alpha_is_composited_on_white(tmp_path):
    clear = load_image(saved(tmp_path, "clear.png", Image.new("LA", (4, 4), (0, 0))))
    assert np.asarray(clear).min() == 255


def test_exif_orientation_turns_the_image_upright(tmp_path):
    picture = Image.new("RGB", (40, 20), "red")
    picture.paste((0, 0, 255), (0, 0, 10, 20))          # blue on the left as stored
    exif = picture.getexif()
    exif[0x0112] = 6                                    # "rotate 90° clockwise to display"
    path = saved(tmp_path, "phone.jpg", picture, exif=exif, quality=95)
    shown = load_image(path)
    assert shown.size == (20, 40) and shown.getpixel((10, 2))[2] > 200   # blue now on top, as a viewer shows it
    assert load_image(Image.open(path)).size == (20, 40)                 # a PIL image the caller opened: the same


@pytest.mark.parametrize("limit", [1000, 500], ids=["warning range", "error range"])
def test_images_over_the_pixel_limit_are_one_line(tmp_path, monkeypatch, limit):
    """Pillow warns between MAX_IMAGE_PIXELS and twice that and raises beyond: one line either way, with the numbers."""
    path = saved(tmp_path, "big.png", Image.new("RGB", (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for image in (path, Image.new("RGB", (40, 40))):
        with pytest.raises(LlavamechError, match=f"1,600 pixels, over the limit of {limit:,}") as err:
            load_image(image)
        assert "\n" not in str(err.value)


def test_damaged_files_are_refused_whole(tmp_path):
    path = saved(tmp_path, "full.jpg", Image.fromarray(np.random.RandomState(0).randint(0, 255, (80, 80, 3), np.uint8)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])    # the header intact, the pixels cut short
    with pytest.raises(LlavamechError, match="truncated"):
        load_image(cut)
    with pytest.raises(LlavamechError, match="cannot be decoded"):
        load_image(Image.open(cut))
    with pytest.raises(LlavamechError, match="NUL byte"):
        load_image(str(tmp_path / "a\x00.png"))


def test_box_mask_follows_resize_and_centre_crop():
    proc = SimpleNamespace(crop_size={"height": 64, "width": 64}, size={"shortest_edge": 64})
    square = box_mask((0, 0, 32, 32), (64, 64), proc, (8, 8))
    assert square[:4, :4].all() and square.sum() == 16
    wide = box_mask((32, 0, 64, 32), (128, 64), proc, (8, 8))  # the crop drops 32 px on each side
    assert np.array_equal(wide, square)
    big = box_mask((0, 0, 64, 64), (128, 128), proc, (8, 8))    # halved by the resize
    assert np.array_equal(big, square)


def test_patch_boxes_agree_with_box_mask_under_a_centre_crop():
    """llava-1.5's view (resize the short side, centre crop): each cell's rectangle maps back through the crop and
    the resize, its centre is where box_mask looks, and the cropped-off margins lie in no cell."""
    llava = tiny("llava")
    ip = llava.processor.image_processor     # 32 px crop of the short side resized to 32
    boxes = patch_boxes((128, 64), ip, (4, 4))
    assert tuple(boxes[0, 0]) == (32, 0, 48, 16) and tuple(boxes[-1, -1]) == (80, 48, 96, 64)
    for r in range(4):
        for c in range(4):
            x0, y0, x1, y1 = boxes[r, c]
            centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            mask = box_mask((centre[0] - 1, centre[1] - 1, centre[0] + 1, centre[1] + 1), (128, 64), ip, (4, 4))
            assert mask.sum() == 1 and mask[r, c]
