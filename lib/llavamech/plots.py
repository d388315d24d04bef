"""Static figures (presentation only). Every figure names the model that produced it in its title."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image


def upsample(grid, size: tuple[int, int]) -> np.ndarray:
    """A [rows, cols] map resized bicubically to `size` (width, height), as the paper draws it; the cubic's
    overshoot below zero is clipped (scores are normalised to be non-negative)."""
    arr = np.asarray(grid, dtype=np.float32)
    return np.clip(np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.BICUBIC)), 0, None)


def patch_overlay(explanation, title: str | None = None, ax=None):
    """The image as the model saw it, beside the patch map drawn over it."""
    view = explanation.view
    if view is None:
        raise ValueError("this explanation has no image (text-only input)")
    fig, axes = (plt.subplots(1, 2, figsize=(7, 3.6)) if ax is None else (ax[0].figure, ax))
    heat = upsample(explanation.patch_grid, view.size)
    axes[0].imshow(view)
    axes[0].set_title("what the model sees")
    axes[1].imshow(view)
    im = axes[1].imshow(heat, cmap="jet", alpha=0.5)
    rows, cols = explanation.grid_shape
    top = explanation.top_heads[0]
    axes[1].set_title(f"head {top['layer']}_{top['head']} over {rows}x{cols} patches")
    for a in axes:
        a.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    fig.suptitle(title or f"{explanation.model}: {explanation.question!r} -> {explanation.answer!r}")
    return fig


def head_heatmap(scores: torch.Tensor, title: str, label: str = "log-prob increase", ax=None):
    """A layers x heads heat map of head scores, layer 0 at the bottom."""
    fig, ax = plt.subplots(figsize=(max(4, scores.shape[1] * 0.35 + 2), max(2.5, scores.shape[0] * 0.35 + 1.2))) \
        if ax is None else (ax.figure, ax)
    lim = float(scores.abs().max()) or 1.0
    im = ax.imshow(scores.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(scores.shape[1]))
    ax.set_yticks(range(scores.shape[0]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label)
    return fig


def layer_bars(scores: dict[str, torch.Tensor], title: str, ax=None):
    """Attention and FFN layer scores side by side per layer."""
    fig, ax = plt.subplots(figsize=(6, 3)) if ax is None else (ax.figure, ax)
    n = len(scores["attn"])
    x = np.arange(n)
    ax.bar(x - 0.2, scores["attn"].numpy(), 0.4, label="attention")
    ax.bar(x + 0.2, scores["ffn"].numpy(), 0.4, label="FFN")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x)
    ax.set_xlabel("layer")
    ax.set_ylabel("log-prob increase")
    ax.set_title(title)
    ax.legend()
    return fig


def image_grid(images: list, captions: list[str], cols: int = 4, size: float = 2.2):
    """Images with captions in a grid (e.g. sample scenes of the toy world)."""
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.1))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, im, cap in zip(np.atleast_1d(axes).flat, images, captions):
        ax.imshow(im)
        ax.set_title(cap, fontsize=8)
    return fig
