"""Measure the shipped organism on fresh held-out data and write its model cards (card.json, README.md, curves).

A study of the organism, above the analysis side: the organism package itself imports nothing of it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from .models import load
from .organism import recipe
from .organism.world import patch_labels
from .patch_eval import pointing
from .progress import progress
from .stats import Estimate, wilson
from .paths import MODELS_DIR

EVAL_SEED = 2024  # evaluation streams are seeded apart from every training stream, on held-out keys only
TOP_PATCH_SCENES = 200   # scenes of the card's top-patch measure (its accuracies use the card's own n)


def top_patch_on_animal(model, n: int = TOP_PATCH_SCENES, seed: int = EVAL_SEED) -> float:
    """Share of held-out scenes where explain()'s highest-scoring patch lies on the asked animal: the pointing game
    (`patch_eval.pointing`) against the patches the animal itself is painted on (`patch_labels`), not its box."""
    rng, hits = random.Random(f"{seed}:top-patch"), 0
    for _ in progress(range(n), "top patch on the asked animal"):
        scene, facts, asked = recipe.colour_scene(rng, True, sizes=recipe.EVALUATION_SIZES)
        grid = np.asarray(model.explain(scene.image, f"What is the color of the {asked}?").patch_grid)
        painted = patch_labels(scene, grid.shape[0]) == [a.name for a in scene.animals].index(asked)
        hits += pointing(grid, painted)
    return float(hits / n)


def measure(models_dir: Path = MODELS_DIR, n: int = 500, seed: int = EVAL_SEED) -> dict:
    """Accuracies of the trained models on n fresh held-out prompts/scenes each."""
    vicuna, llava = load(str(models_dir / "toy-vicuna")), load(str(models_dir / "toy-llava"))
    with torch.no_grad():
        return {
            "n": n, "eval_seed": seed,
            "toy-vicuna TQA": recipe.tqa_accuracy(vicuna.hf, vicuna.tokenizer, n, seed),
            "toy-llava VQA": recipe.vqa_accuracy(llava.hf, llava.processor, n, seed),
            "toy-llava TQA": recipe.tqa_accuracy(llava.hf, llava.tokenizer, n, seed),
            "toy-llava tower probe": recipe.probe_accuracy(llava.hf.model.vision_tower, seed=seed),
            "top patch on asked animal": top_patch_on_animal(llava, n=TOP_PATCH_SCENES, seed=seed),
        }


STAGE_TITLES = {"vicuna": "toy-vicuna (text)", "clip": "toy-clip (the eye)",
                "stage1": "toy-llava stage 1: projector on captions",
                "stage2": "toy-llava stage 2: visual instructions"}


def curves_figure(history: list[dict], cols: int = 2):
    """Training losses and held-out accuracies per stage, `cols` stages a row."""
    order = ["vicuna", "clip", "stage1", "stage2"]
    stages = sorted(dict.fromkeys(r["stage"] for r in history), key=order.index)
    rows_of_panels = -(-len(stages) // cols)
    fig, axes = plt.subplots(rows_of_panels, cols, figsize=(5.2 * cols, 3.2 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(stages):]:
        ax.axis("off")
    for ax, stage in zip(axes.flat, stages):
        rows = [r for r in history if r["stage"] == stage]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6, color="grey")
        ax.set_ylabel("training loss", fontsize=9)
        ax.set_title(STAGE_TITLES.get(stage, stage), fontsize=10)
        ax.set_xlabel("step")
        curves = {key: [(r["step"], r[key]) for r in rows if key in r] for key in ("tqa", "vqa", "probe_animal")}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            acc = ax.twinx()
            for i, (key, pts) in enumerate(curves.items()):
                acc.plot(*zip(*pts), "o-", ms=3, color=f"C{i}", label=f"held-out {key}")
            acc.set_ylim(0, 1.02)
            acc.set_ylabel("held-out accuracy", fontsize=9)
            acc.legend(fontsize=9, loc="center right")
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path: Path) -> None:
    """`curves_figure`, saved for the model cards."""
    fig = curves_figure(history)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_cards(models_dir: Path = MODELS_DIR, n: int = 500) -> dict:
    logs = {p.stem: json.loads(p.read_text()) for p in sorted(models_dir.glob("training-log-*.json"))}
    history = [r for log in logs.values() for r in log["history"]]
    seconds = {k: v for log in logs.values() for k, v in log["seconds"].items()}
    numbers = measure(models_dir, n)
    numbers["training seconds"] = seconds
    numbers["training seed"] = next(iter(logs.values()))["seed"] if logs else None
    write_files(models_dir, numbers, history)
    return numbers


def write_files(models_dir: Path, numbers: dict, history: list[dict]) -> None:
    plot_curves(history, models_dir / "training-curves.png")
    for name in ("toy-vicuna", "toy-llava"):
        (models_dir / name / "card.json").write_text(json.dumps(numbers, indent=2))
        (models_dir / name / "README.md").write_text(render_card(models_dir / name, numbers, history))


def _size(folder: Path) -> str:
    with safe_open(folder / "model.safetensors", "pt") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    return f"{n / 1e6:.2f} M parameters, {(folder / 'model.safetensors').stat().st_size / 1e6:.1f} MB"


def render_card(folder: Path, numbers: dict, history: list[dict]) -> str:
    """The model card: recipe, sizes, training time, held-out accuracies (from `numbers`), curves."""
    secs = numbers["training seconds"]
    steps = {stage: max((r["step"] for r in history if r["stage"] == stage), default=0)
             for stage in ("vicuna", "clip", "stage1", "stage2")}
    probe = numbers["toy-llava tower probe"]
    name = folder.name
    what = {"toy-vicuna": "`LlamaForCausalLM` trained from scratch on text: the model organism's Vicuna.",
            "toy-llava": "`LlavaForConditionalGeneration` = toy-clip's vision tower (feature layer -2, CLS dropped) "
                         "+ a 2-layer GELU projector + toy-vicuna: the model organism's Llava."}[name]
    return f"""# {name}

