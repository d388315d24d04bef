"""The organism across training seeds. Which shipped toy-llava came from which seed of each stage, and the patch
evaluation of every one of them on the same held-out scenes. The evaluation is a long job, run once off CI:

    python -m llavamech.seeds [--n 200] [--seed 0] [--out data/seeds/patch-eval.csv]

(about 2 min per model on 2 cores). Its output ships with the book; chapter 5 reads it and recomputes the main
model's rows live, so a stale file shows up as a difference. To train a variant: `python -m llavamech
train-organism --seed N --out DIR` (all stages), or put a toy-vicuna and a toy-clip of chosen seeds in DIR and run
`--stage llava --seed N` (a cross).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from .examples import toy_examples
from .interventions import activation_means
from .models import load
from .patch_eval import evaluate
from .paths import MODELS_DIR, SEEDS_DIR
from .stats import bootstrap

# name: seeds of (toy-vicuna, toy-clip, the Llava stages); the main organism is all zeros
VARIANTS = {
    "toy-llava": (0, 0, 0),
    "toy-llava-seed1": (1, 1, 1),
    "toy-llava-seed2": (2, 2, 2),
    "toy-llava-v0-c1-l1": (0, 1, 1),
    "toy-llava-v1-c0-l1": (1, 0, 1),
    "toy-llava-v0-c0-l1": (0, 0, 1),
}
SEED_STUDY = SEEDS_DIR / "patch-eval.csv"


def variants() -> pd.DataFrame:
    """The shipped variants with their stage seeds and their cards' held-out numbers (n = 500 prompts or scenes,
    200 for the top patch; see each card)."""
    rows = []
    for name, (vicuna, clip, llava) in VARIANTS.items():
        card = MODELS_DIR / name / "card.json"
        if not card.exists():
            continue
        numbers = json.loads(card.read_text())
        rows.append({"model": name, "toy-vicuna seed": vicuna, "toy-clip seed": clip, "Llava-stage seed": llava,
                     "toy-vicuna TQA": numbers["toy-vicuna TQA"], "toy-llava VQA": numbers["toy-llava VQA"],
                     "tower's animal probe": numbers["toy-llava tower probe"]["animal"],
                     "top patch on asked animal": numbers["top patch on asked animal"]})
    return pd.DataFrame(rows).set_index("model")


def with_weights(names) -> tuple[list[str], list[str]]:
    """`names` split into those that can be loaded and the shipped variants whose weights are not here: a checkout
    slimmed to be sent to a GPU machine (tests/gpu/slim.sh) keeps their cards and folders but not their weights."""
    absent = [n for n in names if (MODELS_DIR / n).is_dir() and not (MODELS_DIR / n / "model.safetensors").exists()]
    return [n for n in names if n not in absent], absent


def evaluate_variant(name: str, n: int, seed: int) -> pd.DataFrame:
    """The patch evaluation of one shipped variant, as chapter 5 runs it (mean ablation over the scenes)."""
    model = load(name)
    items = toy_examples(n, seed)
    per_scene = evaluate(model, items, means=activation_means(model, items, "vqa"), seed=seed)
    return per_scene.drop(columns=["deletion curve", "insertion curve"]).assign(model=name)


def seed_table(per_scene: pd.DataFrame, methods=("tool", "top-k", "attention", "ablation", "ig"),
               metric: str = "pointing", seed: int = 0) -> pd.DataFrame:
    """One row per model: its stage seeds, VQA accuracy on the scenes, the tool's most frequent head (and on what
    share of scenes it is the top head), and `metric` for each method with its bootstrap 95 % interval."""
    rows = []
    for name, group in per_scene.groupby("model", sort=False):
        tool = group[group["method"] == "tool"]
        heads = tool["top head"].value_counts(normalize=True)
        row = dict(zip(["toy-vicuna seed", "toy-clip seed", "Llava-stage seed"], VARIANTS.get(name, ("?",) * 3)))
        row.update({"VQA accuracy": bootstrap(tool["correct"].to_numpy(dtype=float), seed=seed),
                    "tool's usual head": f"{heads.index[0]} ({heads.iloc[0]:.0%} of scenes)"})
        for method in methods:
            values = group.loc[group["method"] == method, metric].to_numpy(dtype=float)
            row[f"{metric}: {method}"] = bootstrap(values, seed=seed) if len(values) else "—"
        rows.append({"model": name, **row})
    return pd.DataFrame(rows).set_index("model")


STAGES = ("toy-vicuna", "toy-clip", "Llava stages")


def one_stage_apart(by_seed: pd.DataFrame, column: str = "pointing: tool", study: pd.DataFrame | None = None,
                    seed: int = 0) -> pd.DataFrame:
    """Every pair of evaluated models whose stage seeds differ in one stage only: which stage, the two models, their
    `column` and the change. A stage whose seed moves the number carries the difference; one that does not, does
    not (on these seeds). With the per-scene `study`, each change also gets a paired bootstrap interval over the
    scenes both models were evaluated on (`scene_change`): evaluation noise, not the spread over training runs."""
    seeds = {name: VARIANTS[name] for name in by_seed.index if name in VARIANTS}
    rows = []
    for a in seeds:
        for b in seeds:
            apart = [i for i in range(3) if seeds[a][i] != seeds[b][i]]
            if len(apart) == 1 and seeds[a][apart[0]] < seeds[b][apart[0]]:
                x, y = by_seed.loc[a, column], by_seed.loc[b, column]
                row = {"stage whose seed changes": STAGES[apart[0]], "from": a, "to": b, f"{column}, from": x,
                       f"{column}, to": y, "change": y.mean - x.mean}
                if study is not None:
                    row["change on the same scenes"] = scene_change(study, a, b, column, seed)
                rows.append(row)
    return pd.DataFrame(rows)


def scene_change(study: pd.DataFrame, a: str, b: str, column: str = "pointing: tool", seed: int = 0):
    """Model b's `column` ("metric: method") minus model a's, scene by scene over the scenes both were evaluated on,
    with a paired bootstrap 95 % interval."""
    metric, method = column.split(": ")
    rows = study[study["method"] == method]
    x, y = (rows[rows["model"] == name].set_index("scene")[metric] for name in (a, b))
    both = x.index.intersection(y.index)
    return bootstrap((y[both] - x[both]).to_numpy(dtype=float), seed=seed)


def stage_effects(pairs: pd.DataFrame) -> tuple[str, pd.Series]:
    """From `one_stage_apart`'s pairs: the largest change in the measure that changing each stage's seed alone
    makes (a Series by stage, absolute values), and the stage with the largest, the one that carries the difference."""
    by_stage = pairs.groupby("stage whose seed changes")["change"].agg(lambda c: c.abs().max())
    return by_stage.idxmax(), by_stage


def usual_heads(by_seed: pd.DataFrame) -> pd.Series:
    """Per toy-vicuna seed, the tool's usual head of each model trained on that Vicuna ("1_3, 1_3, ...")."""
    return by_seed.groupby("toy-vicuna seed")["tool's usual head"].agg(lambda h: ", ".join(v.split()[0] for v in h))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="*", help="only these variants; their rows replace any already in --out")
    p.add_argument("--out", type=Path, default=SEED_STUDY)
    args = p.parse_args(argv)
    names = args.models or [name for name in VARIANTS if (MODELS_DIR / name).is_dir()]
    frame = pd.concat([evaluate_variant(name, args.n, args.seed) for name in names])
    if args.models and args.out.exists():
        kept = pd.read_csv(args.out)
        frame = pd.concat([kept[~kept["model"].isin(names)], frame])
    frame["order"] = frame["model"].map(list(VARIANTS).index)
    frame = frame.sort_values(["order", "scene"], kind="stable").drop(columns="order")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False, float_format="%.6g")
    print(f"{', '.join(names)}: {args.n} scenes each -> {args.out}")


if __name__ == "__main__":
    main()
