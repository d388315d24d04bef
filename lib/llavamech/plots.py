"""Static figures (presentation only). Every figure names the model that produced it in its title. Scores may be
given as NumPy arrays, lists or tensors on any device."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
from matplotlib.text import OffsetFrom
import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import validate
from .errors import LlavamechError
from .stats import Estimate, bootstrap


as_array = validate.host_array   # scores as a NumPy array, from a tensor on any device, an array or a list


def grid_of(name: str, values) -> np.ndarray:
    """A [rows, cols] table of numbers (a patch map, head scores), or one line saying what it is instead."""
    try:
        arr = as_array(values, np.float64)
    except (TypeError, ValueError):
        raise LlavamechError(f"{name} must be a [rows, cols] table of numbers") from None
    if arr.ndim != 2 or not arr.size:
        hint = " (per-example scores? average them with .mean(0) first)" if arr.ndim == 3 else ""
        raise LlavamechError(f"{name} must be a [rows, cols] table of numbers, not shape {arr.shape}{hint}")
    return arr


def same_lengths(what: str, **lists) -> int:
    """The common length of lists drawn together (images and their captions), at least one; else one line."""
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise LlavamechError(f"{what}: " + ", ".join(f"{n} {name}" for name, n in lengths.items())
                             + "; give one of each per panel")
    if not next(iter(lengths.values())):
        raise LlavamechError(f"{what}: nothing to draw")
    return next(iter(lengths.values()))


def upsample(grid, size: tuple[int, int]) -> np.ndarray:
    """A [rows, cols] map resized bicubically to `size` (width, height), as the paper draws it; the cubic's
    overshoot below zero is clipped (scores are normalised to be non-negative)."""
    arr = grid_of("the map", grid).astype(np.float32)
    return np.clip(np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.BICUBIC)), 0, None)


def shade_map(ax, view, grid, scale: float | None = None) -> None:
    """Draw a [rows, cols] map over the image on `ax`, bicubically upsampled: the image keeps its own colours where
    the map is high and is darkened where it is low (a coloured heat map would tint the very colours the questions
    ask about). `scale`: the value drawn at full brightness (default: the map's own largest). Scores below zero
    (a patch that worked against the answer, in the ablation and gradient maps) are drawn as zero: fully dark."""
    up = upsample(grid, view.size)
    scale = float(up.max()) if scale is None else scale
    shade = np.zeros((*up.shape, 4), np.float32)
    shade[..., 3] = 0.7 * (1 - np.sqrt(np.clip(up / scale, 0, 1))) if scale > 0 else 0.7   # sqrt: mid values seen
    ax.imshow(view)
    ax.imshow(shade)
    ax.axis("off")


def _shade_bar(fig, axes, top: float, label: str, height: float | None = None, **kwargs):
    """The colour bar of `shade_map`'s shading, from dark (0) to the image's own colours (`top`). `height`: the
    bar's length in inches, where known, to which its label is wrapped (a label longer than its bar overhangs)."""
    colors = plt.matplotlib.colors
    bar = plt.cm.ScalarMappable(colors.PowerNorm(0.5, 0, top),
                                colors.LinearSegmentedColormap.from_list("shade", [(0.3, 0.3, 0.3), (1, 1, 1)]))
    label = f"{label} (square-root scale)"
    if height is not None:   # about 0.06 inch a character of the 8 pt label
        label = textwrap.fill(label, max(12, int(height / 0.06)))
    out = fig.colorbar(bar, ax=axes, **kwargs)
    out.set_label(label, fontsize=8)
    return out


def patch_overlay(explanation, title: str | None = None, ax=None):
    """The image as the model saw it, beside the patch map drawn over it (`shade_map`)."""
    if not all(hasattr(explanation, a) for a in ("view", "patch_grid", "grid_shape")):
        raise LlavamechError(f"patch_overlay draws an Explanation (model.explain(...)), not {type(explanation).__name__}")
    if ax is not None and (not hasattr(ax, "__len__") or len(ax) != 2):
        raise LlavamechError("ax must be two axes, e.g. plt.subplots(1, 2)[1]: the image, and the map over it")
    view = explanation.view
    if view is None:
        raise LlavamechError("this explanation has no image (text-only input): there is no patch map to draw")
    fig, axes = (plt.subplots(1, 2, figsize=(7, 3.6)) if ax is None else (ax[0].figure, ax))
    axes[0].imshow(view)
    axes[0].set_title("what the model sees")
    axes[0].axis("off")
    shade_map(axes[1], view, explanation.patch_grid)
    rows, cols = explanation.grid_shape
    top, method = explanation.top_heads[0], getattr(explanation, "method", "tool")
    axes[1].set_title(f"head {top['layer']}_{top['head']} over {rows}x{cols} patches" if method == "tool"
                      else f"{method} scores over {rows}x{cols} patches")
    _shade_bar(fig, axes[1], 1.0, "share of the map's largest value", fraction=0.046, pad=0.04)
    fig.suptitle(title or f"{explanation.model}: {explanation.question!r} -> {explanation.answer!r}")
    return fig


def head_heatmap(scores: torch.Tensor, title: str, label: str = "log-prob increase", ax=None,
                 lim: float | None = None):
    """A layers x heads heat map of head scores, layer 0 at the bottom, its colours spanning ±`lim` (default: the
    largest |score|; give panels one `lim` so that a colour means one value across them)."""
    scores = grid_of("head scores", scores)
    fig, ax = plt.subplots(figsize=(max(4, scores.shape[1] * 0.35 + 2), max(2.5, scores.shape[0] * 0.35 + 1.2))) \
        if ax is None else (ax.figure, ax)
    lim = lim or float(np.abs(scores).max()) or 1.0
    im = ax.imshow(scores, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(scores.shape[1]))
    ax.set_yticks(range(scores.shape[0]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label)
    return fig


def layer_bars(scores: dict, title: str, ax=None, errors=None, ylabel: str = "log-prob increase"):
    """Attention and FFN layer scores side by side per layer; `errors` = (low, high), each [2, L] (row 0
    attention, row 1 FFN), draws 95 % intervals."""
    if not isinstance(scores, dict) or {"attn", "ffn"} - set(scores):
        raise LlavamechError("layer_bars draws {\"attn\": [L], \"ffn\": [L]} (attribution.layer_scores' dict)")
    shapes = {name: as_array(scores[name]).shape for name in ("attn", "ffn")}
    if len(set(shapes.values())) > 1 or len(shapes["attn"]) != 1:
        raise LlavamechError(f"layer_bars needs one score per layer for attention and FFN alike, got shapes {shapes}")
    n = shapes["attn"][0]
    if errors is not None:
        if not isinstance(errors, (tuple, list)) or len(errors) != 2:
            raise LlavamechError("errors must be (low, high), each [2, layers] (row 0 attention, row 1 FFN)")
        errors = [as_array(bound) for bound in errors]
        if any(bound.shape != (2, n) for bound in errors):
            raise LlavamechError(f"errors must be (low, high), each [2, {n}] (row 0 attention, row 1 FFN), "
                                 f"got shapes {[bound.shape for bound in errors]}")
    fig, ax = plt.subplots(figsize=(6, 3)) if ax is None else (ax.figure, ax)
    x = np.arange(n)
    for row, (name, label, shift) in enumerate((("attn", "attention", -0.2), ("ffn", "FFN", 0.2))):
        y = as_array(scores[name])
        err = None if errors is None else np.abs(np.stack([y - errors[0][row], errors[1][row] - y]))
        ax.bar(x + shift, y, 0.4, yerr=err, capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def image_grid(images: list, captions: list[str], cols: int = 4, size: float = 2.2):
    """Images with captions in a grid (e.g. sample scenes of the toy world)."""
    same_lengths("image_grid", images=images, captions=captions)
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise LlavamechError(f"cols must be a whole number of at least 1, got {cols!r}")
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.1))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    width = max(10, int(size * 11.5))   # characters of an 8 pt caption that fit over an image `size` inches wide
    for ax, im, cap in zip(np.atleast_1d(axes).flat, images, captions):
        ax.imshow(im)
        ax.set_title(textwrap.fill(cap, width), fontsize=8)
    fig.tight_layout()
    return fig


def token_grid(image, tokens: list[list[str]], title: str, ax=None, fontsize: float = 9):
    """The image with each patch's token written on it (a [rows][cols] grid of strings); at 9 pt over 6.5-inch
    grids (a full-width page cell) a label is about 11 px tall and the longest word fits its patch."""
    if not len(tokens) or not len(tokens[0]) or len({len(row) for row in tokens}) > 1:
        raise LlavamechError("tokens must be a [rows][cols] grid of strings, every row as long, at least one")
    fig, ax = plt.subplots(figsize=(5.6, 5.6)) if ax is None else (ax.figure, ax)
    ax.imshow(image)
    rows, cols = len(tokens), len(tokens[0])
    w, h = image.size
    for r in range(rows):
        for c in range(cols):
            ax.text((c + 0.5) * w / cols, (r + 0.5) * h / rows, tokens[r][c], ha="center", va="center",
                    fontsize=fontsize, color="white", bbox=dict(boxstyle="round,pad=0.1", fc="black", alpha=0.7, lw=0))
    for i in range(1, rows):
        ax.axhline(i * h / rows - 0.5, color="white", lw=0.3, alpha=0.6)
    for i in range(1, cols):
        ax.axvline(i * w / cols - 0.5, color="white", lw=0.3, alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return fig


def estimate_bars(estimates: dict, title: str, ylabel: str, chance: float | None = None, ax=None, colors=None,
                  chance_label: str = "chance"):
    """Bars of means with their 95 % intervals ({label: Estimate}), and a dashed line at `chance` (named
    `chance_label`, e.g. "uniform attention")."""
    if not estimates or not all(isinstance(e, Estimate) and not np.ndim(e.mean) for e in estimates.values()):
        raise LlavamechError("estimate_bars draws {label: Estimate of one mean} (stats.bootstrap of [n] values)")
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(estimates) + 1.5), 3)) if ax is None else (ax.figure, ax)
    labels = list(estimates)
    means = np.array([estimates[k].mean for k in labels])
    err = np.array([[estimates[k].mean - estimates[k].low for k in labels],
                    [estimates[k].high - estimates[k].mean for k in labels]])
    ax.bar(range(len(labels)), means, yerr=err, capsize=3, color=colors or [f"C{i % 10}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=0.8, label=f"{chance_label} {chance:.3g}")
    ax.plot([], [], color="k", marker="|", markersize=9, ls="", label="mean, 95 % CI")   # say what the bars are
    ax.margins(y=0.3)   # headroom above the whiskers, where the legend goes rather than over a bar
    ax.legend(fontsize=8, loc="best")
    ax.axhline(0, color="k", lw=0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return fig


def by_layer(curves: dict, title: str, ylabel: str, chance: float | None = None, ax=None):
    """Line per label of an array-valued Estimate over layers ({label: Estimate [L+1]}), with its 95 % band."""
    if not curves or not all(isinstance(e, Estimate) and np.ndim(e.mean) == 1 for e in curves.values()):
        raise LlavamechError("by_layer draws {label: Estimate over layers} (stats.bootstrap of [n, layers] values)")
    fig, ax = plt.subplots(figsize=(5, 3)) if ax is None else (ax.figure, ax)
    for i, (label, est) in enumerate(curves.items()):
        x = np.arange(len(est.mean))
        ax.plot(x, est.mean, "o-", ms=3, color=f"C{i}", label=label)
        ax.fill_between(x, est.low, est.high, color=f"C{i}", alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=0.8, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(["emb"] + [str(l) for l in x[1:-1]] + ["final"] if len(x) > 2 else list(map(str, x)), fontsize=8)
    ax.set_xlabel("input of layer (emb = the embeddings, final = the last residual)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)   # below: off the curves
    return fig


def token_bars(tokens: list[str], scores: dict, title: str, ax=None):
    """Per-position scores over a prompt's tokens, one bar series per label ({label: [S]})."""
    if not len(tokens) or not scores or any(len(as_array(v)) != len(tokens) for v in scores.values()):
        raise LlavamechError(f"token_bars needs one score per token ({len(tokens)} tokens) in every series, and at "
                             "least one series")
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(tokens)), 3.2)) if ax is None else (ax.figure, ax)
    width = 0.8 / len(scores)
    for i, (label, values) in enumerate(scores.items()):
        ax.bar(np.arange(len(tokens)) + (i - (len(scores) - 1) / 2) * width, as_array(values), width, label=label)
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels(tokens, rotation=90, fontsize=9)
    ax.set_xlim(-0.6, len(tokens) - 0.4)
    ax.axhline(0, color="k", lw=0.4)
    ax.set_ylabel("per-position Imp")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def map_grid(views: list, grids: list, captions: list[str], cols: int = 4, size: float = 2.4,
             shared: bool = False):
    """Several patch maps, each drawn over the image the model saw (`shade_map`). `shared`: one scale for every map
    (maps of one method, comparable); otherwise each map is scaled to its own largest value (maps of different
    methods, in different units). Either way one colour bar says how bright reads. Captions are wrapped to their map's width, so neighbours never touch."""
    same_lengths("map_grid", views=views, grids=grids, captions=captions)
    grids = [grid_of("each map", g) for g in grids]
    rows = -(-len(views) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.2), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    top = max(float(np.max(as_array(g, np.float32))) for g in grids) if shared else None
    width = max(10, int(size * 11.5))   # characters of an 8 pt caption that fit over a map `size` inches wide
    for ax, view, grid, cap in zip(axes.flat, views, grids, captions):
        shade_map(ax, view, grid, top)
        ax.set_title("\n".join(textwrap.fill(line, width) for line in cap.split("\n")), fontsize=8)
    _shade_bar(fig, axes.ravel().tolist(), top if shared else 1.0,
               "map value, one scale" if shared else "share of each map's own largest value", shrink=0.7, pad=0.02,
               height=0.7 * rows * size * 1.2)
    return fig


def ablation_strip(table, title: str, ax=None, label: str = "top-k heads", ylabel: str = "Δ log p(true colour)"):
    """Per row (k): Δ log p of each random head set (grey dots: from all heads; blue: from the chosen heads' own
    layers, where the table has that control) against the chosen heads (red, 95 % interval; on the examples the
    random sets ran on, where the table keeps its `Control`s, as the p-value compares them), with each control's
    permutation p-value under the row, Holm-adjusted over the table beside it where the table carries that column."""
    if not isinstance(table, pd.DataFrame) or not ({"top-k Δ log p", "Δ log p"} & set(table.columns)):
        raise LlavamechError("ablation_strip draws a head-ablation table (interventions.head_ablation_test(...).table "
                             "or transfer.head_set_row rows), a DataFrame with a 'top-k Δ log p' or 'Δ log p' column")
    fig, ax = plt.subplots(figsize=(max(4.5, 2.6 * len(table) + 1.5), 3.4)) if ax is None else (ax.figure, ax)
    rng = np.random.default_rng(0)
    controls = [(c, name, colour, shift) for c, name, colour, shift in
                (("all", "all heads", "grey", -0.17), ("same-layer", "same layers", "C0", 0.17))
                if f"_null {c}" in table.columns]
    value = "top-k Δ log p" if "top-k Δ log p" in table.columns else "Δ log p"
    for i, (k, row) in enumerate(table.iterrows()):
        for c, name, colour, shift in controls:
            draws = row[f"_null {c}"]
            ax.scatter(i + shift + rng.uniform(-0.1, 0.1, len(draws)), draws, s=6, color=colour, alpha=0.5,
                       label=f"random sets ({name})" if i == 0 else None)
        # the chosen set on the examples the random sets ran on, where the table has them: like for like
        control = next((row[f"_control {c}"] for c, *_ in controls if f"_control {c}" in table.columns), None)
        est = row[value] if control is None else bootstrap(control.hit["Δ log p"])
        ax.errorbar(i, est.mean, yerr=[[est.mean - est.low], [est.high - est.mean]], fmt="o", color="C3", capsize=4,
                    zorder=3, label=(f"{label} (95 % CI" + (", same examples)" if control is not None else ")"))
                    if i == 0 else None)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([(f"k = {k}" if isinstance(k, (int, np.integer)) else textwrap.fill(str(k), 34)) + "".join(
        "\n" + _p_label(row, name) for _, name, _, _ in controls) for k, row in table.iterrows()], fontsize=8)
    ax.axhline(0, color="k", lw=0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _p_label(row, name: str) -> str:
    holm = row.get(f"p, Holm ({name})")
    return f"p = {row[f'p ({name})']:.3g}" + (f", Holm {holm:.3g}" if holm is not None else "") + f" ({name})"


def head_scatter(x, y, xlabel: str, ylabel: str, title: str, label_top: int = 3, ax=None, diagonal: bool = True,
                 names: list[str] | None = None):
    """One dot per head ([L, H] arrays, named layer_head; or flat, named by `names`), the `label_top` heads furthest
    above the diagonal (or highest in y without one) labelled."""
    x, y = as_array(x, float), as_array(y, float)
    if x.shape != y.shape or not x.size:
        raise LlavamechError(f"head_scatter needs one x and one y per head, got shapes {x.shape} and {y.shape}")
    fig, ax = plt.subplots(figsize=(4.4, 3.8)) if ax is None else (ax.figure, ax)
    if names is None:
        names = [f"{l}_{h}" for l in range(x.shape[0]) for h in range(x.shape[1])] if x.ndim == 2 else \
            [str(i) for i in range(x.size)]
    x, y = x.ravel(), y.ravel()
    ax.scatter(x, y, s=16, color="C0", alpha=0.75)
    if diagonal:
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.margins(0.08)
    labelled = np.argsort(-(y - x if diagonal else y))[:label_top]
    ax.scatter(x[labelled], y[labelled], s=22, color="C3", zorder=3)
    _label_row(ax, x, y, labelled, names)
    ax.tick_params(labelsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    return fig


def _label_row(ax, x, y, labelled, names) -> None:
    """Name the `labelled` points in a row along the top or bottom edge of the axes, whichever has fewer other
    points near it, each name joined to its (red) point by a line: beside a cluster of heads that score alike, names set
    next to their points print over each other and over their neighbours' dots. The names run in the order of the
    points' x, starting above (or below) the leftmost of them, so that the lines run short and nearly upright and do
    not cross; the row is placed in points from the axes' corner, so it keeps its spacing when the figure is laid
    out again, and each line leaves its name on the side away from the edge, crossing no other name."""
    inside = ax.transAxes.inverted().transform(ax.transData.transform(np.column_stack([x, y])))
    others = np.delete(inside[:, 1], labelled)   # the points the lines must pass
    top = np.sum(others > 0.75) <= np.sum(others < 0.25)   # the emptier edge; the top on a tie
    order = sorted(labelled, key=lambda i: x[i])
    step = 5.5 * max(len(names[i]) for i in labelled) + 10   # points: a 9-point name's width and a gap
    width = ax.get_window_extent().width * 72 / ax.figure.dpi
    start = inside[order[0], 0] * width - step / 2   # the first name centred over its point
    start = float(np.clip(start, 6, max(6, width - step * len(order) - 6)))   # the whole row inside the axes
    for rank, i in enumerate(order):
        ax.annotate(names[i], (x[i], y[i]), xytext=(start + step * rank, -8 if top else 8),
                    textcoords=OffsetFrom(ax, (0.0, 1.0 if top else 0.0), unit="points"), fontsize=9, color="C3",
                    ha="left", va="top" if top else "bottom",
                    arrowprops=dict(arrowstyle="-", color="C3", lw=0.6, alpha=0.8, shrinkA=2, shrinkB=3,
                                    relpos=(0.5, 0.0 if top else 1.0)))


def accuracy_by_type(tables: list, title: str, ax=None):
    """Accuracy per question type, one bar series per table (e.g. VQA, TQA: `question_study.accuracy` frames), with
    95 % intervals and each bar's chance level (its own example set's, which can differ between the series) as a
    short dashed line across that bar."""
    if not len(tables):
        raise LlavamechError("accuracy_by_type draws at least one question_study.accuracy table")
    fig, ax = plt.subplots(figsize=(7, 3)) if ax is None else (ax.figure, ax)
    types = list(dict.fromkeys(t for frame in tables for t in frame.index))
    width = 0.8 / len(tables)
    for i, frame in enumerate(tables):
        x = np.array([types.index(t) for t in frame.index]) + (i - (len(tables) - 1) / 2) * width
        est = frame["accuracy"].tolist()
        ax.bar(x, [e.mean for e in est], width, yerr=[[e.mean - e.low for e in est], [e.high - e.mean for e in est]],
               capsize=3, color=f"C{i}", label=frame["mode"].iloc[0])
        ax.hlines(frame["chance"].to_numpy(float), x - width / 2, x + width / 2, color="k", ls="--", lw=0.8,
                  label="chance" if i == 0 else None)
    ax.set_xticks(range(len(types)))
    ax.set_xticklabels(types, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (held out)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))   # beside the axes: it hides no bar
    return fig


def accuracy_curves(histories: dict[str, list[dict]], prefix: str, title: str, ax=None, types: list[str] | None = None):
    """Held-out accuracy per question type over training steps, from training logs ({label: history}; the rows
    whose keys start with `prefix`, e.g. "vqa_"): one colour per type, one line style per log. `types` fixes the
    colours (the i-th type gets the i-th colour), so that panels drawn apart agree; default: the logs' order."""
    fig, ax = plt.subplots(figsize=(6, 3)) if ax is None else (ax.figure, ax)
    styles = ["-", "--", ":", "-."]
    logged = list(dict.fromkeys(k[len(prefix):] for h in histories.values() for row in h for k in row
                                if k.startswith(prefix)))
    colour = {t: f"C{i}" for i, t in enumerate(types or logged)}
    types = [t for t in (types or logged) if t in logged]
    for (label, history), style in zip(histories.items(), styles):
        for qtype in types:
            points = [(row["step"], row[prefix + qtype]) for row in history if prefix + qtype in row]
            if points:
                ax.plot(*zip(*points), style, color=colour[qtype], lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    # two keys below the axes, where they hide no line: the colour is the type, the line style the run
    line = plt.matplotlib.lines.Line2D
    kinds = ax.legend([line([], [], color=colour[t]) for t in types], types, fontsize=8, title="type",
                      title_fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=3, frameon=False)
    ax.add_artist(kinds)
    if len(histories) > 1:
        ax.legend([line([], [], color="k", ls=style) for style in styles[:len(histories)]], list(histories),
                  fontsize=8, title="run", title_fontsize=8, loc="upper right", bbox_to_anchor=(1, -0.2),
                  frameon=False)
    return fig


def deletion_insertion(curves: dict[str, dict[str, np.ndarray]], points: np.ndarray):
    """The mean deletion and insertion curves of each method side by side ({kind: {method: [points]}}, as
    `patch_eval.mean_curves` gives them), over the share of patches removed or restored."""
    if not isinstance(curves, dict) or {"deletion", "insertion"} - set(curves):
        raise LlavamechError("deletion_insertion draws {\"deletion\": {method: curve}, \"insertion\": {...}}")
    if any(len(c) != len(points) for kind in ("deletion", "insertion") for c in curves[kind].values()):
        raise LlavamechError(f"every curve needs one value per point ({len(points)} points)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for i, (method, curve) in enumerate(curves[kind].items()):
            ax.plot(points / points[-1], curve, "-", label=method,
                    color="grey" if method == "random" else f"C{i}", lw=2 if method in ("tool", "ablation") else 1)
        ax.set_xlabel(f"share of patches {'removed' if kind == 'deletion' else 'restored'}, in the method's order")
        ax.set_ylabel("mean p(answer)")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} area is better)", fontsize=9)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def randomisation(similarity):
    """Each method's Spearman correlation with the trained model's map (with its 95 % interval) as the model is
    randomised from the top down (`patch_eval.similarity`: rows = levels, columns = methods)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    levels = list(similarity.index)
    for i, method in enumerate(similarity.columns):
        est = similarity[method]
        ax.errorbar(range(len(levels)), [e.mean for e in est], yerr=[[e.mean - e.low for e in est],
                    [e.high - e.mean for e in est]], marker="o", ms=4, capsize=2, label=method, color=f"C{i}")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(levels)), levels, fontsize=8)
    ax.set_ylabel("Spearman with the trained model's map")
    ax.set_xlabel("randomised, from the top down")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
