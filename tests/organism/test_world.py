"""The toy world follows data/world.json exactly."""
import json
import random
from pathlib import Path

import numpy as np
import pytest

from llavamech.paths import WORLD_JSON
from llavamech.organism.world import load_world, make_scene, patch_labels, tqa_prompt, vqa_prompt

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "world" / "world.json"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is not beside this checkout")
def test_world_json_extends_the_given_world_with_question_types_only():
    """The colour world as given stays as it is (the shipped colour organism was trained on it); chapter 6's
    question types are the one addition."""
    ours, given = json.loads(WORLD_JSON.read_text()), json.loads(SHARED.read_text())
    assert {k: v for k, v in ours.items() if k in given} == given and set(ours) - set(given) == {"question_types"}


def test_scenes_follow_the_world():
    world, rng = load_world(), random.Random(1)
    for i in range(60):
        size = rng.choice([64, 100, 257])
        scene = make_scene(rng, size=size)
        names, colours = [a.name for a in scene.animals], [a.colour for a in scene.animals]
        assert 1 <= len(names) <= 3 and len(set(names)) == len(names) and len(set(colours)) == len(colours)
        assert scene.image.size == (size, size)
        pixels = np.asarray(scene.image).astype(int)
        grey = pixels[0, 0] if scene.mask[0, 0] < 0 else None
        assert all(110 <= v <= 150 for v in pixels[scene.mask < 0][0])  # uniform grey background
        for i, a in enumerate(scene.animals):
            l, t, r, b = a.box
            assert 0 <= l < r <= size and 0 <= t < b <= size
            assert 0.2 * size <= max(r - l, b - t) <= 0.5 * size + 1  # 30–50 % squares, glyph margins trimmed
            ys, xs = np.nonzero(scene.mask == i)
            assert l <= xs.min() and xs.max() < r and t <= ys.min() and ys.max() < b  # the box contains its animal
            painted = pixels[scene.mask == i].mean(0)
            target = np.asarray(world.colours[a.colour])
            assert np.abs(painted - target).max() < 0.3 * 255 + 1  # shaded 0.75–1.0 of the colour


def test_changed_pixels_lie_inside_the_boxes():
    scene = make_scene(random.Random(3), size=128, n_animals=3)
    pixels = np.asarray(scene.image).astype(int)
    background = np.all(pixels == pixels[scene.mask < 0][0], axis=-1)
    inside = np.zeros_like(background)
    for a in scene.animals:
        l, t, r, b = a.box
        inside[t:b, l:r] = True
    assert not np.any(~background & ~inside)


def test_deterministic_under_a_seed():
    a, b = make_scene(random.Random(5), 96), make_scene(random.Random(5), 96)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.animals == b.animals


def test_patch_labels_find_each_animal():
    scene = make_scene(random.Random(2), size=64, n_animals=2)
    labels = patch_labels(scene, 8)
    assert set(np.unique(labels)) <= {-1, 0, 1} and (labels == 0).any() and (labels == 1).any()


def test_prompts_are_the_papers():
    assert vqa_prompt("dog") == "USER: <image>\nWhat is the color of the dog?\nASSISTANT: The color of the dog is"
    assert tqa_prompt([("dog", "white"), ("cat", "black")], "cat") == (
        "USER: The dog is white. The cat is black.\nWhat is the color of the cat?\nASSISTANT: The color of the cat is")
