"""How far to trust a patch map: every method of `patches`, scored on scenes whose true boxes are known.

Per scene and method (the model's own answer; "removed" = the patch's visual embedding replaced, as `ablation`):
- `pointing`: the top patch lies inside the asked animal's box (the pointing game).
- `mass in box`: the share of the map's score that lies inside the box, every method's map first min-max scaled to
  [0, 1] (`unit`: the paper's normalisation of the tool's map, applied to every method alike), so that neither
  where a method puts its zero nor its scale moves the share.
- `top patches in box`: the share of the map's top B patches that lie in the box, B the box's size in patches: a
  rank measure, unmoved by any increasing rescaling of the map (signed maps, whose zero min-max scaling puts
  mid-scale, lose nothing by it).
- `deletion`: area under p(answer) as patches are removed in the map's order, best first (lower = better).
- `insertion`: area under p(answer) as patches are restored in that order onto a fully removed image (higher).
- `agreement`: Spearman rank correlation of the map with causal patch ablation over all patches.
- `top-1 agreement`: the map's top patch is causal ablation's top patch.
Chance: the `random` method (a uniform random map) on the same scenes; for the three box metrics, also the box's
share of the patches.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import pandas as pd
from PIL import Image
from scipy.stats import spearmanr

from . import validate
from .errors import LlavamechError
from .examples import Example, example_list
from .hooks import model_lock
from .imaging import box_mask, load_image
from .interventions import Means
from .patches import METHODS, Embedded, answer_logprob, embed, patch_maps
from .progress import progress
from .stats import Estimate, bootstrap

RESOLUTION = 1e-6   # ranks see a map's scores to the precision float32 computes them (see `resolved`)
BOX_METRICS = ("pointing", "mass in box", "top patches in box")
METRICS = (*BOX_METRICS, "deletion", "insertion", "agreement", "top-1 agreement")
BETTER = {"pointing": "higher", "mass in box": "higher", "top patches in box": "higher", "deletion": "lower",
          "insertion": "higher", "agreement": "higher", "top-1 agreement": "higher"}


def resolved(scores: np.ndarray) -> np.ndarray:
    """Scores rounded to RESOLUTION of the largest absolute score, for everything that ranks them (the top patch,
    the curves' order). Closer than that, two scores differ by float32 rounding alone (a map's flat background) and
    another CPU's kernels would reorder them; rounded, they are ties, ranked alike on every machine (a seeded
    order in the curves). Coarser rounding would discard real order: the animal's weaker patches sit only a
    thousandth of the top score above the background in the tool's map, and deleting them first matters."""
    scale = float(np.abs(scores).max())
    return scores if scale == 0 else np.round(scores / (scale * RESOLUTION)) * (scale * RESOLUTION)


