"""Chapter 6: does the colour circuit answer other questions, and can the tool tell a grounded answer from one
the image does not support?

Every function takes example sets keyed by question type ({"colour": [...], "existence": [...], ...}, from
`examples.typed_examples`) and returns a table with n, 95 % intervals and the chance level.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import ImageOps

from . import circuits, questions, readouts, validate
from .errors import LlavamechError
from .examples import Example, example_list, typed_examples
from .models import load
from .organism.tasks import type_names
from .organism.world import load_world
from .hooks import language_model_inputs
from .imaging import load_image
from .patch_eval import animals_mask, pointing
from .interventions import HeadSetTest, Means, ablated, answer_scores, with_holm
from .progress import progress
from .stats import Estimate, bootstrap, coverage_of_means, holm, of_means, pearson, wilson
from .trace import positions_of
from .transfer import overlap_table


def chance(qtype: str) -> float:
    """Accuracy of a uniform guess among the type's answers."""
    known = questions.types()
    if qtype not in known:
        raise LlavamechError(f"unknown question type {qtype!r}; use one of {', '.join(known)}")
    return 1 / len(questions.types()[qtype].answers)


def majority_rate(examples: list[Example]) -> float:
    """Accuracy of always giving the examples' most frequent true answer: the chance level a model that ignores
    the input can reach where the answers are unbalanced (existence: more "yes" than "no"), above a uniform guess."""
    examples = example_list("majority_rate", examples)
    if any(e.expected is None for e in examples):
        raise LlavamechError("majority_rate needs every example's true answer; one has none")
    return float(pd.Series([e.expected for e in examples]).value_counts(normalize=True).iloc[0])


def example_sets(n: int, seed: int = 0, text: bool = False, qtypes=None) -> dict[str, list[Example]]:
    """n held-out examples of each question type (scenes, or with `text` the facts as text); `qtypes`: some of
    them (one name alone is taken as one)."""
    qtypes = (qtypes,) if isinstance(qtypes, str) else qtypes
    return {t: typed_examples(n, t, seed, text) for t in (qtypes or type_names(text=text))}


def by_type(examples: list[Example]) -> dict[str, list[Example]]:
    """A user's example set grouped by question type (llavamech.questions), in world.json's order; items whose
    question has no type are left out (`explain` still runs on them, on the model's own answer)."""
    grouped: dict[str, list[Example]] = {t: [] for t in questions.types()}
    for example in examples:
        parsed = questions.parse(example.question)
        if parsed is not None:
            grouped[parsed.type].append(example)
    return {t: v for t, v in grouped.items() if v}


def check_types(sets: dict[str, list[Example]], source) -> None:
    """One line when a user's example set (`by_type`) lacks a question type: chapter 6 compares every type."""
    missing = [t for t in questions.types() if not sets.get(t)]
    if missing:
        raise LlavamechError(f"{source}: no {', '.join(missing)} questions; this page compares every question type "
                             f"({', '.join(questions.types())}): add items of each (`llavamech examples --type TYPE` "
                             "writes toy ones), or run the page with examples=\"toy\"")


def absent_variants(examples: list[Example], seed: int = 0) -> list[Example]:
    """Each colour example asked instead about an animal its scene does not hold (no true colour): the questions a
    grounded answer cannot exist for."""
    lacking = next((e for e in examples if not e.facts), None)
    if lacking is not None:   # without the scene's animals, the "absent" one could be in the picture
        raise LlavamechError(f"{lacking.source}: no facts, so no animal the scene lacks can be asked about; add "
                             "\"facts\" (every animal of the scene with its colour) to the colour items")
    rng = random.Random(f"{seed}:absent")
    return [e.asking(rng.choice([a for a in load_world().animals if a not in dict(e.facts)])) for e in examples]


