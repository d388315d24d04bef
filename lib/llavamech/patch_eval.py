"""How far to trust a patch map: every method of `patches`, scored on scenes whose true boxes are known.

Per scene and method (the model's own answer; "removed" = the patch's visual embedding replaced, as `ablation`):
- `pointing`: the top patch lies inside the asked animal's box (the pointing game).
- `mass in box`: the share of the map's positive score that lies inside the box.
- `deletion`: area under p(answer) as patches are removed in the map's order, best first (lower = better).
- `insertion`: area under p(answer) as patches are restored in that order onto a fully removed image (higher).
- `agreement`: Spearman rank correlation of the map with causal patch ablation over all patches.
Chance: the `random` method (a uniform random map) on the same scenes; for pointing and mass, also the box's
share of the patches.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .examples import Example
from .imaging import box_mask, load_image
from .interventions import Means
from .patches import METHODS, Embedded, answer_logprob, patch_maps
from .report import progress
from .stats import bootstrap

RESOLUTION = 1e-3   # ranks see a map's scores to 0.1 % of its largest (see `resolved`)
METRICS = ("pointing", "mass in box", "deletion", "insertion", "agreement")
BETTER = {"pointing": "higher", "mass in box": "higher", "deletion": "lower", "insertion": "higher",
          "agreement": "higher"}


def resolved(scores: np.ndarray) -> np.ndarray:
    """Scores rounded to RESOLUTION of the largest absolute score, for everything that ranks them (the top patch,
    the curves' order, rank agreement). Below that, scores differ by float32 noise alone — a map's flat background,
    the patches whose removal changes nothing — and another CPU's kernels would reorder them; rounded, they are
    ties, ranked alike on every machine (ties: midranks in Spearman, a seeded order in the curves)."""
    scale = float(np.abs(scores).max())
    return scores if scale == 0 else np.round(scores / (scale * RESOLUTION)) * (scale * RESOLUTION)


def curve_points(n_patches: int, steps: int) -> np.ndarray:
    """How many patches are removed (or restored) at each point of a curve: 0 .. n_patches in `steps` steps."""
    return np.unique(np.linspace(0, n_patches, steps + 1).round().astype(int))


def curves(model, emb: Embedded, token: int, scores: np.ndarray, means: Means | None, steps: int = 8,
           seed: int = 0) -> dict[str, np.ndarray]:
    """p(answer) along the deletion and insertion curves of one map ([points] each), and the points themselves.
    Ties in the map (a flat region) are broken at random, so a constant map behaves as a random one."""
    n = scores.size
    tiebreak = np.random.default_rng(seed).random(n)
    order = np.lexsort((tiebreak, -resolved(scores).ravel()))   # best first
    points = curve_points(n, steps)
    removed = [tuple(sorted(order[:j])) for j in points] + [tuple(sorted(order[j:])) for j in points]
    unique = list(dict.fromkeys(removed))   # both curves start or end with nothing / everything removed
    p_unique = np.exp(answer_logprob(model, emb, token, [list(r) for r in unique], means))
    p = p_unique[[unique.index(r) for r in removed]]
    return {"points": points, "deletion": p[:len(points)], "insertion": p[len(points):]}


def area(points: np.ndarray, values: np.ndarray) -> float:
    """Area under a curve over the share of patches (0..1), by the trapezoid rule."""
    x = points / points[-1]
    return float(np.sum((x[1:] - x[:-1]) * (values[1:] + values[:-1]) / 2))


def scene_metrics(scores: np.ndarray, mask: np.ndarray | None, causal: np.ndarray, curve: dict) -> dict:
    """The metrics of one map (see the module docstring); box metrics are NaN without a box."""
    flat, positive = resolved(scores).ravel(), np.clip(scores.ravel(), 0, None)
    causal = causal.ravel()
    row = {"deletion": area(curve["points"], curve["deletion"]),
           "insertion": area(curve["points"], curve["insertion"]),
           "agreement": float(spearmanr(flat, causal).statistic) if flat.std() > 0 else 0.0}
    if mask is None or not mask.any():
        row.update({"pointing": np.nan, "mass in box": np.nan})
    else:
        inside = mask.ravel()
        row["pointing"] = float(inside[np.argmax(flat)])
        row["mass in box"] = float(positive[inside].sum() / positive.sum()) if positive.sum() > 0 else np.nan
    return row


def evaluate(model, examples: list[Example], methods=METHODS, means: Means | None = None, heads: int = 3,
             steps: int = 8, ig_steps: int = 16, seed: int = 0) -> pd.DataFrame:
    """One row per (scene, method): the metrics, the answer, whether it is correct, the box's share of the
    patches, the tool's head, and the method's wall-clock seconds. Causal ablation is computed once per scene (it is also the
    reference of `agreement`)."""
    rows = []
    for i, example in enumerate(progress(examples, f"{model.name}: patch maps")):
        maps = patch_maps(model, example.image, example.question, dict.fromkeys(("ablation",) + tuple(methods)),
                          heads=heads, means=means, ig_steps=ig_steps, seed=seed + i)
        tool = maps["ablation"].explanation
        top = tool.top_heads[0]
        emb = maps["ablation"].embedded
        mask = None if example.box is None else box_mask(example.box, load_image(example.image).size,
                                                         model.processor.image_processor, tool.grid_shape)
        for method in methods:
            pm = maps[method]
            curve = curves(model, emb, pm.answer_token_id, pm.scores, means, steps, seed=seed + i)
            metrics = scene_metrics(pm.scores, mask, maps["ablation"].scores, curve)
            if method == "ablation":
                metrics["agreement"] = np.nan   # the reference itself
            rows.append({"scene": i, "method": method, **metrics,
                         "box share": np.nan if mask is None else float(mask.mean()),
                         "answer": pm.answer, "correct": float(pm.answer == example.colour)
                         if example.colour else np.nan, "top head": f"{top['layer']}_{top['head']}",
                         "seconds": pm.seconds, "deletion curve": curve["deletion"],
                         "insertion curve": curve["insertion"]})
    return pd.DataFrame(rows)


def summary(per_scene: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per method, one column per metric: mean with its bootstrap 95 % interval over scenes ("—" where a
    metric does not apply: ablation's agreement with itself); the last row is the box's share of the patches
    (chance for pointing and mass in box)."""
    def estimate(values):
        return bootstrap(values, seed=seed) if np.isfinite(values).any() else "—"

    table = {method: {metric: estimate(group[metric].to_numpy(dtype=float)) for metric in METRICS}
             for method, group in per_scene.groupby("method", sort=False)}
    frame = pd.DataFrame(table).T
    share = bootstrap(per_scene.drop_duplicates("scene")["box share"].to_numpy(), seed=seed)
    frame.loc["box's share of the patches"] = {metric: share if metric in ("pointing", "mass in box") else ""
                                               for metric in METRICS}
    frame.index.name = "method"
    return frame


def mean_curves(per_scene: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
    """The mean `kind` ("deletion" or "insertion") curve of each method over scenes: {method: [points]}."""
    return {method: np.mean(np.stack(group[f"{kind} curve"].to_list()), axis=0)
            for method, group in per_scene.groupby("method", sort=False)}


def absent_animal(model, examples: list[Example], animals: list[str], colours: list[str], seed: int = 0) -> pd.DataFrame:
    """Ask each scene about an animal it does not hold (drawn from `animals` under `seed`) and, beside it, about
    the animal it does hold. One row per (scene, question): the answer, whether it names a colour, whether that
    colour belongs to an animal of the scene, its probability, the top head, and where the tool's map points —
    its top patch on any animal of the scene, and its share of positive mass on the animals. Scenes need every
    animal's box (`Example.boxes`; the toy scenes have them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, example in enumerate(progress(examples, f"{model.name}: absent animals")):
        missing = [a for a in animals if a not in dict(example.facts)]
        if not missing or not example.boxes:
            continue
        size = load_image(example.image).size
        for asked, item in (("present", example), ("absent", example.asking(missing[rng.integers(len(missing))]))):
            x = model.explain(item.image, question=item.question)
            grid = np.asarray(x.patch_grid)
            on_animals = np.zeros(grid.shape, bool)
            for _, box in example.boxes:
                on_animals |= box_mask(box, size, model.processor.image_processor, x.grid_shape)
            positive = np.clip(grid, 0, None)
            top = x.top_heads[0]
            rows.append({"scene": i, "asked": asked, "animal": item.animal, "answer": x.answer,
                         "p(answer)": x.answer_prob, "a colour": float(x.answer in colours),
                         "a colour of the scene": float(x.answer in dict(example.facts).values()),
                         "correct": np.nan if item.colour is None else float(x.answer == item.colour),
                         "top patch on an animal": float(on_animals.ravel()[grid.argmax()]),
                         "mass on the animals": float(positive[on_animals].sum() / positive.sum()),
                         "animals' share of the patches": float(on_animals.mean()),
                         "top head": f"{top['layer']}_{top['head']}"})
    return pd.DataFrame(rows)