def ranking(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """The patches' flat indices, best first as `resolved` ranks the scores, ties broken at random under `seed`: a
    flat region carries no order, so a constant map ranks as a random one (and not top-left first)."""
    tiebreak = np.random.default_rng(seed).random(scores.size)
    return np.lexsort((tiebreak, -resolved(np.asarray(scores)).ravel()))


def patch_scores(name: str, scores) -> np.ndarray:
    """A map's scores as a float array with at least one patch and no NaN (a NaN patch would be ranked first by
    nothing and last by nothing: a map with one is broken, not scored)."""
    scores = validate.host_array(scores, np.float64)
    if not scores.size:
        raise LlavamechError(f"{name} has no patch scores")
    if not np.isfinite(scores).all():
        raise LlavamechError(f"{name} holds NaN or infinite scores: a map with them cannot be ranked")
    return scores


def unit(scores: np.ndarray) -> np.ndarray:
    """The map min-max scaled to [0, 1] (a constant map: all ones). The tool's map is already so scaled (and then
    divided by its sum); scaling every method's alike keeps a raw map's floor (mean attention's, spread over every
    patch) from counting against it where the tool's floor was removed."""
    scores = patch_scores("unit's map", scores)
    span = scores.max() - scores.min()
    return (scores - scores.min()) / span if span > 0 else np.ones_like(scores)


def pointing(scores, mask) -> bool:
    """The pointing game: the map's top patch (as `resolved` ranks the scores) lies inside `mask` ([rows, cols]
    booleans, the map's shape)."""
    scores = patch_scores("pointing's map", scores)
    mask = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
    if mask.dtype != bool:
        raise LlavamechError(f"pointing's mask must be booleans over the patch grid, not {mask.dtype} (0/1 would be "
                             "taken as patch indices elsewhere): pass mask.astype(bool)")
    if mask.shape != scores.shape:
        raise LlavamechError(f"pointing's mask {mask.shape} and map {scores.shape} must cover the same patch grid")
    return bool(mask.ravel()[int(np.argmax(resolved(scores).ravel()))])


def animals_mask(example: Example, image_size, image_processor, grid_shape, colour: str | None = None) -> np.ndarray:
    """[rows, cols] booleans: the patches inside any of the scene's animal boxes (`example.boxes`), or, given a
    `colour`, inside the boxes of the animals of that colour (none: an empty mask)."""
    mask = np.zeros(tuple(grid_shape), bool)
    colours = dict(example.facts)
    for animal, box in example.boxes:
        if colour is None or colours.get(animal) == colour:
            mask |= box_mask(box, image_size, image_processor, tuple(grid_shape))
    return mask


def curve_points(n_patches: int, steps: int) -> np.ndarray:
    """How many patches are removed (or restored) at each point of a curve: 0 .. n_patches in `steps` steps."""
    n_patches, steps = validate.whole("n_patches", n_patches), validate.whole("steps", steps)
    return np.unique(np.linspace(0, n_patches, steps + 1).round().astype(int))


def curves(model, emb: Embedded, token: int, maps: dict[str, np.ndarray], means: Means | None, steps: int = 8,
           seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """p(answer) along the deletion and insertion curves of each map of one scene (`maps`: {method: scores}), and
    the points themselves: {method: {"points", "deletion", "insertion"}}. Ties in a map (a flat region) are broken
    at random (`ranking`), so a constant map behaves as a random one. Every method's points run in one set of
    batched passes, each distinct set of removed patches once: every curve starts or ends with nothing or everything
    removed, and two maps that rank their first or last patches alike share those points."""
    points = curve_points(next(iter(maps.values())).size, steps)
    removed = {}
    for method, scores in maps.items():
        order = ranking(scores, seed)
        removed[method] = [tuple(sorted(order[:j])) for j in points] + [tuple(sorted(order[j:])) for j in points]
    unique = list(dict.fromkeys(r for sets in removed.values() for r in sets))
    index = {r: i for i, r in enumerate(unique)}
    p_unique = np.exp(answer_logprob(model, emb, token, [list(r) for r in unique], means))
    out = {}
    for method, sets in removed.items():
        p = p_unique[[index[r] for r in sets]]
        out[method] = {"points": points, "deletion": p[:len(points)], "insertion": p[len(points):]}
    return out


def area(points: np.ndarray, values: np.ndarray) -> float:
    """Area under a curve over the share of patches (0..1), by the trapezoid rule."""
    x = points / points[-1]
    return float(np.sum((x[1:] - x[:-1]) * (values[1:] + values[:-1]) / 2))


def scene_metrics(scores: np.ndarray, mask: np.ndarray | None, causal: np.ndarray, curve: dict, seed: int = 0) -> dict:
    """The metrics of one map (see the module docstring); box metrics are NaN without a box. `seed` breaks ties in
    the map's ranking, as the curves' (`ranking`)."""
    flat = resolved(scores).ravel()
    causal = causal.ravel()
    row = {"deletion": area(curve["points"], curve["deletion"]),
           "insertion": area(curve["points"], curve["insertion"]),
           "agreement": float(spearmanr(flat, causal).statistic) if flat.std() > 0 else 0.0,
           "top-1 agreement": float(np.argmax(flat) == np.argmax(resolved(causal)))}
    if mask is None or not mask.any():
        row.update(dict.fromkeys(BOX_METRICS, np.nan))
    else:
        inside, scaled = mask.ravel(), unit(scores).ravel()
        row["pointing"] = float(pointing(scores, mask))
        row["mass in box"] = float(scaled[inside].sum() / scaled.sum())
        row["top patches in box"] = float(inside[ranking(scores, seed)[:inside.sum()]].mean())
    return row


def evaluate(model, examples: list[Example], methods=METHODS, means: Means | None = None, heads: int = 3,
             steps: int = 8, ig_steps: int = 16, seed: int = 0) -> pd.DataFrame:
    """One row per (scene, method): the metrics, the answer, whether it is correct, the box's share of the
    patches, the tool's head, and the method's wall-clock seconds. Causal ablation is computed once per scene (it is also the
    reference of `agreement`)."""
    examples = example_list("evaluate", examples)
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise LlavamechError(f"evaluate needs at least one method, some of {', '.join(METHODS)}")
    steps, seed = validate.whole("steps", steps), validate.whole("seed", seed, 0)
    rows = []
    for i, example in enumerate(progress(examples, f"{model.name}: patch maps")):
        maps = patch_maps(model, example.image, example.question, dict.fromkeys(("ablation",) + tuple(methods)),
                          heads=heads, means=means, ig_steps=ig_steps, seed=seed + i)
        tool = maps["ablation"].explanation
        top = tool.top_heads[0]
        emb = maps["ablation"].embedded
        mask = example.box_mask(model.processor.image_processor, tool.grid_shape)
        all_curves = curves(model, emb, tool.answer_token_id, {m: maps[m].scores for m in methods}, means, steps,
                            seed=seed + i)
        for method in methods:
            pm, curve = maps[method], all_curves[method]
            metrics = scene_metrics(pm.scores, mask, maps["ablation"].scores, curve, seed=seed + i)
            if method == "ablation":
                metrics["agreement"] = metrics["top-1 agreement"] = np.nan   # the reference itself
            rows.append({"scene": i, "method": method, **metrics,
                         "box share": np.nan if mask is None else float(mask.mean()),
                         "answer": pm.answer, "correct": float(pm.answer == example.expected)
                         if example.expected else np.nan, "top head": f"{top['layer']}_{top['head']}",
                         "seconds": pm.seconds, "deletion curve": curve["deletion"],
                         "insertion curve": curve["insertion"]})
    return pd.DataFrame(rows)


def check_per_scene(per_scene) -> None:
    """`per_scene` is `evaluate`'s table, with at least one row."""
    if not isinstance(per_scene, pd.DataFrame) or not {"scene", "method"} <= set(per_scene.columns) or per_scene.empty:
        raise LlavamechError("per_scene must be the table evaluate(model, examples) returns, with at least one scene")


def paired_difference(per_scene: pd.DataFrame, a: str, b: str, metric: str, seed: int = 0) -> Estimate:
    """Method `a`'s `metric` minus method `b`'s on the same scenes, with a bootstrap 95 % interval over scenes
    (paired: each scene's two values resampled together, so the scenes' own difficulty cancels)."""
    check_per_scene(per_scene)
    ran = list(dict.fromkeys(per_scene["method"]))
    for method in (a, b):
        if method not in ran:
            raise LlavamechError(f"method {method!r} was not evaluated; these were: {', '.join(ran)}")
    if metric not in METRICS:
        raise LlavamechError(f"unknown metric {metric!r}; the metrics are {', '.join(METRICS)}")
    by_scene = per_scene.pivot(index="scene", columns="method", values=metric)[[a, b]].dropna()
    if by_scene.empty:
        why = (": pointing needs a box the model sees (holding a patch's centre, inside the image as the processor "
               "crops it)") if metric == "pointing" else ""
        raise LlavamechError(f"no scene has a {metric} for both {a} and {b}{why}")
    return bootstrap((by_scene[a] - by_scene[b]).to_numpy(float), seed=seed)


def summary(per_scene: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per method, one column per metric: mean with its bootstrap 95 % interval over scenes ("—" where a
    metric does not apply: ablation's agreement with itself); the last row is the box's share of the patches
    (chance for the box metrics)."""
    check_per_scene(per_scene)

    def estimate(values):
        return bootstrap(values, seed=seed) if np.isfinite(values).any() else "—"

    table = {method: {metric: estimate(group[metric].to_numpy(dtype=float)) for metric in METRICS}
             for method, group in per_scene.groupby("method", sort=False)}
    frame = pd.DataFrame(table).T
    share = bootstrap(per_scene.drop_duplicates("scene")["box share"].to_numpy(), seed=seed)
    frame.loc["box's share of the patches"] = {metric: share if metric in BOX_METRICS else ""
                                               for metric in METRICS}
    frame.index.name = "method"
    return frame


def mean_curves(per_scene: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
    """The mean `kind` ("deletion" or "insertion") curve of each method over scenes: {method: [points]}."""
    check_per_scene(per_scene)
    if kind not in ("deletion", "insertion"):
        raise LlavamechError(f"kind must be \"deletion\" or \"insertion\", not {kind!r}")
    return {method: np.mean(np.stack(group[f"{kind} curve"].to_list()), axis=0)
            for method, group in per_scene.groupby("method", sort=False)}


def absent_animal(model, examples: list[Example], animals: list[str], colours: list[str], seed: int = 0) -> pd.DataFrame:
    """Ask each scene about an animal it does not hold (drawn from `animals` under `seed`) and, beside it, about
    the animal it does hold. One row per (scene, question): the answer, whether it names a colour, whether that
    colour belongs to an animal of the scene, its probability, the top head, and where the tool's map points —
    its top patch on any animal of the scene, on an animal of the colour it names (the one the answer came from,
    if the map finds it; 0 when no animal has that colour; its chance is those animals' share of the patches), and
    its share of positive mass on the animals. Scenes
    need every animal's box (`Example.boxes`; the toy scenes have them)."""
    examples = example_list("absent_animal", examples)
    if isinstance(animals, str) or isinstance(colours, str):
        raise LlavamechError("absent_animal needs lists of the world's animals and colours, not one word: "
                             f"got animals={animals!r}, colours={colours!r}")
    rng = np.random.default_rng(validate.whole("seed", seed, 0))
    rows = []
    for i, example in enumerate(progress(examples, f"{model.name}: absent animals")):
        missing = [a for a in animals if a not in dict(example.facts)]
        if not missing or not example.boxes:
            continue
        size = load_image(example.image).size
        for asked, item in (("present", example), ("absent", example.asking(missing[rng.integers(len(missing))]))):
            x = model.explain(item.image, question=item.question)
            grid = np.asarray(x.patch_grid)
            on_animals = animals_mask(example, size, model.processor.image_processor, x.grid_shape)
            of_colour = animals_mask(example, size, model.processor.image_processor, x.grid_shape, colour=x.answer)
            positive = np.clip(grid, 0, None)
            top = x.top_heads[0]
            rows.append({"scene": i, "asked": asked, "animal": item.animal, "answer": x.answer,
                         "p(answer)": x.answer_prob, "a colour": float(x.answer in colours),
                         "a colour of the scene": float(x.answer in dict(example.facts).values()),
                         "correct": np.nan if item.colour is None else float(x.answer == item.colour),
                         "top patch on an animal": float(pointing(grid, on_animals)),
                         "top patch on an animal of that colour": float(pointing(grid, of_colour)),
                         "that colour's animals' share of the patches": float(of_colour.mean()),
                         "mass on the animals": float(positive[on_animals].sum() / positive.sum()),
                         "animals' share of the patches": float(on_animals.mean()),
                         "top head": f"{top['layer']}_{top['head']}"})
    return pd.DataFrame(rows)


def prior_baseline(model, examples: list[Example], means: Means | None = None) -> pd.DataFrame:
    """What the model answers without the image's content (the language prior that every deletion score sits
    on): one row per scene with the answer and p(answer) on the image, on a blank image of the image's mean colour,
    and with every patch's visual embedding replaced as `ablation` replaces one (the deletion curve's end)."""
    rows = []
    for i, example in enumerate(progress(examples, f"{model.name}: without the image")):
        image = load_image(example.image)
        seen = model.explain(image, question=example.question)
        blank = Image.new("RGB", image.size, tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0)))
        unseen = model.explain(blank, question=example.question)
        emb = embed(model, model.inputs(image, example.question), seen.trace.positions.image_positions)
        removed = float(np.exp(answer_logprob(model, emb, seen.answer_token_id,
                                              [list(range(len(emb.image_positions)))], means)[0]))
        blank_p = float(torch.softmax(unseen.trace.logits.float(), -1)[seen.answer_token_id])
        rows.append({"scene": i, "answer": seen.answer, "p(answer)": seen.answer_prob,
                     "correct": float(seen.answer == example.colour) if example.colour else np.nan,
                     "blank: answer": unseen.answer, "blank: same answer": float(unseen.answer == seen.answer),
                     "blank: correct": float(unseen.answer == example.colour) if example.colour else np.nan,
                     "blank: p(answer)": blank_p, "every patch removed: p(answer)": removed})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def randomised(model, modules: list, seed: int):
    """Inside the block, every weight matrix of `modules` (parts of `model`) is re-initialised: Gaussian with the
    original's standard deviation, seeded (norm gains and biases stay). Restored on the way out, even after an
    error. The model's lock is held throughout, so no other thread's pass sees the randomised weights."""
    with model_lock(model.hf):
        params = [p for m in modules for p in m.parameters() if p.dim() >= 2]
        saved = [p.detach().clone() for p in params]
        generator = torch.Generator().manual_seed(seed)
        try:
            with torch.no_grad():
                for p, original in zip(params, saved):
                    noise = torch.randn(p.shape, generator=generator) * original.float().std().cpu()
                    p.copy_(noise.to(p.device, p.dtype))
            yield
        finally:
            with torch.no_grad():
                for p, original in zip(params, saved):
                    p.copy_(original)


def cascade(model) -> list[tuple[str, list]]:
    """The model-parameter randomisation test's levels (Adebayo et al., 2018), top down: the last language-model
    layer, the last two, ..., every layer, then the projector too. [(label, modules randomised)]."""
    layers = list(model.anatomy.layers)
    levels = [(f"layer {len(layers) - 1}" if k == 1 else f"layers {len(layers) - k}–{len(layers) - 1}", layers[-k:])
              for k in range(1, len(layers) + 1)]
    return levels + [("layers and projector", layers + [model.hf.model.multi_modal_projector])]


def randomisation_test(model, examples: list[Example], methods=METHODS, means: Means | None = None,
                       heads: int = 3, ig_steps: int = 16, seed: int = 0) -> pd.DataFrame:
    """Do the maps change when the model's layers are re-initialised, top down? One row per (level, scene,
    method): the Spearman correlation of the map on the randomised model (for its own answer) with the map on the
    trained one. A map that explains the model changes with it (correlation falls towards 0); a map that stays is
    explaining the input, not the model."""
    def maps_of(example, i):
        return patch_maps(model, example.image, example.question, methods, heads=heads, means=means,
                          ig_steps=ig_steps, seed=seed + i)

    trained = [maps_of(e, i) for i, e in enumerate(examples)]
    rows = []
    for level, (label, modules) in enumerate(progress(cascade(model), f"{model.name}: randomised layers")):
        with randomised(model, modules, seed + level):
            for i, example in enumerate(examples):
                for method, pm in maps_of(example, i).items():
                    before, after = resolved(trained[i][method].scores).ravel(), resolved(pm.scores).ravel()
                    similar = spearmanr(before, after).statistic if before.std() > 0 and after.std() > 0 else 0.0
                    rows.append({"randomised": label, "scene": i, "method": method, "spearman": float(similar),
                                 "same answer": float(pm.answer == trained[i][method].answer)})
    return pd.DataFrame(rows)


def prior_table(prior: pd.DataFrame, colours: list[str], seed: int = 0) -> pd.DataFrame:
    """`prior_baseline`'s rows summarised: accuracy and p(answer) with the image, with a blank image and with every
    patch removed, each with its bootstrap interval, and the chance of naming the right one of the `colours` by a
    uniform guess."""
    def est(column):
        return bootstrap(prior[column].to_numpy(float), seed=seed)

    return pd.DataFrame({"value": {
        "accuracy, with the image": est("correct"), "accuracy, blank image": est("blank: correct"),
        f"chance (a uniform guess among the {len(colours)} colours)": f"{1 / len(colours):.3g}",
        "blank image gives the same answer": est("blank: same answer"),
        "p(answer), with the image": est("p(answer)"), "p(answer), blank image": est("blank: p(answer)"),
        "p(answer), every patch removed": est("every patch removed: p(answer)")}})


def similarity(randomisation: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`randomisation_test`'s rows summarised: per randomisation level (rows, top layer first) and method
    (columns), the mean Spearman correlation with the trained model's map and its bootstrap interval."""
    return randomisation.groupby(["randomised", "method"], sort=False)["spearman"].agg(
        lambda v: bootstrap(v.to_numpy(float), seed=seed)).unstack()


ABSENT_MEASURES = ("a colour", "a colour of the scene", "p(answer)", "top patch on an animal",
                   "animals' share of the patches", "top patch on an animal of that colour",
                   "that colour's animals' share of the patches", "mass on the animals")


def absent_table(absent: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`absent_animal`'s rows summarised: each measure with its bootstrap interval, asked about an absent and a
    present animal (columns)."""
    return pd.DataFrame({asked: {m: bootstrap(group[m].to_numpy(dtype=float), seed=seed) for m in ABSENT_MEASURES}
                         for asked, group in absent.groupby("asked", sort=False)})