{what} Built with the same Hugging Face classes as `lmsys/vicuna-7b-v1.5` / `llava-hf/llava-1.5-7b-hf`,
trained on 2 CPU cores by `python -m llavamech train-organism --seed {numbers['training seed']}`
(`llavamech.organism`). Size: {_size(folder)}.

## Recipe (seed {numbers['training seed']})
| stage | steps | what | seconds (1 CPU thread) |
|---|---|---|---|
| toy-vicuna | {steps['vicuna']} | 4 layers x 8 heads of 16, d=128, MLP 512, word-level vocabulary of the toy world; batches of 64: 75 % TQA prompts with 2–4 facts (loss on the answer), 25 % induction warm-up `<s> s s` (loss on the copy), one token-mean loss; AdamW 3e-3, wd 0.1; trained until held-out TQA >= 0.98 (at least 800 steps) | {secs.get('vicuna', float('nan')):.0f} |
| toy-clip | {steps['clip']} | `CLIPModel`, 64 px, patch 8, 4 layers, d=128; contrastive (scene, caption) loss + per-patch animal classes + per-animal pooled classes on the layer -2 patch features (classifier heads discarded); AdamW 1e-3 | {secs.get('clip', float('nan')):.0f} |
| toy-llava stage 1 | {steps['stage1']} | projector only, on captions ("a brown dog and a red cat .") | {secs.get('llava', float('nan')):.0f} (both stages) |
| toy-llava stage 2 | {steps['stage2']} | projector + language model on the paper's VQA prompt, TQA mixed in at weight 0.5; vision tower frozen | |

Where it departs from Llava's recipe, and why: the induction warm-up (without it a small Llama stays on "name
some colour from the context", TQA ≈ 0.35) and the animal-recognition losses for the eye (a small contrastive
CLIP sees colours but hardly animals; the labels stand in for web-scale pretraining). See the book's appendix B,
"The model organism".