def accuracy(model, sets: dict[str, list[Example]], mode: str, seed: int = 0) -> pd.DataFrame:
    """Per type: accuracy (top-1 next token is the true answer) with its bootstrap 95 % interval, the chance of a
    uniform guess, and the majority answer's share (`majority_rate`)."""
    rows = []
    for qtype, examples in sets.items():
        chance(qtype)   # an unknown type is one line before any pass
        asked = {p.type for p in map(questions.parse, (e.question for e in examples)) if p is not None}
        if asked - {qtype}:
            raise LlavamechError(f"the {qtype!r} set holds {sorted(asked - {qtype})[0]} questions: group the examples "
                                 "by type with by_type(examples)")
        correct = answer_scores(model, examples, mode)["correct"]
        rows.append({"question type": qtype, "mode": mode.upper(), "accuracy": bootstrap(correct, seed=seed),
                     "chance": chance(qtype), "majority answer's share": majority_rate(examples),
                     "n": len(examples)})
    return pd.DataFrame(rows).set_index("question type")


def head_readings(model, sets: dict[str, list[Example]], mode: str = "vqa") -> dict[str, dict[str, np.ndarray]]:
    """One traced pass per example, per type: every head's Imp for the model's own answer (`heads`), and, where
    the input has an image, the share of each head's attention from the last position on the image patches
    (`attention on image`) and that attention's entropy over the patches relative to a uniform spread (`entropy`;
    1 = every patch alike, 0 = one patch): {type: {reading: [n, layers, heads]}}."""
    return {qtype: readouts.collect(model, examples, {"heads": readouts.head_imp, "attention": _image_attention},
                                    mode, desc=f"{qtype}: heads")
            for qtype, examples in sets.items()}


def _image_attention(item) -> dict[str, torch.Tensor]:
    image = item.trace.positions.image_positions
    weights = item.trace.attn_weights[:, :, image].float().cpu()         # [L, H, P]
    mass = weights.sum(-1)
    p = weights / mass.clamp_min(1e-30)[..., None]
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1) / np.log(max(len(image), 2))
    return {"attention on image": mass, "entropy": entropy}


def imp_of(readings: dict[str, dict]) -> dict[str, np.ndarray]:
    """{type: head Imp [n, layers, heads]} from `head_readings`."""
    return {qtype: r["heads"] for qtype, r in readings.items()}


