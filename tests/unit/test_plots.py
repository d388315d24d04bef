"""The static figures (llavamech.plots): each public plotting function draws on tiny inputs and returns its
Figure, with one Axes per panel (and one per colour bar); scores given as tensors, arrays or lists alike."""
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from llavamech import plots
from llavamech.stats import Estimate

IMAGE = Image.new("RGB", (32, 24), "white")
E = Estimate(0.5, 0.4, 0.6, 10)
CURVE = Estimate(np.array([0.2, 0.5, 0.7]), np.array([0.1, 0.4, 0.6]), np.array([0.3, 0.6, 0.8]), 10)


def explanation(**changes):
    return SimpleNamespace(**{"view": IMAGE, "patch_grid": [[0.1, 0.2], [0.3, 0.4]], "grid_shape": [2, 2],
                              "top_heads": [{"layer": 1, "head": 0}], "model": "tiny", "question": "q?",
                              "answer": "red", **changes})


def accuracy_frame(mode):
    return pd.DataFrame({"accuracy": [E, E], "chance": [0.5, 1 / 3], "mode": [mode, mode]},
                        index=["existence", "counting"])


# name: (the call, how many Axes its figure has: panels, then one per colour bar)
FIGURES = {
    "patch_overlay": (lambda: plots.patch_overlay(explanation()), 3),
    "head_heatmap": (lambda: plots.head_heatmap(torch.randn(2, 4), "heads"), 2),
    "layer_bars": (lambda: plots.layer_bars({"attn": [0.1, -0.2], "ffn": np.array([0.3, 0.0])}, "layers",
                                            errors=(np.zeros((2, 2)) - 1, np.ones((2, 2)))), 1),
    "image_grid": (lambda: plots.image_grid([IMAGE] * 5, [str(i) for i in range(5)], cols=4), 8),
    "token_grid": (lambda: plots.token_grid(IMAGE, [["a", "b"], ["c", "d"]], "tokens"), 1),
    "estimate_bars": (lambda: plots.estimate_bars({"x": E, "y": E}, "estimates", "share", chance=0.5), 1),
    "by_layer": (lambda: plots.by_layer({"x": CURVE}, "by layer", "rank", chance=0.1), 1),
    "token_bars": (lambda: plots.token_bars(["a", "b", "c"], {"u": [1, 2, 3], "v": torch.ones(3)}, "tokens"), 1),
    "map_grid": (lambda: plots.map_grid([IMAGE] * 3, [np.eye(2)] * 3, ["a", "b", "c"], cols=2), 4),
    "map_grid, shared": (lambda: plots.map_grid([IMAGE] * 3, [np.eye(2)] * 3, ["a", "b", "c"], cols=2,
                                                shared=True), 5),
    "ablation_strip": (lambda: plots.ablation_strip(pd.DataFrame(
        {"Δ log p": [E, E], "_null all": [[0.1, 0.2], [0.0, 0.3]], "p (all heads)": [0.5, 0.04]}, index=[1, 2]),
        "ablation"), 1),
    "head_scatter": (lambda: plots.head_scatter(np.arange(6.0).reshape(2, 3), np.ones((2, 3)), "x", "y", "heads"), 1),
    "accuracy_by_type": (lambda: plots.accuracy_by_type([accuracy_frame("VQA"), accuracy_frame("TQA")], "types"), 1),
    "accuracy_curves": (lambda: plots.accuracy_curves(
        {"run": [{"step": 0, "vqa_colour": 0.2}, {"step": 10, "vqa_colour": 0.9, "vqa_count": 0.5}]}, "vqa_",
        "curves"), 1),
    "deletion_insertion": (lambda: plots.deletion_insertion(
        {"deletion": {"tool": np.array([1.0, 0.5, 0.1]), "random": np.array([1.0, 0.8, 0.6])},
         "insertion": {"tool": np.array([0.1, 0.6, 1.0])}}, np.array([0, 2, 4])), 2),
    "randomisation": (lambda: plots.randomisation(pd.DataFrame({"tool": [E, E], "ig": [E, E]},
                                                               index=["none", "top layer"])), 1),
}


def test_every_public_plotting_function_is_covered():
    drawing = {name for name, f in vars(plots).items() if callable(f) and not name.startswith("_")
               and getattr(f, "__module__", None) == plots.__name__} - {"as_array", "upsample"}
    assert drawing == {name.split(",")[0] for name in FIGURES}


@pytest.mark.parametrize("name", list(FIGURES))
def test_each_figure_draws_its_panels(name):
    draw, n_axes = FIGURES[name]
    fig = draw()
    try:
        assert isinstance(fig, plt.Figure) and len(fig.axes) == n_axes
    finally:
        plt.close(fig)


def test_a_figure_drawn_on_given_axes_uses_them():
    fig, ax = plt.subplots()
    try:
        assert plots.head_heatmap([[0.0, 1.0]], "on ax", ax=ax) is fig and len(fig.axes) == 2   # ax and its colour bar
        assert plots.layer_bars({"attn": [1.0], "ffn": [2.0]}, "on ax", ax=ax) is fig
    finally:
        plt.close(fig)


def test_a_text_only_explanation_has_no_overlay():
    with pytest.raises(ValueError, match="no image"):
        plots.patch_overlay(explanation(view=None))


def test_scores_become_arrays_from_tensors_and_lists_and_maps_are_upsampled_without_overshoot():
    assert np.array_equal(plots.as_array(torch.tensor([[1, 2]])), np.array([[1, 2]]))
    assert plots.as_array([1, 2], np.float32).dtype == np.float32
    up = plots.upsample(np.array([[0, 1], [1, 0]]), (8, 6))
    assert up.shape == (6, 8) and up.min() >= 0
