"""A hostile user of the Python API: every argument that cannot work is one LlavamechError line naming it, never an
IndexError deep in a hook, a silent no-op, or a slice that quietly drops what was asked for."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llavamech import attribution, lens, patches
from llavamech.errors import LlavamechError
from llavamech.examples import load_examples, toy_examples
from llavamech.imaging import load_image
from llavamech.interventions import ablated
from llavamech.models import load

from tests.conftest import tiny

Q = "What is the color of the dog?"


@pytest.fixture(scope="module")
def toy():
    return load("toy-llava")


@pytest.fixture(scope="module")
def trace(toy, scene):
    return toy.trace(scene.image, Q, all_positions=True)


def one_line(call, match: str):
    with pytest.raises(LlavamechError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def answer_prob(model, scene, **ablation):
    with ablated(model, **ablation):
        return model.explain(scene.image, Q).answer_prob


@pytest.mark.parametrize("ablation, match", [
    ({"heads": [(1, 8)]}, r"the head of \(1, 8\) must be a whole number from 0 to 7 \(toy-llava has 8 heads"),
    ({"heads": [(99, 0)]}, r"the layer of \(99, 0\) must be a whole number from 0 to 3"),
    ({"heads": [(1, -1)]}, "from 0 to 7"),
    ({"heads": [1, 2]}, r"1 is not a \(layer, head\) pair"),
    ({"heads": "1_4"}, "must be a list of"),
    ({"ffn_layers": [9]}, "ffn_layers must be a whole number from 0 to 3"),
    ({"attn_layers": [-1]}, "attn_layers must be"),
    ({"patches": [99]}, r"holds a patch outside 0..63"),
    ({"how": "Zero"}, "how must be 'zero' or 'mean'"),
    ({"how": "mean"}, "mean ablation needs means="),
])
def test_an_ablation_of_what_does_not_exist_is_refused_not_a_silent_no_op(toy, scene, ablation, match):
    one_line(lambda: answer_prob(toy, scene, **ablation), match)


def test_heads_as_top_heads_gives_them_ablate_as_pairs(toy, scene):
    x = toy.explain(scene.image, Q)
    pairs = [(h["layer"], h["head"]) for h in x.top_heads[:2]]
    assert answer_prob(toy, scene, heads=x.top_heads[:2]) == answer_prob(toy, scene, heads=pairs) != x.answer_prob


@pytest.mark.parametrize("word, match", [("Brown", "it knows 'brown'"), ("dark brown", "takes one word"),
                                         ("", "takes one word"), ("unicorn", "'unicorn' has no token")])
def test_token_id_refuses_what_would_score_another_token(toy, word, match):
    one_line(lambda: toy.token_id(word), match)
    assert toy.token_id("brown") == toy.tokenizer.convert_tokens_to_ids("brown")


def test_explain_of_several_heads_says_it_is_top_k(toy, scene):
    several = toy.explain(scene.image, Q, map_heads=3)
    top_k = toy.explain(scene.image, Q, method="top-k", heads=3)
    assert several.method == "top-k" and np.allclose(several.patch_grid, top_k.patch_grid, atol=1e-6)
    assert toy.explain(scene.image, Q).method == "tool"
    assert len(toy.explain(scene.image, Q, top_k=2, map_heads=5).top_heads) == 2   # top_k lists, map_heads sums


@pytest.mark.parametrize("options, match", [
    ({"top_k": 0}, "top_k must be a whole number of at least 1"), ({"top_k": -1}, "top_k"),
    ({"map_heads": 0}, "map_heads must be a whole number from 1 to 32"), ({"map_heads": 33}, "from 1 to 32"),
    ({"map_heads": 2.5}, "map_heads"), ({"method": "attention", "top_k": 3}, "the attention method takes no "),
    ({"method": "tool", "seed": 1}, "the tool method takes top_k, map_heads, not seed"),
    ({"method": "tool", "heads": 3}, "not heads"), ({"method": "top-k", "heads": "3"}, "heads must be a whole"),
    ({"method": "top-k", "heads": True}, "heads must be a whole"), ({"method": "random", "seed": -1}, "seed must"),
    ({"method": "ig", "ig_steps": 0}, "ig_steps must"), ({"method": "ablation", "means": "x"}, "needs means=activation_means"),
    ({"method": ["tool"]}, "unknown method"),
    ({"method": "top-k", "heads": [(1, 2)]}, r"heads must be one whole number, not a list: got \[\(1, 2\)\]"),
    ({"map_heads": (3,)}, "map_heads must be one whole number, not a list"),
])
def test_explain_options_that_cannot_work_are_one_line(toy, scene, options, match):
    one_line(lambda: toy.explain(scene.image, Q, **options), match)


def test_a_question_without_image_or_context_is_refused(toy):
    one_line(lambda: toy.explain(question=Q), "give an image, or the facts as context")
    one_line(lambda: tiny("llama").explain(question=Q), "text-only model: give the facts as context")


def test_patch_maps_needs_an_image_and_takes_one_method_by_name(toy, scene):
    one_line(lambda: patches.patch_maps(toy, None, Q), "give an image")
    one_line(lambda: patches.patch_maps(toy, scene.image, Q, methods=None), "methods must be a list")
    assert list(patches.patch_maps(toy, scene.image, Q, methods="tool")) == ["tool"]


def test_loading_a_tiny_model_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load("tiny-random-llava")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("arguments, match", [
    ({"device": 0}, r"device must be a name: cpu, cuda, cuda:N, mps or auto \(not 0\)"),
    ({"device_map": "bogus"}, "device_map must be \"auto\" or a dict"),
    ({"dtype": ["float32"]}, "unknown dtype"),
    ({"name": "gpt-17"}, r"unknown model 'gpt-17'; use an organism \(toy-llava, .*toy-llava-multi"),
])
def test_load_arguments_that_cannot_work_are_one_line(arguments, match):
    one_line(lambda: load(**arguments), match)


def test_load_takes_a_path_a_torch_device_and_a_trailing_slash(tmp_path):
    model = load("tiny-random-vicuna", device=torch.device("cpu"))
    model.hf.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    assert load(tmp_path).anatomy.n_layers == model.anatomy.n_layers
    assert load("toy-llava/").name == "toy-llava"


def test_repeated_question_marks_keep_the_type_and_a_type_the_model_never_learnt_is_named(toy, scene):
    assert toy.explain(scene.image, Q + "??").question_type == "colour"
    one_line(lambda: toy.explain(scene.image, "is there a rabbit"),
             "toy-llava does not know existence questions: 'Is' of their wording .*toy-llava-multi")


def test_an_unknown_word_is_the_askers_not_the_chat_templates():
    for kind in ("mistral3", "gemma3", "qwen-vl"):
        model = tiny(kind, 2, 0, {"qwen-vl": "2", "mistral3": "mistral"}.get(kind, "llama"))
        one_line(lambda: model.inputs(question="What is the color of the unicorn?", context="The dog is red."),
                 "'unicorn' is out of")


def test_a_mistral3_image_of_one_token_is_one_line(scene):
    model = tiny("mistral3", 2, 0, "mistral")
    one_line(lambda: model.inputs(Image.new("RGB", (16, 16)), Q), "is one image token .* larger than 16 px")
    assert model.inputs(Image.new("RGB", (17, 17)), Q)["input_ids"].shape[0] == 1


@pytest.mark.parametrize("path, match", [("map", "give a file ending in .png"), ("map.gif", "ending in"),
                                         ("", "must be a file name"), ("no/such/folder/map.png", "does not exist"),
                                         (".", "is a folder")])
def test_save_map_refuses_a_path_it_cannot_write(toy, scene, path, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line(lambda: toy.explain(scene.image, Q).save_map(path), match)


def test_save_map_expands_the_home_folder_and_names_what_it_wrote(toy, scene, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    written = toy.explain(scene.image, Q).save_map("~/map.PNG")
    assert written == tmp_path / "map.PNG" and written.read_bytes().startswith(b"\x89PNG")
    text = tiny("llama").explain(question=Q, context="The dog is white.")
    one_line(lambda: text.save_map(tmp_path / "t.png"), "text-only input")


def test_save_map_never_writes_over_the_image_it_explains(toy, scene, tmp_path):
    image = tmp_path / "scene.png"
    scene.image.save(image)
    before = image.read_bytes()
    one_line(lambda: toy.explain(str(image), Q).save_map(image), "is the image this map explains")
    assert image.read_bytes() == before


@pytest.mark.parametrize("context", [5, ["The dog is white."]])
def test_a_context_that_is_not_text_is_refused_with_or_without_an_image(toy, scene, context):
    one_line(lambda: tiny("llama").explain(question=Q, context=context), "the context must be text")
    one_line(lambda: toy.explain(scene.image, Q, context=context), "the context must be text")


@pytest.mark.parametrize("call, match", [
    (lambda t: attribution.head_scores(t, token=38), "token must be a whole number from 0 to 37"),
    (lambda t: attribution.head_scores(t, token="brown"), "token must be"),
    (lambda t: attribution.position_scores(t, 99, 0), "layer must be a whole number from 0 to 3"),
    (lambda t: attribution.position_scores(t, 1, 8), "head must be a whole number from 0 to 7"),
    (lambda t: attribution.position_scores(t, 1, 0, positions=[1000]), "positions must be sequence indices"),
    (lambda t: attribution.neuron_scores(t, 1, chunk=0), "chunk must be"),
    (lambda t: attribution.top_heads(attribution.head_scores(t)[0]), r"\[layers, heads\] score table"),
    (lambda t: attribution.top_heads(attribution.head_scores(t), 0), "k must be"),
    (lambda t: lens.top_tokens(t.anatomy, None, t.final_resid, k=1000), "k must be a whole number from 1 to 38"),
    (lambda t: lens.token_ranks(t.anatomy, t.final_resid, -1), "token must be"),
    (lambda t: lens.important_positions(t, [], 3, "image"), "heads is empty"),
    (lambda t: lens.important_positions(t, [(1, 0)], 0, "image"), "k must be"),
    (lambda t: lens.random_positions(t, 3, "image", None), "seeded torch.Generator"),
    (lambda t: lens.random_positions(t, 100, "image", torch.Generator()), "asked for 100 image positions"),
    (lambda t: lens.positions_of_kind(t, "pixels"), "kind must be"),
    (lambda t: lens.vocab_scores(t.anatomy, t.final_resid, "bogus"), "onto must be"),
    (lambda t: lens.position_ranks(None, t, torch.tensor([0]), 1, layers=[9]), "layers must be"),
])
def test_readouts_of_what_does_not_exist_are_one_line(trace, call, match):
    one_line(lambda: call(trace), match)


def test_readouts_take_top_heads_dicts_numpy_scores_and_argmax_tokens(toy, trace):
    scores = attribution.head_scores(trace)
    assert attribution.top_heads(scores.numpy(), 3) == attribution.top_heads(scores, 3)
    best = attribution.top_heads(scores, 2)
    pairs = [(h["layer"], h["head"]) for h in best]
    assert torch.equal(lens.important_positions(trace, best, 3, "image"),
                       lens.important_positions(trace, pairs, 3, "image"))
    assert torch.equal(attribution.head_scores(trace, token=trace.logits.argmax()), scores)
    rows = lens.patch_top_tokens(toy, trace, layer=4)
    one_line(lambda: lens.patch_top_tokens(toy, trace, layer=5), "layer must be a whole number from 0 to 4")
    assert len(rows) * len(rows[0]) == len(trace.positions.image_positions)


@pytest.mark.parametrize("call, match", [
    (lambda: toy_examples(2.5), "n must be a whole number of at least 1, got 2.5"),
    (lambda: toy_examples(2, seed=-1), "seed must be"),
    (lambda: toy_examples(2, animals=(3, 2)), "animals: the most must be"),
    (lambda: toy_examples(2, animals=(0, 0)), "animals: the least must be"),
    (lambda: toy_examples(2, animals=3), r"animals must be \(least, most\)"),
    (lambda: load_examples("toy", 2, needs=("nope",)), "needs must be a tuple of fields among colour, box, facts"),
    (lambda: load_examples("toy", 2, needs="colour"), "needs must be a tuple"),
    (lambda: load_examples(Path("/"), 2), "is a folder; give the example file"),
])
def test_example_arguments_that_cannot_work_are_one_line(call, match):
    one_line(call, match)


@pytest.mark.parametrize("image, match", [("", "the image path is empty"),
                                          ("https://example.com/dog.png", "is a web address"),
                                          (Image.new("RGB", (0, 4)), "is 0 x 4 pixels: empty")])
def test_image_arguments_that_cannot_work_are_one_line(image, match):
    one_line(lambda: load_image(image), match)


def test_an_image_path_may_start_at_the_home_folder(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    scene.image.save(tmp_path / "scene.png")
    assert np.array_equal(np.asarray(load_image("~/scene.png")), np.asarray(scene.image.convert("RGB")))