## Held-out accuracy
Keys (facts + asked animal) are hashed; one in ten is never trained on, and only those are evaluated, on
scenes drawn from a separate seed ({numbers['eval_seed']}), n = {numbers['n']} each:

| measure | accuracy | bar |
|---|---|---|
| toy-vicuna TQA (2–4 facts) | {numbers['toy-vicuna TQA']:.3f} | 0.95 |
| toy-llava VQA (1–3 animals, canvases 64–128 px) | {numbers['toy-llava VQA']:.3f} | 0.90 |
| toy-llava TQA (text skill after visual tuning) | {numbers['toy-llava TQA']:.3f} | 0.90 |
| vision tower linear probe, animal / colour | {probe['animal']:.3f} / {probe['colour']:.3f} | animal 0.95 |
| explain()'s top patch on the asked animal (n = 200) | {numbers['top patch on asked animal']:.3f} | (no bar) |

{_replicate(numbers)}
![training curves](../training-curves.png)
"""


def _replicate(numbers: dict) -> str:
    """The same recipe with another seed (not shipped), measured the same way, where it was run."""
    rep = numbers.get("replicate")
    if not rep:
        return ""
    return (f"Second seed (same recipe, seed {rep['training seed']}, not shipped; same held-out measure): "
            f"toy-vicuna TQA {rep['toy-vicuna TQA']:.3f} (plateau left at step ~{rep['vicuna plateau step']}, "
            f"stopped at {rep['vicuna steps']}), toy-llava VQA {rep['toy-llava VQA']:.3f}, toy-llava TQA "
            f"{rep['toy-llava TQA']:.3f}, tower probe animal {rep['toy-llava tower probe']['animal']:.3f}, "
            f"top patch on the asked animal {rep['top patch on asked animal']:.3f}.\n")


BARS = {"toy-vicuna TQA": 0.95, "toy-llava VQA": 0.90, "toy-llava TQA": 0.90}


PROBE_BAR = 0.95   # the tower's animal probe: the eye must recognise animals for VQA to be learnable


def tower_probe(card: dict) -> dict[str, Estimate]:
    """The card's linear probes on the vision tower ("animal", "colour"), each with its 95 % Wilson interval over
    the probe's held-out animals (`recipe.probe_test_size` at the card's evaluation seed)."""
    n = recipe.probe_test_size(seed=card["eval_seed"])
    return {name: Estimate(value, *wilson(value, n), n) for name, value in card["toy-llava tower probe"].items()}


def measured_on(card: dict, measure: str) -> int:
    """How many held-out items a card's measure was taken on."""
    if measure.startswith("tower probe"):
        return recipe.probe_test_size(seed=card["eval_seed"])
    return TOP_PATCH_SCENES if measure == "top patch on asked animal" else card["n"]


def accuracy_table(cards: dict[str, dict]):
    """The cards of shipped models side by side, as written when each was trained (the evaluation seed of the
    card; `measured_on` items per measure): each accuracy with its 95 % Wilson interval, its bar, and whether every
    model clears it. {model name: card} -> DataFrame, one row per measure, with its n."""
    bars = {**BARS, "tower probe: animal": PROBE_BAR, "tower probe: colour": None, "top patch on asked animal": None}
    rows = {}
    for measure, bar in bars.items():
        row, sizes, values = {}, set(), []
        for name, card in cards.items():
            value = card["toy-llava tower probe"][measure.split(": ")[1]] if measure.startswith("tower") else card[measure]
            n = measured_on(card, measure)
            sizes.add(n)
            values.append(value)
            row[name] = "{:.3f} [{:.3f}, {:.3f}]".format(value, *wilson(value, n))
        row["n"] = " / ".join(map(str, sorted(sizes)))
        row["bar"] = "" if bar is None else f"{bar:.2f}"
        row["every model clears it"] = "" if bar is None else ("yes" if min(values) >= bar else "no")
        rows[measure] = row
    return pd.DataFrame(rows).T.rename_axis("measure")
