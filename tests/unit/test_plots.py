"""The static figures (llavamech.plots): each public plotting function draws on tiny inputs and returns its
Figure, with one Axes per panel (and one per colour bar); scores given as tensors, arrays or lists alike."""
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.text import Text
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
    "map_grid": (lambda: plots.map_grid([IMAGE] * 3, [np.eye(2)] * 3, ["a", "b", "c"], cols=2), 5),
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
               and getattr(f, "__module__", None) == plots.__name__} - {"as_array", "grid_of", "same_lengths", "upsample", "shade_map"}
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


def test_the_ablation_strip_names_each_p_value_and_its_holm_adjustment_where_the_table_has_one():
    table = pd.DataFrame({"Δ log p": [E, E], "_null all": [[0.1], [0.2]], "p (all heads)": [0.01, 0.04],
                          "p, Holm (all heads)": [0.02, 0.04]}, index=[1, 2])
    for frame, expected in ((table, "p = 0.01, Holm 0.02 (all heads)"),
                            (table.drop(columns="p, Holm (all heads)"), "p = 0.01 (all heads)")):
        fig = plots.ablation_strip(frame, "ablation")
        try:
            assert fig.axes[0].get_xticklabels()[0].get_text() == f"k = 1\n{expected}"
        finally:
            plt.close(fig)


def test_map_grid_wraps_a_long_caption_to_its_maps_width():
    caption = "bird? → green (truth red)\nhead 1_2; top patch in its box: no"
    fig = plots.map_grid([IMAGE] * 2, [np.eye(2)] * 2, [caption, "short"], cols=2, size=1.5)
    try:
        lines = fig.axes[0].get_title().split("\n")
        assert len(lines) > 2 and max(map(len, lines)) <= 1.5 * 11.5 and fig.axes[1].get_title() == "short"
    finally:
        plt.close(fig)


def test_shade_map_darkens_where_the_map_is_low_and_leaves_the_image_where_it_is_high():
    fig, ax = plt.subplots()
    try:
        plots.shade_map(ax, Image.new("RGB", (40, 40), "red"), np.array([[1.0, 0.0], [0.0, 0.0]]))
        alpha = np.asarray(ax.images[1].get_array())[..., 3]
        assert alpha[:20, :20].min() < 0.01 and alpha[-1, -1] > 0.6 and alpha.max() <= 0.7 + 1e-6
        assert np.asarray(ax.images[0].get_array())[0, 0].tolist() == [255, 0, 0]   # the image's own colour kept
    finally:
        plt.close(fig)


def test_the_ablation_strip_sets_the_chosen_heads_on_the_examples_the_random_sets_ran_on():
    on_control = SimpleNamespace(hit={"Δ log p": np.array([-2.0, -4.0])})
    table = pd.DataFrame({"Δ log p": [E], "_null all": [[0.1, 0.2]], "_control all": [on_control],
                          "p (all heads)": [0.3]}, index=[3])
    fig = plots.ablation_strip(table, "ablation")
    try:
        marker = [line for line in fig.axes[0].lines if line.get_marker() == "o"][0]
        assert marker.get_ydata()[0] == pytest.approx(-3.0)   # the control's examples' mean, not the table's 0.5
    finally:
        plt.close(fig)


def test_accuracy_curves_give_a_type_the_same_colour_in_every_panel():
    history = [{"step": 1, "vqa_position": 0.5, "vqa_colour": 0.9}]
    fig, axes = plt.subplots(1, 2)
    try:
        plots.accuracy_curves({"a": history}, "vqa_", "one", ax=axes[0], types=["colour", "counting", "position"])
        plots.accuracy_curves({"a": [{"step": 1, "vqa_position": 0.4}]}, "vqa_", "two", ax=axes[1],
                              types=["colour", "counting", "position"])
        colours = [[line.get_color() for line in ax.lines] for ax in axes]
        assert colours == [["C0", "C2"], ["C2"]]   # colour C0, position C2 in both, whichever the log lists first
    finally:
        plt.close(fig)


@pytest.mark.parametrize("diagonal", [True, False])
def test_the_labels_of_heads_that_score_alike_print_over_no_name_and_no_dot(diagonal):
    """A cluster of heads that score alike (as chapter 4's idle heads do): each labelled head is a red dot with its
    name in a free corner, and no name covers another name or any head's dot, also after the figure is laid out
    again at another size."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.03, 24), np.linspace(0.3, 1.5, 8)]).reshape(4, 8)
    y = x + np.concatenate([rng.normal(0.05, 0.05, 24), rng.normal(0, 0.1, 8)]).reshape(4, 8)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    plots.head_scatter(x, y, "x", "y", "heads", ax=axes[1], diagonal=diagonal)
    fig.tight_layout()
    fig.canvas.draw()
    ax = axes[1]
    names = [t for t in ax.texts]
    boxes = [Text.get_window_extent(t) for t in names]   # the names alone, not their lines
    dots = ax.transData.transform(np.column_stack([x.ravel(), y.ravel()]))
    assert len(names) == 3 and len(ax.collections[-1].get_offsets()) == 3   # the labelled heads, drawn again in red
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), boxes
    assert not any(box.expanded(1.1, 1.3).contains(*dot) for box in boxes for dot in dots)
    expected = np.argsort(-((y - x) if diagonal else y).ravel())[:3]
    assert sorted(t.get_text() for t in names) == sorted(f"{i // 8}_{i % 8}" for i in expected)
