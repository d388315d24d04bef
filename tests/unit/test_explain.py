"""The paper's patch tool (llavamech.explain), read against the attribution it is built on: the map is the best
head's per-position Imp at the image positions, min-max normalised then divided by the sum, row-major on the grid;
the answer is the traced top-1 token; a text-only question has no map. (Its JSON through the CLI: tests/cli.)"""
import torch

from llavamech import attribution as A
from llavamech.explain import Explanation, explain, normalise_map
from tests.conftest import tiny

Q = "What is the color of the dog?"


def test_normalise_map_is_min_max_then_divided_by_the_sum():
    assert torch.allclose(normalise_map(torch.tensor([1.0, 3.0, 2.0])), torch.tensor([0.0, 2 / 3, 1 / 3]))
    assert torch.equal(normalise_map(torch.full((4,), 7.0)), torch.full((4,), 0.25))   # constant: uniform


def test_the_map_is_the_best_heads_normalised_position_scores(llava, scene):
    x = explain(llava, scene.image, Q)
    trace, best = x.trace, x.top_heads[0]
    assert x.grid_shape == list(trace.positions.grid_shape) and x.answer_token_id == trace.top_token
    assert x.top_heads == A.top_heads(A.head_scores(trace), 10) and torch.equal(x.head_scores, A.head_scores(trace))
    image = trace.positions.image_positions
    expected = normalise_map(A.position_scores(trace, best["layer"], best["head"], positions=image))
    assert torch.allclose(torch.tensor(x.patch_grid).flatten(), expected, atol=1e-6)
    summed = explain(llava, scene.image, Q, map_heads=2)     # two heads: their maps summed, normalised again
    second = normalise_map(A.position_scores(trace, x.top_heads[1]["layer"], x.top_heads[1]["head"], positions=image))
    assert torch.allclose(torch.tensor(summed.patch_grid).flatten(), normalise_map(expected + second), atol=1e-6)
    assert list(x.to_dict()) == list(Explanation.CONTRACT)
    assert x.view.size == (32, 32)      # the image as the tiny Llava sees it: its 32 px centre crop


def test_a_text_only_question_has_no_map():
    x = explain(tiny("llama"), question=Q, context="The dog is white. The cat is black.")
    assert x.patch_grid == [] and x.grid_shape == [0, 0] and x.view is None and x.answer
