"""The toy world of the model organism (data/world.json): sprites, scenes, questions and TQA text.

Everything is drawn from a `random.Random` the caller seeds, so a seed fixes every scene.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..paths import SPRITES_DIR, WORLD_JSON, check_data

SPRITE_PX = 96  # sprites are stored at this size and scaled down when painted


@dataclass(frozen=True)
class World:
    animals: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    spec: dict = field(repr=False, hash=False, compare=False)

    @property
    def colour_names(self) -> tuple[str, ...]:
        return tuple(self.colours)


@lru_cache(maxsize=None)
def load_world() -> World:
    check_data()
    spec = json.loads(WORLD_JSON.read_text())
    return World(tuple(spec["animals"]), {k: tuple(v) for k, v in spec["colours"].items()}, spec)


# ---- prompts (the paper's, as the book's introduction shows them: the answer is the next token after "... is") ----
VQA_TEMPLATE = "USER: <image>\nWhat is the color of the {animal}?\nASSISTANT: The color of the {animal} is"
TQA_TEMPLATE = "USER: {facts}\nWhat is the color of the {animal}?\nASSISTANT: The color of the {animal} is"


def vqa_prompt(animal: str) -> str:
    return VQA_TEMPLATE.format(animal=animal)


def tqa_prompt(facts: list[tuple[str, str]], animal: str) -> str:
    return TQA_TEMPLATE.format(facts=tqa_context(facts), animal=animal)


def tqa_context(facts: list[tuple[str, str]]) -> str:
    """'The dog is white. The cat is black.' from [(animal, colour), ...]."""
    return " ".join(f"The {a} is {c}." for a, c in facts)


def caption(pairs: list[tuple[str, str]]) -> str:
    """A scene's caption for CLIP pretraining and Llava's stage 1: 'a brown dog and a red cat .'"""
    return " and ".join(f"a {c} {a}" for a, c in pairs) + " ."


def sample_facts(rng: random.Random, n: int, world: World | None = None) -> list[tuple[str, str]]:
    """n (animal, colour) pairs: distinct animals, distinct colours."""
    world = world or load_world()
    return list(zip(rng.sample(world.animals, n), rng.sample(world.colour_names, n)))


# ---- sprites ----
def render_sprites(font_path: str, out_dir=SPRITES_DIR) -> None:
    """Render every animal's emoji glyph once into a greyscale+alpha PNG (run by hand; needs the font)."""
    font = ImageFont.truetype(font_path, 109)  # CBDT colour fonts only render at their native size
    out_dir.mkdir(parents=True, exist_ok=True)
    for animal, code in load_world().spec["animals"].items():
        glyph = chr(int(code[2:], 16))
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((10, 10), glyph, font=font, embedded_color=True)
        rgba = canvas.crop(canvas.getbbox())
        side = max(rgba.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
        square = square.resize((SPRITE_PX, SPRITE_PX), Image.LANCZOS)
        lum = square.convert("L")
        Image.merge("LA", (lum, square.getchannel("A"))).save(out_dir / f"{animal}.png")


@lru_cache(maxsize=None)
def _sprite(animal: str) -> Image.Image:
    path = SPRITES_DIR / f"{animal}.png"
    return Image.open(path).convert("LA")


def paint(animal: str, colour: tuple[int, int, int], size: int) -> Image.Image:
    """The animal's silhouette filled with `colour`, shaded by 0.75 + 0.25 * luminance (world.json), as RGBA."""
    lum, alpha = (np.asarray(ch, dtype=np.float32) for ch in _sprite(animal).resize((size, size), Image.LANCZOS).split())
    shade = 0.75 + 0.25 * (lum / 255.0)
    rgb = np.clip(shade[..., None] * np.asarray(colour, dtype=np.float32), 0, 255)
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA")


# ---- scenes ----
@dataclass
class Animal:
    name: str
    colour: str
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of the painted pixels, in canvas pixels


@dataclass
class Scene:
    image: Image.Image
    animals: list[Animal]
    mask: np.ndarray = field(repr=False)  # [H, W] index into animals of the painted pixel, -1 for background


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def make_scene(rng: random.Random, size: int = 64, n_animals: int | None = None,
               pairs: list[tuple[str, str]] | None = None) -> Scene:
    """A scene as world.json lays it out: grey background, 1–3 distinct animals in distinct colours,
    each 30–50 % of the canvas side, anywhere, placement squares not overlapping."""
    world = load_world()
    spec = world.spec["scene"]
    lo, hi = spec["animals_per_scene"]
    if pairs is None:
        pairs = sample_facts(rng, n_animals or rng.randint(lo, hi), world)
    grey = rng.randint(110, 150)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    fmin, fmax = spec["animal_size_fraction"]
    while True:  # rejection sampling; three squares of at most half the side always fit eventually
        squares = []
        for _ in pairs:
            side = max(4, round(size * rng.uniform(fmin, fmax)))
            for _try in range(50):
                x, y = rng.randint(0, size - side), rng.randint(0, size - side)
                sq = (x, y, x + side, y + side)
                if not any(_overlaps(sq, other) for other in squares):
                    squares.append(sq)
                    break
            else:
                break
        if len(squares) == len(pairs):
            break
    animals = []
    mask = np.full((size, size), -1, dtype=np.int8)
    for i, ((name, colour), sq) in enumerate(zip(pairs, squares)):
        sprite = paint(name, world.colours[colour], sq[2] - sq[0])
        image.paste(sprite, sq[:2], sprite)
        alpha = np.asarray(sprite.getchannel("A")) >= 128
        mask[sq[1]:sq[3], sq[0]:sq[2]][alpha] = i
        l, t, r, b = sprite.getchannel("A").getbbox()
        animals.append(Animal(name, colour, (sq[0] + l, sq[1] + t, sq[0] + r, sq[1] + b)))
    return Scene(image, animals, mask)


def patch_labels(scene: Scene, grid: int, min_share: float = 0.2) -> np.ndarray:
    """[grid, grid] index into scene.animals of the animal painted on most of each patch, -1 for background
    (no animal covers `min_share` of the patch)."""
    size = scene.mask.shape[0]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    labels = np.full((grid, grid), -1)
    for r in range(grid):
        for c in range(grid):
            cell = scene.mask[edges[r]:edges[r + 1], edges[c]:edges[c + 1]]
            shares = [(cell == i).mean() for i in range(len(scene.animals))]
            if shares and max(shares) >= min_share:
                labels[r, c] = int(np.argmax(shares))
    return labels
