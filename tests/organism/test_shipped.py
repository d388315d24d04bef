"""The shipped organism clears its bars on a fresh held-out sample (never training data: held-out keys only,
with an evaluation seed no card or chapter uses)."""
import random

import pytest

import llavamech
from llavamech.organism import recipe
from llavamech.organism.world import load_world, make_scene

FRESH_SEED = 31337
N = 300


@pytest.fixture(scope="module")
def llava():
    return llavamech.load("toy-llava")


@pytest.fixture(scope="module")
def vicuna():
    return llavamech.load("toy-vicuna")


def test_toy_vicuna_tqa_bar(vicuna):
    assert recipe.tqa_accuracy(vicuna.hf, vicuna.tokenizer, N, FRESH_SEED) >= 0.95


def test_toy_llava_vqa_bar(llava):
    assert recipe.vqa_accuracy(llava.hf, llava.processor, N, FRESH_SEED) >= 0.90


def test_toy_llava_tqa_bar(llava):
    assert recipe.tqa_accuracy(llava.hf, llava.tokenizer, N, FRESH_SEED) >= 0.90


def test_the_shipped_models_are_the_real_classes(llava, vicuna):
    assert type(llava.hf).__name__ == "LlavaForConditionalGeneration"
    assert type(vicuna.hf).__name__ == "LlamaForCausalLM"
    assert type(llava.hf.model.vision_tower).__name__ == "CLIPVisionModel"
    assert llava.hf.config.vision_feature_layer == -2 and llava.hf.config.projector_hidden_act == "gelu"


def test_explain_answers_a_scene_it_has_never_seen(llava):
    scene = make_scene(random.Random(FRESH_SEED), size=200, n_animals=3)
    asked = scene.animals[1]
    result = llava.explain(scene.image, question=f"What is the color of the {asked.name}?")
    assert result.answer in load_world().colours
    assert result.grid_shape == [8, 8]


def test_an_animal_missing_from_the_image_still_gets_an_answer(llava):
    """The hallucination case: a finding for the book, not an error."""
    scene = make_scene(random.Random(FRESH_SEED + 1), size=96, pairs=[("dog", "red")])
    result = llava.explain(scene.image, question="What is the color of the cat?")
    assert result.answer in load_world().colours


def test_a_word_outside_the_world_is_out_of_vocabulary(llava):
    scene = make_scene(random.Random(0), size=64)
    with pytest.raises(llavamech.LlavamechError, match="'giraffe' is out of toy-llava's vocabulary"):
        llava.explain(scene.image, question="What is the color of the giraffe?")
