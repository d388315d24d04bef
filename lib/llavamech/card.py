"""Measure the shipped organism on fresh held-out data and write its model cards (card.json, README.md, curves)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from . import organism
from .models import load
from .paths import MODELS_DIR
from .world import make_scene, patch_labels, sample_facts

EVAL_SEED = 2024  # evaluation streams are seeded apart from every training stream, on held-out keys only


def top_patch_on_animal(model, n: int = 200, seed: int = EVAL_SEED) -> float:
    """Share of held-out scenes where explain()'s highest-scoring patch lies on the asked animal."""
    rng, hits = random.Random(f"{seed}:top-patch"), 0
    for _ in tqdm(range(n), desc="top patch on the asked animal", leave=False):
        facts, asked = organism.sample_split(rng, rng.randint(1, 3), held_out=True)
        scene = make_scene(rng, size=rng.choice([64, 96, 128]), pairs=facts)
        grid = np.asarray(model.explain(scene.image, f"What is the color of the {asked}?").patch_grid)
        labels = patch_labels(scene, grid.shape[0])
        r, c = np.unravel_index(grid.argmax(), grid.shape)
        hits += labels[r, c] == [a.name for a in scene.animals].index(asked)
    return hits / n


def measure(models_dir: Path = MODELS_DIR, n: int = 500, seed: int = EVAL_SEED) -> dict:
    """Accuracies of the trained models on n fresh held-out prompts/scenes each."""
    vicuna, llava = load(str(models_dir / "toy-vicuna")), load(str(models_dir / "toy-llava"))
    with torch.no_grad():
        return {
            "n": n, "eval_seed": seed,
            "toy-vicuna TQA": organism.tqa_accuracy(vicuna.hf, vicuna.tokenizer, n, seed),
            "toy-llava VQA": organism.vqa_accuracy(llava.hf, llava.processor, n, seed),
            "toy-llava TQA": organism.tqa_accuracy(llava.hf, llava.tokenizer, n, seed),
            "toy-llava tower probe": organism.probe_accuracy(llava.hf.model.vision_tower, seed=seed),
            "top patch on asked animal": top_patch_on_animal(llava, n=200, seed=seed),
        }


def plot_curves(history: list[dict], path: Path) -> None:
    """Training losses and held-out accuracies per stage."""
    stages = list(dict.fromkeys(r["stage"] for r in history))
    fig, axes = plt.subplots(1, len(stages), figsize=(3.3 * len(stages), 2.8))
    for ax, stage in zip(np.atleast_1d(axes), stages):
        rows = [r for r in history if r["stage"] == stage]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6, label="loss")
        ax.set_title(stage)
        ax.set_xlabel("step")
        acc = ax.twinx()
        for key in ("tqa", "vqa", "probe_animal"):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                acc.plot(*zip(*pts), "o-", ms=3, label=f"held-out {key}")
        acc.set_ylim(0, 1.02)
        acc.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_cards(models_dir: Path = MODELS_DIR, n: int = 500) -> dict:
    logs = {p.stem: json.loads(p.read_text()) for p in sorted(models_dir.glob("training-log-*.json"))}
    history = [r for log in logs.values() for r in log["history"]]
    seconds = {k: v for log in logs.values() for k, v in log["seconds"].items()}
    numbers = measure(models_dir, n)
    numbers["training seconds"] = seconds
    numbers["training seed"] = next(iter(logs.values()))["seed"] if logs else None
    plot_curves(history, models_dir / "training-curves.png")
    for name in ("toy-vicuna", "toy-llava"):
        (models_dir / name / "card.json").write_text(json.dumps(numbers, indent=2))
    return numbers
