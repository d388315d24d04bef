"""Loading: every supported class from a saved folder (as a reader's downloaded model would be), half precision,
device_map, and one clear line for what is not supported."""
import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import llavamech
from llavamech.errors import LlavamechError
from llavamech.models import TINY
from llavamech.organism.world import make_scene

Q = "What is the color of the dog?"
CONTEXT = "The dog is white. The cat is black."


@pytest.fixture(scope="module")
def image():
    return make_scene(random.Random(7), size=80).image.crop((0, 0, 80, 56))   # wide: LLaVA-NeXT tiles it


def ask(model, image):
    return model.explain(image, question=Q) if model.is_multimodal else model.explain(question=Q, context=CONTEXT)


def save(model, folder):
    model.hf.save_pretrained(folder)
    (model.processor or model.tokenizer).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("name", [n for n in TINY if n != "tiny-random-llava"])
def test_every_class_loads_from_a_folder_and_explains_the_same(name, tmp_path, image):
    memory = llavamech.load(name)
    folder = llavamech.load(save(memory, tmp_path / name))
    assert type(folder.hf) is type(memory.hf)
    a, b = ask(memory, image), ask(folder, image)
    assert a.answer == b.answer and [a.top_heads[0][k] for k in ("layer", "head")] == [b.top_heads[0][k] for k in ("layer", "head")]
    torch.testing.assert_close(a.head_scores, b.head_scores, atol=1e-5, rtol=0)
    # maps: min-max normalisation magnifies float32 rounding (weights laid out anew by from_pretrained)
    assert np.allclose(a.patch_grid, b.patch_grid, atol=1e-4) and a.grid_shape == b.grid_shape


def test_device_map_auto_gives_the_same_readouts(tmp_path, image):
    folder = save(llavamech.load("tiny-random-llava-qwen2"), tmp_path / "m")
    plain, mapped = llavamech.load(folder), llavamech.load(folder, device_map="auto")
    assert set(getattr(mapped.hf, "hf_device_map", {"": "cpu"}).values()) <= {"cpu", 0, "cuda:0"} and mapped.device
    torch.testing.assert_close(ask(plain, image).head_scores, ask(mapped, image).head_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny-random-llava", "toy-llava"])   # a random LLaVA-NeXT's top two logits tie
def test_bfloat16_tool_agrees_with_float32(name, image):
    """The tool in bfloat16 (weights and activations; readouts in float32) against float32: the same answer and
    best head, head scores within 2 % of the largest score, every patch's map value within 0.01."""
    full, half = ask(llavamech.load(name), image), ask(llavamech.load(name, dtype="bfloat16"), image)
    assert half.answer == full.answer
    assert (half.top_heads[0]["layer"], half.top_heads[0]["head"]) == (full.top_heads[0]["layer"], full.top_heads[0]["head"])
    assert (half.head_scores - full.head_scores).abs().max() <= 0.02 * full.head_scores.abs().max()
    assert np.abs(np.asarray(half.patch_grid) - np.asarray(full.patch_grid)).max() <= 0.01
    assert half.head_scores.dtype == torch.float32


def test_unsupported_models_get_one_line(tmp_path):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)).save_pretrained(gpt2)
    with pytest.raises(LlavamechError, match="not supported: .* gpt2 model"):
        llavamech.load(str(gpt2))
    with pytest.raises(LlavamechError, match="unknown dtype"):
        llavamech.load("tiny-random-llava", dtype="float8")


def test_device_map_without_accelerate_says_so(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "accelerate" else real(n, *a))
    with pytest.raises(LlavamechError, match="device_map needs accelerate"):
        llavamech.load("toy-llava", device_map="auto")


@pytest.mark.parametrize("question, context", [
    ("What is <image> the color of the dog?", None),
    (Q, "The dog is white. <image>"),
    (Q + "</s>", CONTEXT),
    (Q, "<s>" + CONTEXT),
], ids=["image token in the question", "image token in the context", "end of text", "start of text"])
def test_special_tokens_in_user_text_are_refused(question, context):
    """A literal <image> would be expanded into patches that no image fills (or misplace the one that does)."""
    for model, image in ((llavamech.load("tiny-random-vicuna"), None),
                         (llavamech.load("tiny-random-llava"), make_scene(random.Random(0), size=32).image)):
        with pytest.raises(LlavamechError, match="special token") as err:
            model.inputs(image, question=question, context=context)
        assert "\n" not in str(err.value)


def test_a_prompt_longer_than_the_positions_is_refused():
    model = llavamech.load("tiny-random-vicuna")
    with pytest.raises(LlavamechError, match=r"the prompt is \d+ tokens long .* more than the 512 positions"):
        model.explain(question=Q, context=" ".join(["The dog is white."] * 300))


@pytest.mark.parametrize("question", ["What is the color of the dog", "what is the color of the dog?",
                                      "What  is the color of the dog ?", " What is the color\nof the dog?  ",
                                      "WHAT IS THE COLOR OF THE dog?"])
def test_the_colour_question_is_recognised_in_any_spelling(question):
    """The answer prefix is what makes the colour the next token: it must not hang on the '?'. Every spelling is asked
    in the canonical wording, so it gets the canonical answer (the animal as written: case may name a word)."""
    model = llavamech.load("tiny-random-vicuna")
    canonical = f"USER: {CONTEXT}\n{Q}\nASSISTANT: The color of the dog is"
    assert model.prompt(Q, CONTEXT) == canonical
    assert model.prompt(question, CONTEXT) == canonical
    assert model.prompt("Why is the dog here?").endswith("ASSISTANT:")   # a question of no type: no prefix


def test_colour_is_asked_as_color_of_a_model_that_knows_only_color_and_capitals_are_named():
    model = llavamech.load("tiny-random-vicuna")
    assert not model.knows("colour")
    assert model.prompt("What is the colour of the dog?", CONTEXT) == model.prompt(Q, CONTEXT)
    with pytest.raises(LlavamechError, match=r"'Dog' is out of .* \(it knows 'dog': its words are lower-case\)"):
        model.explain(question="What is the color of the Dog?", context=CONTEXT)


@pytest.mark.parametrize("question, canonical, prefix", [
    ("is there an elephant", "Is there a elephant?", " The answer is"),
    ("Which animal is  red", "Which animal is red?", " The red animal is the"),
    ("how many animals are there", "How many animals are there?", " The number of animals is"),
    ("Is the dog on the left or on the right", "Is the dog on the left or on the right?", " The dog is on the"),
])
def test_every_question_type_gets_its_wording_and_answer_prefix(question, canonical, prefix):
    model = llavamech.load("tiny-random-vicuna")
    assert model.prompt(question, image=True) == f"USER: <image>\n{canonical}\nASSISTANT:{prefix}"


def test_model_paths_to_files_are_refused(tmp_path):
    folder = save(llavamech.load("tiny-random-vicuna"), tmp_path / "m")
    for file in (tmp_path / "m" / "config.json", next((tmp_path / "m").glob("*.safetensors"))):
        with pytest.raises(LlavamechError, match="is a file; give the folder that holds it") as err:
            llavamech.load(str(file))
        assert folder in str(err.value)