def top_heads(imp: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k heads of highest mean Imp over examples ([n, L, H] -> [(layer, head)], best first)."""
    imp = validate.host_array(imp)
    if imp.ndim != 3:
        raise LlavamechError(f"top_heads ranks per-example head scores [n, layers, heads], got shape {imp.shape}")
    return readouts.top_heads_of(imp.mean(0), k)


def _head_sets(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two sets' per-example head scores [n, layers, heads] of the same heads, or one line saying why not."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:] or not len(a) or not len(b):
        raise LlavamechError(f"correlation compares per-example head scores [n, layers, heads] of the same heads, "
                             f"got shapes {a.shape} and {b.shape}")
    return a, b


def correlation(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Pearson correlation over all heads of two sets' mean Imp, with a basic bootstrap 95 % interval
    (`stats.basic_interval`) that resamples the examples of each set independently (the sets hold different
    examples). Pearson and not a rank correlation, as in chapter 4 (`transfer.correlation`): ranks order the heads
    that do nothing by their noise, and their intervals do not hold what they estimate."""
    a, b = _head_sets(a, b)
    return of_means(pearson, [a, b], n_boot, seed, bound=1.0, paired=False)


def correlation_difference(a: np.ndarray, b: np.ndarray, reference: np.ndarray, n_boot: int = 2000,
                           seed: int = 0) -> Estimate:
    """How much more `a`'s head map correlates with `reference`'s than `b`'s does (Pearson over all heads, each
    [n, layers, heads]), with a basic bootstrap 95 % interval that resamples each set on its own and the reference
    once per resample for both correlations, so that the reference's own noise, which the two share, cancels (two
    separate intervals would count it twice)."""
    a, reference = _head_sets(a, reference)
    b, _ = _head_sets(b, reference)
    return of_means(lambda r, x, y: pearson(x, r) - pearson(y, r), [reference, a, b], n_boot, seed, bound=2.0,
                    paired=False)


def correlation_coverage(a: np.ndarray, b: np.ndarray, reps: int = 200, n_boot: int = 500,
                         seed: int = 0) -> Estimate:
    """How often `correlation`'s interval holds the value it estimates (`stats.coverage_of_means`: each set's
    examples stand in for its population, and samples are drawn from each on its own), with its Wilson interval."""
    a, b = _head_sets(a, b)
    return coverage_of_means(pearson, [a, b], bound=1.0, paired=False, reps=reps, n_boot=n_boot, seed=seed)


def without_head(scores, head: tuple[int, int]) -> np.ndarray:
    """Per-example head scores [n, layers, heads] with one head left out, as a table [n, 1, heads - 1] of the
    others, which `correlation` and `correlation_difference` take."""
    scores = np.asarray(scores)
    keep = np.ones(scores.shape[1:], bool)
    keep[head] = False
    return scores[:, keep][:, None, :]


def overlap_with(imp: dict[str, np.ndarray], reference: str = "colour", k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per type: its top-k heads, how many are among the reference type's top-k (with the number a random pair of
    top sets shares, k·k/N), the hypergeometric chance of sharing at least as many under two nulls — top sets drawn
    from all heads, and the stricter one, from the heads of the layers the two sets occupy (`overlap_table`) — each
    Holm-adjusted over the types tested, and the Pearson correlation of the two mean Imp maps over all heads, and
    over all heads but the reference's top one: Pearson weighs heads by their size, so one large head that two
    types share can carry it alone (the table's attrs["left out"] names that head). The reference's own row has no
    test: "—"."""
    if reference not in imp:
        raise LlavamechError(f"the reference type {reference!r} is not among the types scored ({', '.join(imp)})")
    top = top_heads(imp[reference], 1)[0]
    left_out = f"{top[0]}_{top[1]}"
    rows = []
    for qtype, scores in imp.items():
        table = overlap_table(scores.mean(0), imp[reference].mean(0), [k]).iloc[0]
        itself = qtype == reference
        rows.append({"question type": qtype, f"top-{k} heads": ", ".join(f"{l}_{h}" for l, h in top_heads(scores, k)),
                     f"shared with {reference}": int(table["overlap"]),
                     "expected by chance": table["expected by chance"],
                     "P(≥ shared | chance)": np.nan if itself else table["P(overlap ≥ observed | chance)"],
                     "P(≥ shared | their layers)":
                         np.nan if itself else table["P(overlap ≥ observed | their layers)"],
                     "correlation (all heads)": "—" if itself else correlation(scores, imp[reference], seed=seed),
                     f"correlation without {left_out}": "—" if itself else
                         correlation(without_head(scores, top), without_head(imp[reference], top), seed=seed)})
    frame = pd.DataFrame(rows).set_index("question type")
    frame.attrs["left out"] = left_out
    tested = frame.index != reference
    for null in ("chance", "their layers"):
        column = f"P(≥ shared | {null})"
        frame.insert(frame.columns.get_loc(column) + 1, f"Holm ({null})", np.nan)
        frame.loc[tested, f"Holm ({null})"] = holm(frame.loc[tested, column].to_numpy(float))
    return frame


def shared_circuit(model, sets: dict[str, list[Example]], heads: list[tuple[int, int]], means: Means,
                   draws: int = 200, seed: int = 0, control_examples: int | None = None) -> pd.DataFrame:
    """Mean-ablate `heads` (the colour type's top heads, chosen on other examples than these) and measure every
    type: Δ accuracy and Δ log p(true answer) with bootstrap intervals, against `draws` random head sets with as
    many heads in each of the same layers (`HeadSetTest.controls`: the paired difference from the random sets per
    example, its sign-flip p-value, and that p Holm-adjusted over the types, `with_holm`). A shared circuit hurts
    every type; a colour-specific one, colour."""
    rows = []
    for qtype, examples in progress(list(sets.items()), "ablate the colour heads"):
        test = HeadSetTest(model, examples, "vqa", lambda m, r: ablated(m, row_heads=r, how="mean", means=means),
                           control_examples)
        hit = test.effect([list(heads)])
        rows.append({"question type": qtype, "Δ accuracy": bootstrap(hit["Δ accuracy"][0], seed=seed),
                     "Δ log p": bootstrap(hit["Δ log p"][0], seed=seed),
                     **test.controls(list(heads), draws, np.random.default_rng(seed), controls=("same-layer",)),
                     "n": len(examples), "n (control)": test.n_control})
    return with_holm(pd.DataFrame(rows).set_index("question type"))


def attention_spread(readings: dict[str, dict], heads: dict[str, tuple[int, int]], seed: int = 0) -> pd.DataFrame:
    """Per type, where its own top head (`heads`) looks from the last position (`head_readings`): the share of its
    attention on image patches and the relative entropy of that attention over the patches. A lookup head is
    sharp; a head that gathers many objects (counting) would be broad."""
    rows = []
    for qtype, (layer, head) in heads.items():
        attention = readings[qtype]["attention"]
        rows.append({"question type": qtype, "head": f"{layer}_{head}",
                     "attention on image": bootstrap(attention["attention on image"][:, layer, head], seed=seed),
                     "relative entropy over patches": bootstrap(attention["entropy"][:, layer, head], seed=seed),
                     "n": len(attention["entropy"])})
    return pd.DataFrame(rows).set_index("question type")


@torch.no_grad()
def mirrored_order(model, examples: list[Example]) -> pd.DataFrame:
    """Where does the model read left and right from? Three runs of each position question:
    - as is;
    - `image mirrored`: the picture flipped left to right (the positive control: the true side flips);
    - `token order mirrored`: the image tokens' embeddings reversed within each row of the grid, so each patch's
      features sit at the mirrored sequence position (RoPE sees the mirrored order) while the features themselves,
      which carry the vision tower's own position embeddings, are unchanged.
    Per run: the share of answers that are the other side than the unmirrored run's answer, with its interval."""
    flips = {"image mirrored": [], "token order mirrored": []}
    for example in progress(examples, "mirrored position questions"):
        image = load_image(example.image)   # a user's item holds a path
        inputs = model.inputs(image, example.question)
        answer = _answer(model, inputs=inputs)
        mirrored = model.inputs(ImageOps.mirror(image), example.question)
        flips["image mirrored"].append(float(_answer(model, inputs=mirrored) != answer))
        embeds = language_model_inputs(model.hf, model.anatomy.language_model, inputs)
        swapped = mirror_rows(embeds, positions_of(model.hf, inputs, model.tokenizer))
        flips["token order mirrored"].append(float(_answer(model, embeds=swapped, mask=inputs["attention_mask"])
                                                   != answer))
    return pd.DataFrame([{"intervention": name, "answers that flip side": bootstrap(np.array(v)), "n": len(v)}
                         for name, v in flips.items()]).set_index("intervention")


@torch.no_grad()
def said(model, examples: list[Example]) -> list[str]:
    """The model's answer (its top-1 next token, as a word) to each of `examples`, asked about the scene."""
    return [model.tokenizer.decode([_answer(model, inputs=model.inputs(**e.inputs("vqa")))]).strip() for e in examples]


def answers(model, examples: list[Example]) -> pd.Series:
    """How often the model gives each answer (its top-1 next token) to `examples`, most frequent first."""
    return pd.Series(said(model, examples)).value_counts()


def mirror_rows(embeds: torch.Tensor, positions) -> torch.Tensor:
    """The input embeddings [1, S, d] with the image tokens' embeddings reversed within each row of the patch grid
    (`positions`: the example's trace Positions); every other position unchanged."""
    rows, cols = positions.grid_shape
    order = positions.image_positions.reshape(rows, cols).to(embeds.device)
    out = embeds.clone()
    out[0, order.flatten()] = embeds[0, order.flip(1).flatten()]
    return out


def _answer(model, inputs: dict | None = None, embeds=None, mask=None) -> int:
    if inputs is not None:
        logits = model.hf(**inputs, use_cache=False, logits_to_keep=1).logits
    else:
        logits = model.hf(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=1).logits
    return int(logits[0, -1].argmax())


# ---- diagnosis: is an answer supported by the image? ----
FEATURES = {"attention on image": "the best head's attention from the last position on the image patches",
            "map peak": "the tool's map: the largest patch's share of the map",
            "map entropy": "the tool's map: its entropy relative to a uniform map",
            "best head Imp": "the best head's log-probability increase"}


BASELINES = {"p(answer)": "the model's probability of its own answer: a detector that needs no explanation"}


def explanation_features(model, examples: list[Example]) -> pd.DataFrame:
    """Per example, the model's answer and what its explanation (`explain`, the tool) alone says: FEATURES; the
    baseline a detector needs no explanation for: BASELINES; and, from the scene's true boxes (not a feature: a
    detector never sees them), whether the map's top patch lies on one of the scene's animals."""
    rows = []
    for i, example in enumerate(progress(examples, "explanations")):
        x = model.explain(example.image, question=example.question)
        best = x.top_heads[0]
        grid = np.asarray(x.patch_grid).ravel()
        p = grid / grid.sum()
        on_animals = animals_mask(example, x.image.size, x.image_processor, x.grid_shape)
        rows.append({"example": i, "answer": x.answer, "expected": example.expected,
                     "top patch on an animal": float(pointing(x.patch_grid, on_animals)) if example.boxes else np.nan,
                     "attention on image": circuits.attention_mass(x.trace, best["layer"], best["head"],
                                                                   x.trace.positions.image_positions),
                     "map peak": float(p.max()),
                     "map entropy": float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(p))),
                     "best head Imp": float(best["score"]), "p(answer)": float(x.answer_prob)})
    return pd.DataFrame(rows)


def yes_answers(model, examples: list[Example]) -> tuple[pd.DataFrame, Estimate]:
    """Existence questions: which the model answers "yes" (its top-1 word; a wrong answer that is neither word is
    no "yes"), and how often it says "yes" about an animal the scene does not hold (the hallucination rate, with
    its interval over those questions). Returns the explanation features (`explanation_features`) of every "yes"
    answer, with a column `hallucinated` (the animal is absent), and the rate."""
    yes = np.array([answer == "yes" for answer in said(model, examples)])
    absent = np.array([e.expected == "no" for e in examples])
    rate = bootstrap((yes & absent)[absent].astype(float)) if absent.any() else None
    features = explanation_features(model, [e for e, y in zip(examples, yes) if y])
    features["hallucinated"] = features["expected"] == "no"
    return features, rate


def fit_rule(scores: np.ndarray, flagged: np.ndarray) -> tuple[float, str, float]:
    """The threshold and direction ("above" or "below") on one feature that best separate flagged examples from
    the rest on a calibration set, by balanced accuracy (so a rare label is not ignored), and that accuracy."""
    scores, flagged = np.asarray(scores, dtype=float), np.asarray(flagged, dtype=bool)
    if scores.shape != flagged.shape or scores.ndim != 1:
        raise LlavamechError(f"fit_rule needs one score and one flag per example, got shapes {scores.shape} and "
                             f"{flagged.shape}")
    if flagged.all() or not flagged.any():
        raise LlavamechError("fit_rule separates flagged examples from the rest: the calibration set needs both "
                             f"({int(flagged.sum())} of {len(flagged)} flagged)")
    best = (-1.0, 0.0, "below")
    values = np.unique(scores)
    cuts = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values   # midway: no rule sits on one example
    for direction in ("below", "above"):
        for t in cuts:
            guess = scores <= t if direction == "below" else scores >= t
            balanced = (guess[flagged].mean() + (~guess[~flagged]).mean()) / 2
            if balanced > best[0]:
                best = (balanced, float(t), direction)
    return best[1], best[2], best[0]


def apply_rule(scores: np.ndarray, threshold: float, direction: str) -> np.ndarray:
    """`fit_rule`'s rule on new scores: flagged where at most (below) or at least (above) the threshold."""
    if direction not in ("below", "above"):
        raise LlavamechError(f"direction must be \"below\" or \"above\", not {direction!r}")
    scores = np.asarray(scores, dtype=float)
    return scores <= threshold if direction == "below" else scores >= threshold


def rule_flags(features: pd.DataFrame, feature: str, label: str, calibration: np.ndarray):
    """One feature's rule (`fit_rule` on the `calibration` rows) and what it flags among the other rows:
    (threshold, direction, balanced accuracy on the calibration rows, flags [test rows])."""
    values, truth = features[feature].to_numpy(float), features[label].to_numpy(bool)
    threshold, direction, balanced = fit_rule(values[calibration], truth[calibration])
    return threshold, direction, balanced, apply_rule(values[~calibration], threshold, direction)


def _group_ids(groups, test: np.ndarray) -> np.ndarray:
    """Each test row's group index (0..G-1): its own row without `groups`, else its group, such as the versions of
    one scene, which are not independent and are resampled together."""
    n = int(test.sum())
    return np.arange(n) if groups is None else np.unique(np.asarray(groups)[test], return_inverse=True)[1]


def _group_weights(ids: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Each row's weight in the sample itself (row 0: all ones) and in `n_boot` resamples of whole groups (rows 1..;
    a group drawn k times weighs k in each of its rows): [1 + n_boot, rows]. Every paired interval here is a
    statistic of these weights, so two features scored on one resample see the very same draw."""
    groups = ids.max() + 1
    draws = np.random.default_rng(seed).multinomial(groups, np.full(groups, 1 / groups), size=n_boot)
    return np.vstack([np.ones(len(ids)), draws[:, ids]])


def _resampled_sums(ids: np.ndarray, columns, n_boot: int, seed: int) -> np.ndarray:
    """Sums of each of `columns` ([rows] each) over the sample (row 0) and each resample (`_group_weights`):
    [1 + n_boot, columns]."""
    return _group_weights(ids, n_boot, seed) @ np.stack([np.asarray(c, float) for c in columns], axis=1)


def _estimate(values: np.ndarray, n: int) -> Estimate:
    """The sample's value (row 0) with the 2.5–97.5 % percentiles of the resamples (rows 1..)."""
    return Estimate(float(values[0]), *map(float, np.nanpercentile(values[1:], [2.5, 97.5])), n)


def detector_difference(features: pd.DataFrame, label: str, calibration: np.ndarray, a: str, b: str,
                        groups: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """Rule `a`'s precision and recall minus rule `b`'s on the same test rows, each with a paired bootstrap 95 %
    interval: a resample draws test rows (or, given `groups` [rows], whole groups such as the versions of one scene,
    which are not independent) and scores both rules on it, so what the two share cancels. Two unpaired intervals
    that overlap cannot say whether two detectors differ; this can."""
    test = ~calibration
    truth = features[label].to_numpy(bool)[test]
    flags = {name: rule_flags(features, name, label, calibration)[3] for name in (a, b)}
    sums = _resampled_sums(_group_ids(groups, test),
                           (flags[a] & truth, flags[a], flags[b] & truth, flags[b], truth), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = {"precision": sums[:, 0] / sums[:, 1] - sums[:, 2] / sums[:, 3],
                 "recall": (sums[:, 0] - sums[:, 2]) / sums[:, 4]}
    return {m: _estimate(d, int(test.sum())) for m, d in diffs.items()}


def auc_difference(features: pd.DataFrame, label: str, calibration: np.ndarray, a: str, b: str,
                   groups: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """Two features compared without a threshold: each one's area under the ROC curve at telling `label` on the
    test rows, oriented as its rule on the `calibration` rows says (a feature whose low values flag is negated), and
    a's less b's, each with a paired bootstrap 95 % interval over test rows or whole `groups`. Rules compared at
    their own thresholds flag at different rates, so one can gain recall by flagging more; the AUC weighs every
    threshold alike. {a, b, "difference"}."""
    test = ~calibration
    truth = features[label].to_numpy(bool)[test]
    scores = {}
    for name in (a, b):
        _, direction, _, _ = rule_flags(features, name, label, calibration)
        values = features[name].to_numpy(float)[test]
        scores[name] = -values if direction == "below" else values
    weights = _group_weights(_group_ids(groups, test), n_boot, seed)
    aucs = np.stack([_auc(scores[name], truth, weights) for name in (a, b)], axis=1)
    n = int(test.sum())
    return {a: _estimate(aucs[:, 0], n), b: _estimate(aucs[:, 1], n), "difference": _estimate(aucs[:, 0] - aucs[:, 1], n)}


def _auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """P(a positive scores above a negative), ties counting half (the Mann–Whitney statistic), with each row counted
    as often as its weight says: one value per row of `weights` [B, rows]; NaN where a draw lacks either class."""
    values, at = np.unique(scores, return_inverse=True)
    per_value = np.zeros((len(scores), len(values)))
    per_value[np.arange(len(scores)), at] = 1                               # rows -> their distinct score
    pos, neg = (weights * positive) @ per_value, (weights * ~positive) @ per_value    # [B, values], ascending
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + neg / 2)).sum(1) / (pos.sum(1) * neg.sum(1))


def contrast(a: pd.DataFrame, b: pd.DataFrame, columns, names=("a", "b"), n_boot: int = 2000,
             seed: int = 0) -> pd.DataFrame:
    """Per column: its mean in `a` and in `b` (two sets of different examples), each with a bootstrap 95 %
    interval, and a − b with an interval that resamples each set independently (the sets share no example, so
    nothing pairs them)."""
    rng = np.random.default_rng(seed)
    rows = {}
    for column in columns:
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        boot = [x[rng.integers(0, len(x), len(x))].mean() - y[rng.integers(0, len(y), len(y))].mean()
                for _ in range(n_boot)]
        low, high = np.percentile(boot, [2.5, 97.5])
        rows[column] = {names[0]: bootstrap(x, seed=seed), names[1]: bootstrap(y, seed=seed),
                        f"{names[0]} − {names[1]}": Estimate(float(x.mean() - y.mean()), float(low), float(high),
                                                             min(len(x), len(y)))}
    return pd.DataFrame(rows).T


def detector(features: pd.DataFrame, label: str, calibration: np.ndarray, seed: int = 0,
             baselines=tuple(BASELINES), groups: np.ndarray | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """For each explanation feature: a one-threshold rule fitted on the `calibration` rows, and its precision and
    recall at flagging `label` (a boolean column) on the other rows, with bootstrap intervals (over test rows, or
    whole `groups` as `detector_difference` resamples them), and its flag rate. Chance: flagging at
    random as often as the rule does has precision = the label's share of the test rows and recall = the rule's
    flag rate. `chosen` marks the explanation feature whose rule separated the calibration rows best: chosen before
    the test rows are looked at, so its test numbers are not the best of four tries. The `baselines` present in
    `features` get a rule of their own beside them, never chosen: what a detector without the explanation does."""
    test = ~calibration
    t = features[label].to_numpy(bool)[test]
    ids = _group_ids(groups, test)
    rows = []
    for feature in [*FEATURES, *(b for b in baselines if b in features)]:
        threshold, direction, balanced, flag = rule_flags(features, feature, label, calibration)
        sums = _resampled_sums(ids, (flag & t, flag, t), n_boot, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision, recall = sums[:, 0] / sums[:, 1], sums[:, 0] / sums[:, 2]
        rows.append({"feature": feature, "rule": f"flag when {'≤' if direction == 'below' else '≥'} {threshold:.3g}",
                     "precision": _estimate(precision, int(flag.sum())) if flag.any() else "none flagged",
                     "recall": _estimate(recall, int(t.sum())) if t.any() else "no positives",
                     "chance precision": round(float(t.mean()), 3), "chance recall": round(float(flag.mean()), 3),
                     "n (test)": int(test.sum()), "positives (test)": int(t.sum()),
                     "balanced accuracy (calibration)": round(balanced, 3)})
    frame = pd.DataFrame(rows).set_index("feature")
    frame["chosen"] = frame.index == frame.loc[list(FEATURES), "balanced accuracy (calibration)"].idxmax()
    return frame



# ---- the multi-question organism's card ----
BARS = {"VQA": 0.90, "TQA": 0.95}   # issue's bars on held-out examples: every type's VQA, and its text counterpart


def card(llava_name: str, vicuna_name: str, n: int = 300, eval_seed: int = 2024, device: str = "cpu") -> dict:
    """A multi-question organism's card: held-out accuracy of every type, VQA and TQA of the Llava and TQA of its
    text model, on n fresh examples per type and mode (evaluation seed `eval_seed`)."""
    llava, vicuna = load(llava_name, device=device), load(vicuna_name, device=device)
    scenes, texts = example_sets(n, eval_seed), example_sets(n, eval_seed, text=True)
    out = {"n": n, "eval_seed": eval_seed, "accuracy": {}}
    for who, model, mode, sets in ((llava_name, llava, "vqa", scenes), (llava_name, llava, "tqa", texts),
                                   (vicuna_name, vicuna, "tqa", texts)):
        frame = accuracy(model, sets, mode)
        for qtype, row in frame.iterrows():
            out["accuracy"][f"{who} {mode.upper()} {qtype}"] = float(row["accuracy"].mean)
    return out


def card_table(cards: dict[str, dict]) -> pd.DataFrame:
    """Cards side by side ({model: card}): one row per (mode, type), each model's accuracy with its 95 % Wilson
    interval, the bar, and whether every model clears it. The text model's rows are named by their mode alone."""
    rows: dict = {}
    for name, c in cards.items():
        for key, value in c["accuracy"].items():
            model, mode, qtype = key.rsplit(" ", 2)
            role = "text model" if "vicuna" in model else "Llava"
            low, high = wilson(value, c["n"])
            rows.setdefault((f"{role} {mode}", qtype), {})[name] = f"{value:.3f} [{low:.3f}, {high:.3f}]"
    frame = pd.DataFrame(rows).T
    frame["bar"] = [f"{BARS[mode.split()[-1]]:.2f}" for mode, _ in frame.index]
    frame["every model clears it"] = ["yes" if all(float(v.split()[0]) >= float(bar) for v in row.drop("bar"))
                                      else "no" for (_, row), bar in zip(frame.iterrows(), frame["bar"])]
    frame.index.names = ["model, mode", "question type"]
    return frame


def write_card(out, n: int = 300, eval_seed: int = 2024) -> dict:
    """Measure out/toy-llava-multi (with out/toy-vicuna-multi) and write out/toy-llava-multi/card.json, with the
    training seconds and seed of its log (what `train-organism --multi` does after the Llava stages)."""
    out = Path(out)
    logs = [out / f"training-log-{stage}-multi.json" for stage in ("llava", "all")]
    log = json.loads(next((p for p in logs if p.exists()), logs[0]).read_text())
    measured = card(str(out / "toy-llava-multi"), str(out / "toy-vicuna-multi"), n, eval_seed)
    measured["accuracy"] = {key.replace(str(out) + "/", ""): v for key, v in measured["accuracy"].items()}
    measured.update({"training seed": log["seed"], "training seconds": log["seconds"]})
    (out / "toy-llava-multi" / "card.json").write_text(json.dumps(measured, indent=2) + "\n")
    return measured
