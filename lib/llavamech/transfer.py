"""Head transfer (the book's chapter 4, "tuning enhances Vicuna's heads"): do the heads that answer a text question
in the language model also answer it, and the visual question, in the Llava tuned from it? And, beyond the paper,
how far did each head's weights move in tuning, and does putting the old weights back undo what tuning gave?

Head scores are mean head Imp [L, H] over one paired example set; per-example arrays are [n, L, H].
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np
import pandas as pd
import torch
from scipy.stats import hypergeom, spearmanr

from . import questions, validate
from .errors import LlavamechError
from .hooks import hooked, model_lock
from .imaging import load_image
from .interventions import CONTROLS, HeadSetTest, ablated
from .progress import progress
from .reference import paper_numbers
from .stats import Estimate, bootstrap, coverage_of_means, holm, of_means, pearson, sign_flip_p, spearman

CORRELATIONS = {"pearson": pearson, "spearman": spearman}


def head_table(name: str, scores) -> np.ndarray:
    """Scores of every head, [layers, heads] (mean over examples), as a float array; one line for any other shape
    (per-example scores [n, L, H] are the commonest slip: average them first)."""
    scores = validate.host_array(scores, float)
    if scores.ndim != 2 or not scores.size:
        hint = ": per-example scores, average them over examples with .mean(0) first" if scores.ndim == 3 else ""
        raise LlavamechError(f"{name} must be one score per head, [layers, heads], not shape {scores.shape}{hint}")
    if not np.isfinite(scores).all():
        raise LlavamechError(f"{name} holds NaN or infinite scores: a head without a score cannot be ranked")
    return scores


def per_example_tables(names: list[str], arrays: list) -> list[np.ndarray]:
    """Per-example head scores [n, layers, heads], all of one shape (the same examples and heads), as float arrays."""
    out = [validate.host_array(x, float) for x in arrays]
    for name, x in zip(names, out):
        if x.ndim != 3:
            raise LlavamechError(f"{name} must be per-example head scores [n, layers, heads], not shape {x.shape}")
    if len({x.shape for x in out}) > 1:
        raise LlavamechError(f"{' and '.join(names)} must score the same examples and heads, "
                             f"not shapes {' vs '.join(str(x.shape) for x in out)}")
    return out


def top_set(scores, k: int) -> set[tuple[int, int]]:
    """The k heads with the highest score, as (layer, head)."""
    scores = head_table("top_set's scores", scores)
    k = validate.whole("k", k, 1, scores.size, f" (there are {scores.size} heads)")
    flat, cols = scores.ravel(), scores.shape[1]
    return {(int(i) // cols, int(i) % cols) for i in np.argsort(-flat, kind="stable")[:k]}


def overlap_table(a, b, ks, seed: int = 0) -> pd.DataFrame:
    """For each k: how many of the top-k heads of `a` are among the top-k of `b`; the number expected if the two
    top sets were drawn at random (k·k/N of N heads), and the chance of an overlap at least this large (the
    hypergeometric tail); and the same within the layers the two top sets occupy (N = those layers' heads), the
    stricter null where a circuit sits in few layers: two sets confined to one layer of 8 heads share heads often."""
    a, b = head_table("overlap_table's first scores", a), head_table("overlap_table's second scores", b)
    if a.shape != b.shape:
        raise LlavamechError(f"overlap_table compares the same heads: shapes {a.shape} and {b.shape} differ")
    n = a.size
    rows = []
    for k in ([ks] if isinstance(ks, numbers.Integral) else ks):
        top_a, top_b = top_set(a, k), top_set(b, k)
        shared = len(top_a & top_b)
        within = len({layer for layer, _ in top_a | top_b}) * a.shape[-1]
        rows.append({"k": k, "share of heads": k / n, "overlap": shared, "expected by chance": k * k / n,
                     "P(overlap ≥ observed | chance)": float(hypergeom.sf(shared - 1, n, k, k)),
                     "heads in their layers": within, "expected (their layers)": k * k / within,
                     "P(overlap ≥ observed | their layers)": float(hypergeom.sf(shared - 1, within, k, k))})
    return pd.DataFrame(rows).set_index("k")


def correlation(per_example_a, per_example_b, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Pearson correlation over all heads of the mean scores of two settings on the same examples, with a bootstrap
    95 % interval, examples resampled together in both settings.

    Why not Spearman's rank correlation: about half of a model's heads do nothing for the answer (their mean Imp is
    within a thousandth of zero), and ranks order them by their noise, which every resample reshuffles. On chapter
    4's own examples a rank correlation's interval (BCa or basic) held the value it estimates in 59–85 % of nested
    resamples, Pearson's in 89–96 % (`interval_coverage` measures it; the chapter shows it). Pearson weighs each head
    by how much it does, which is the question: do the heads that matter matter alike?
    The interval is `_over_examples`' basic bootstrap interval."""
    return _over_examples(pearson, [per_example_a, per_example_b], n_boot, seed)


def parent_gap(parent, own, other, within_layer: bool = False, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """How much more alike a language model's heads score with its own Llava's than with another's: the Pearson
    correlation over all heads of `parent`'s mean scores with `own`'s, less with `other`'s ([n, L, H] each, on the
    same examples), with a paired 95 % bootstrap interval (the three resampled together, so the parent's own noise
    counts once). The intervals resample examples, not training runs. `within_layer`: each head's score taken less its
    layer's mean, so that which layer does the work, which any Llava of the task may share, counts for nothing and
    only how the heads differ inside their layers, which separately trained models do not share, is left."""
    r = _within_layer(np.asarray(parent).shape[-1]) if within_layer else pearson
    return _over_examples(_gap(r), [parent, own, other], n_boot, seed, bound=2.0)


def interval_coverage(per_example: list, statistic: str = "pearson", reps: int = 200, n_boot: int = 500,
                      seed: int = 0) -> Estimate:
    """How often the interval of `correlation` (two settings' [n, L, H] scores) or `parent_gap` (three), with
    `statistic` "pearson" (theirs) or "spearman" (a rank correlation's), holds the value it estimates, measured by a
    nested bootstrap: the examples stand in for the population (its value: the statistic of all of them), `reps`
    samples of the same size are drawn from them, and each gets its interval. The share that hold the population's
    value, with its Wilson 95 % interval; a calibrated interval holds it 95 % of the time."""
    if statistic not in CORRELATIONS:
        raise LlavamechError(f"statistic must be one of {', '.join(CORRELATIONS)}, not {statistic!r}")
    if len(per_example) not in (2, 3):
        raise LlavamechError(f"interval_coverage takes two settings (a correlation) or three (a parent gap), "
                             f"got {len(per_example)}")
    r = CORRELATIONS[statistic]
    stat, bound = (r, 1.0) if len(per_example) == 2 else (_gap(r), 2.0)   # a correlation, or a difference of two
    tables = per_example_tables([f"setting {i + 1}'s scores" for i in range(len(per_example))], per_example)
    return coverage_of_means(stat, tables, bound, reps=reps, n_boot=n_boot, seed=seed)


def crossed_gaps(parents: dict, children: dict, within_layer: bool = False, n_boot: int = 2000,
                 seed: int = 0) -> dict:
    """Two language models crossed with two Llavas: `parents` {name: [n, L, H] text scores}, `children` {parent's
    name: the VQA scores of the Llava tuned from it}, on the same examples. Each parent's `parent_gap` (its own
    child less the other's), so that neither a child that is simply more typical nor a parent that is simply easier
    to match can make the difference: {name: Estimate}."""
    if len(parents) != 2 or set(children) != set(parents):
        raise LlavamechError(f"a crossing needs two parents, each with its child (parents {list(parents)}, "
                         f"children of {list(children)})")
    a, b = parents
    return {a: parent_gap(parents[a], children[a], children[b], within_layer, n_boot, seed),
            b: parent_gap(parents[b], children[b], children[a], within_layer, n_boot, seed)}


def inherited(gaps: dict) -> str:
    """`crossed_gaps`' verdict in words: each parent's gap above zero (its interval's low end), or only one's."""
    above = [g.low > 0 for g in gaps.values()]
    return "yes, from both parents" if all(above) else "from one parent only" if any(above) else "not shown"


def child_spread(parent, children: list, within_layer: bool = False) -> float:
    """How far two Llavas of one language model differ in their Pearson correlation with another model's `parent` scores
    ([n, L, H] each): the scale of one training run's luck, beside which a `parent_gap` is read (`within_layer`: as
    `parent_gap`'s, each head less its layer's mean)."""
    if len(children) != 2:
        raise LlavamechError(f"child_spread compares two Llavas of one language model, got {len(children)}")
    parent, *children = per_example_tables(["parent", "the first child", "the second child"], [parent, *children])
    r = _within_layer(parent.shape[-1]) if within_layer else pearson
    first, second = (float(r(parent.mean(0).ravel(), c.mean(0).ravel())) for c in children)
    return float(abs(first - second))


def paired_verdict(difference: Estimate, first: str, second: str) -> str:
    """A paired difference (`first`'s statistic less `second`'s) in words: which is larger, or "not distinguished"
    with the largest difference its interval leaves open."""
    if not difference.excludes(0):
        bound = max(abs(difference.low), abs(difference.high))
        return f"not distinguished (differences up to {bound:.2f} are not excluded)"
    return f"{first if difference.low > 0 else second} scores them more alike"


def _gap(r):
    """A parent's correlation `r` with its own child less with the other's: `parent_gap`'s statistic."""
    return lambda parent, own, other: r(parent, own) - r(parent, other)


def _within_layer(heads: int):
    """Pearson over all heads of flattened [L, H] score tables ([..., L * H]) after taking each head less its
    layer's mean."""
    def within(x):
        by_layer = np.asarray(x).reshape(*np.shape(x)[:-1], -1, heads)
        return (by_layer - by_layer.mean(-1, keepdims=True)).reshape(np.shape(x))
    return lambda a, b: pearson(within(a), within(b))


def _over_examples(statistic, per_example: list, n_boot: int, seed: int, bound: float = 1.0) -> Estimate:
    """`statistic` of the settings' mean tables over the same examples ([n, L, H] each), with `stats.of_means`'
    basic bootstrap 95 % interval, the examples resampled together in every setting. In nested bootstraps of chapter
    4's examples and of noisy synthetic heads the basic interval held the value in 85–97 % of samples, BCa in
    56–95 %."""
    tables = per_example_tables([f"setting {i + 1}'s scores" for i in range(len(per_example))], per_example)
    return of_means(statistic, tables, n_boot, seed, bound)


def gains(before, after, top: int | None = None) -> pd.DataFrame:
    """Per head, mean Imp before and after tuning ([L, H] each) and the gain, largest gain first (the `top` first)."""
    before, after = head_table("gains' before", before), head_table("gains' after", after)
    if before.shape != after.shape:
        raise LlavamechError(f"gains compares the same heads: shapes {before.shape} and {after.shape} differ")
    top = None if top is None else validate.whole("top", top)
    frame = pd.DataFrame([{"head": f"{l}_{h}", "layer": l, "index": h, "before": before[l, h],
                           "after": after[l, h], "gain": after[l, h] - before[l, h]}
                          for l in range(before.shape[0]) for h in range(before.shape[1])])
    frame = frame.sort_values("gain", ascending=False, kind="stable").set_index("head")
    return frame.head(top) if top else frame


def gain_test(before, after, n_perm: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per head, whether its Imp is higher in `after` than in `before` on the same examples ([n, L, H] each): the
    mean gain with its bootstrap 95 % interval, the one-sided paired sign-flip p-value, and that p Holm-adjusted over
    every head (a head is picked out of all of them, so the family is all of them). One row per head, "l_h"."""
    before, after = per_example_tables(["gain_test's before", "gain_test's after"], [before, after])
    diff = after - before
    est = bootstrap(diff, seed=seed)
    p = sign_flip_p(diff, n_perm=n_perm, seed=seed)
    adjusted = holm(p.ravel()).reshape(p.shape)
    layers, heads = diff.shape[1:]
    return pd.DataFrame([{"head": f"{l}_{h}", "gain": est[l, h], "p": float(p[l, h]),
                          "p, Holm (every head)": float(adjusted[l, h])}
                         for l in range(layers) for h in range(heads)]).set_index("head")


def _head_params(anatomy, layer: int, head: int) -> dict[str, tuple]:
    """The parameters a head owns, as (tensor, index) pairs: its rows of W_Q, W_K, W_V (the key/value head it
    reads under grouped-query attention, shared with the other heads of its group), their biases where the
    family has them, and its columns of W_O."""
    attn, hd = anatomy.layers[layer].self_attn, anatomy.head_dim
    q, kv = slice(head * hd, (head + 1) * hd), slice(anatomy.kv_head(head) * hd, (anatomy.kv_head(head) + 1) * hd)
    parts = {"q": (attn.q_proj.weight, q), "k": (attn.k_proj.weight, kv), "v": (attn.v_proj.weight, kv),
             "o": (attn.o_proj.weight, (slice(None), q))}
    for name, proj, rows in (("q", attn.q_proj, q), ("k", attn.k_proj, kv), ("v", attn.v_proj, kv)):
        if proj.bias is not None:
            parts[f"{name} bias"] = (proj.bias, rows)
    return parts


def _check_same_shape(tuned, base) -> None:
    a, b = tuned.anatomy, base.anatomy
    if (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.d_model) != \
            (b.n_layers, b.n_heads, b.n_kv_heads, b.head_dim, b.d_model):
        raise LlavamechError(f"{tuned.name} and {base.name} have different attention shapes: was one tuned from the "
                             "other?")


@torch.no_grad()
def weight_change(tuned, base) -> pd.DataFrame:
    """Per head: relative change ‖W_tuned − W_base‖ / ‖W_base‖ (Frobenius) of its W_Q, W_K, W_V and W_O slices,
    and of all four together."""
    _check_same_shape(tuned, base)
    a, rows = tuned.anatomy, []
    for layer in range(a.n_layers):
        for head in range(a.n_heads):
            new, old = _head_params(a, layer, head), _head_params(base.anatomy, layer, head)
            row, diff2, norm2 = {"head": f"{layer}_{head}", "layer": layer, "index": head}, 0.0, 0.0
            for name in ("q", "k", "v", "o"):
                w_new = new[name][0][new[name][1]].float()
                w_old = old[name][0][old[name][1]].to(w_new.device, torch.float32)
                d2, n2 = (w_new - w_old).pow(2).sum().item(), w_old.pow(2).sum().item()
                row[name], diff2, norm2 = (d2 / n2) ** 0.5, diff2 + d2, norm2 + n2
            row["all"] = (diff2 / norm2) ** 0.5
            rows.append(row)
    return pd.DataFrame(rows).set_index("head")


def movement_and_gain(change: pd.DataFrame, gain: pd.DataFrame) -> tuple[pd.DataFrame, float, float]:
    """Per head, how far its weights moved (`weight_change`) beside how much it gained (`gains`), and whether the
    two go together: Spearman's rank correlation of the move over all projections ("all") with the gain, and its
    two-sided p-value. A test of no relation, with no interval claimed, so the idle heads' noisy ranks, which
    undo a rank correlation's interval (`correlation`), only cost it power; ranks, so that no one head's extreme
    move carries it. Returns (the joined table, rho, p)."""
    missing = {"all"} - set(change.columns) | {"gain"} - set(gain.columns)
    if missing:
        raise LlavamechError(f"movement_and_gain takes weight_change's and gains' tables; missing {sorted(missing)}")
    joined = change.join(gain[["gain"]], how="inner")
    if len(joined) < 3 or len(joined) < len(change):
        raise LlavamechError(f"movement_and_gain needs the same heads in both tables: {len(change)} moved, "
                             f"{len(joined)} of them with a gain")
    rho, p = spearmanr(joined["all"], joined["gain"])
    return joined, float(rho), float(p)


@contextlib.contextmanager
def transplanted(tuned, base, heads):
    """Within the block, the given heads of `tuned` carry `base`'s weights (W_Q, W_K, W_V, W_O slices and
    biases); restored on exit. Under grouped-query attention a head's key/value weights are shared with its
    group, so they move for the whole group."""
    _check_same_shape(tuned, base)
    a = tuned.anatomy
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads, tuned.name)
    saved = []
    with model_lock(tuned.hf):   # other threads' passes on this model wait: they would read half-moved weights
        try:
            with torch.no_grad():
                for layer, head in heads:
                    new, old = _head_params(tuned.anatomy, layer, head), _head_params(base.anatomy, layer, head)
                    for name, (tensor, index) in new.items():
                        saved.append((tensor, index, tensor[index].clone()))
                        tensor[index] = old[name][0][old[name][1]].to(tensor.device, tensor.dtype)
            yield tuned
        finally:
            with torch.no_grad():
                for tensor, index, value in reversed(saved):
                    tensor[index] = value


@contextlib.contextmanager
def transplanted_rows(tuned, base, row_heads):
    """Within the block, batch row r of `tuned` runs with the heads `row_heads[r]` carrying `base`'s weights (as
    `transplanted` would, one row at a time), through hooks on the attention projections: the rows' q, k, v
    slices are recomputed with the old weights and the o_proj output corrected by the old minus the new W_O
    columns. The weights themselves are never changed. Many transplants in one batched pass."""
    _check_same_shape(tuned, base)
    a, rows = tuned.anatomy, len(row_heads)
    row_heads = [validate.heads("row_heads", chosen, a.n_layers, a.n_heads, tuned.name) for chosen in row_heads]
    # per layer and projection: {index: (old weight slice, old bias slice or None, new weight, rows using it)}
    plan: dict[tuple[int, str], dict] = {}
    for r, chosen in enumerate(row_heads):
        for layer, head in chosen:
            new, old = _head_params(a, layer, head), _head_params(base.anatomy, layer, head)
            for name in ("q", "k", "v", "o"):
                index = new[name][1]
                key = (index.start, index.stop) if name != "o" else (index[1].start, index[1].stop)
                entries = plan.setdefault((layer, name), {})
                if key not in entries:
                    entries[key] = {
                        "old": old[name][0][old[name][1]], "new": new[name][0][index],
                        "bias": old[f"{name} bias"][0][old[f"{name} bias"][1]] if f"{name} bias" in old else None,
                        "rows": torch.zeros(rows, dtype=torch.bool)}
                entries[key]["rows"][r] = True

    def qkv_hook(entries):
        def hook(module, args, out):
            x, out = args[0], out.clone()
            if len(x) != rows:
                raise ValueError(f"{rows} head sets for a batch of {len(x)} rows")
            for (start, stop), e in entries.items():
                w = e["old"].to(x.device, x.dtype)
                value = x @ w.T + (0 if e["bias"] is None else e["bias"].to(x.device, x.dtype))
                out[..., start:stop] = torch.where(e["rows"].to(x.device)[:, None, None], value, out[..., start:stop])
            return out
        return hook

    def o_hook(entries):
        def hook(module, args, out):
            x, out = args[0], out.clone()
            for (start, stop), e in entries.items():
                delta = (e["old"].to(x.device, x.dtype) - e["new"].to(x.device, x.dtype))   # [d, hd]
                out = out + torch.where(e["rows"].to(x.device)[:, None, None], x[..., start:stop] @ delta.T, 0.0)
            return out
        return hook

    with hooked(tuned.hf) as hooks, torch.no_grad():
        for (layer, name), entries in plan.items():
            attn = a.layers[layer].self_attn
            module = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "o": attn.o_proj}[name]
            hooks.after(module, o_hook(entries) if name == "o" else qkv_hook(entries))
        yield tuned


class SharedSets(HeadSetTest):
    """A `HeadSetTest` that runs each head set once on each example set and keeps its effect. Tests of several chosen
    sets of one size, each with a generator of the same seed, draw the same random sets from all heads (but where a
    draw is a chosen set, which `null_sets` skips) and, where the chosen sets share their layers, from the same
    layers: kept, they run once however many tests use them, which is most of the cost of a chapter's causal tests."""

    def __init__(self, model, examples, mode: str, intervention, control_examples: int | None = None):
        super().__init__(model, examples, mode, intervention, control_examples)
        self._done: dict = {}   # (id of the encoded examples, frozenset of heads) -> {"Δ log p": [n], ...}

    def effect(self, sets: list, encoded=None) -> dict[str, np.ndarray]:
        encoded = self.encoded if encoded is None else encoded
        keys = [(id(encoded), frozenset(map(tuple, s))) for s in sets]
        new = {key: list(s) for key, s in zip(keys, sets) if key not in self._done}
        if new:
            out = super().effect(list(new.values()), encoded)
            for i, key in enumerate(new):
                self._done[key] = {name: values[i] for name, values in out.items()}
        return {name: np.stack([self._done[key][name] for key in keys]) for name in ("Δ log p", "Δ accuracy")}


def transplant_sets(tuned, base, examples, mode: str = "vqa") -> SharedSets:
    """Head sets of `tuned` given `base`'s weights back (`transplanted_rows`), on `examples`, each set run once."""
    return SharedSets(tuned, examples, mode, lambda model, rows: transplanted_rows(model, base, rows))


def ablation_sets(model, examples, mode: str = "vqa", how: str = "mean", means=None) -> SharedSets:
    """Head sets of `model` ablated (`interventions.ablated`, `how` "mean" or "zero"), on `examples`, each set run
    once: the same design as `transplant_sets`, so that an ablation can stand beside a transplant as its control."""
    return SharedSets(model, examples, mode, lambda m, rows: ablated(m, row_heads=rows, how=how, means=means))


def head_set_row(test: HeadSetTest, heads, draws: int = 200, seed: int = 0, controls=CONTROLS) -> dict:
    """One chosen head set under `test`'s intervention, as a table row: what the answer loses (Δ accuracy and
    Δ log p of the true colour, with bootstrap intervals over the examples), the random-set controls
    (`HeadSetTest.controls`: per control the paired sign-flip test and the rank among sets, on the test's control
    examples, with a generator seeded `seed`, so that tests of one size share their random sets), and the clean
    accuracy."""
    a = test.model.anatomy
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads, test.model.name)
    if not heads:
        raise LlavamechError("choose at least one head to test")
    hit = test.effect([heads])
    return {"heads": ", ".join(f"{l}_{h}" for l, h in heads),
            "Δ accuracy": bootstrap(hit["Δ accuracy"][0], seed=seed), "Δ log p": bootstrap(hit["Δ log p"][0], seed=seed),
            **test.controls(heads, draws, np.random.default_rng(seed), controls),
            "clean accuracy": bootstrap(test.clean[id(test.encoded)]["correct"][0], seed=seed),
            "n": test.encoded.n, "n (control)": test.n_control}


def transplant_test(tuned, base, examples, heads, mode: str = "vqa", draws: int = 200, seed: int = 0,
                    controls=CONTROLS, control_examples: int | None = None) -> pd.DataFrame:
    """Put `base`'s weights back into `heads` of `tuned` and measure what the answer loses, against random head sets
    given theirs back (`interventions.null_sets`, per control in `controls`, on the first `control_examples`
    examples; all batched): `head_set_row` as a one-row table."""
    test = SharedSets(tuned, examples, mode, lambda model, rows: transplanted_rows(model, base, rows), control_examples)
    return pd.DataFrame([head_set_row(test, heads, draws, seed, controls)])


REGIONS = ("asked animal's box", "rest of the image", "animal's word in the question", "rest of the question",
           "animal's word in the answer prefix", "rest of the answer prefix", "last position (T)", "BOS and template")


def prompt_regions(model, example, mode: str, trace) -> dict[str, torch.Tensor]:
    """Every position of the example's prompt, in one of `REGIONS` (boolean masks [S] that partition it).

    The prompt is `Model.prompt`'s: template, image (VQA) or facts (TQA; counted as template here), the question,
    then the answer prefix ("The color of the dog is"), whose last token is T, the position the answer is read at.
    Each text span starts where the prompt cut before it, encoded as the model encodes its prompt (the processor,
    with the image, expands the image into its tokens), stops; the cut's tokens must be the prompt's first tokens,
    which is checked. From T, attention on T itself, on the answer prefix (which repeats the animal's word) and on
    the question are different things: "the text" as one region would hide which."""
    question = questions.parse(example.question)
    text = question.text if question else example.question.strip()
    prefix = (question.answer_prefix if question else "").strip()
    given = example.inputs(mode)
    prompt = model.prompt(given["question"], given.get("context"), image=mode == "vqa")
    ids = trace.input_ids.cpu()
    n = len(ids)
    special = {"add_special_tokens": False} if model.family is not None else {}

    def start_of(char: int) -> int:
        """The sequence position of the first token of prompt[char:] (whitespace before it belongs to it)."""
        while char > 0 and prompt[char - 1].isspace():
            char -= 1
        cut = prompt[:char]
        encoded = (model.processor(images=load_image(example.image), text=cut, return_tensors="pt", **special)
                   if mode == "vqa" else model.tokenizer(cut, return_tensors="pt", **special))["input_ids"][0]
        if not torch.equal(encoded.cpu(), ids[:len(encoded)]):
            raise LlavamechError(f"{model.name} encodes its prompt differently when cut before {prompt[char:]!r}: "
                                 "the prompt's regions cannot be placed")
        return len(encoded)

    q_char = prompt.rfind(text)
    q0, q1 = start_of(q_char), start_of(q_char + len(text))
    a0 = start_of(len(prompt) - len(prefix)) if prefix else n - 1
    span = lambda lo, hi: (torch.arange(n) >= lo) & (torch.arange(n) < hi)
    pos = trace.positions
    image = torch.zeros(n, dtype=torch.bool)
    image[pos.image_tokens[:, 0] if pos.image_tokens is not None else pos.image_positions] = True
    box = torch.zeros(n, dtype=torch.bool)
    mask = example.box_mask(model.processor.image_processor, pos.grid_shape) if mode == "vqa" else None
    if mask is not None:
        box[pos.image_positions[torch.as_tensor(mask.ravel())]] = True
    word = ids == model.token_id(example.animal)
    question_span, prefix_span = span(q0, q1), span(a0, n - 1)
    masks = [box, image & ~box, question_span & word, question_span & ~word, prefix_span & word,
             prefix_span & ~word, span(n - 1, n)]
    masks.append(~torch.stack(masks).any(0))
    return dict(zip(REGIONS, masks))


def where_heads_look(model, examples, heads, seed: int = 0) -> pd.DataFrame:
    """For each head, the share of its attention from the last position T on each of `REGIONS` (the asked animal's
    box and the rest of the image; the asked animal's word and the other words of the question; the same in the
    answer prefix; T itself; BOS and the template), over scenes (mean with bootstrap interval); and each region's
    share of the positions (what uniform attention would give). One row per head, "l_h", and "uniform attention"."""
    if not model.is_multimodal:
        raise LlavamechError(f"{model.name} is text-only: where_heads_look reads attention on an image")
    a = model.anatomy
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads, model.name)
    if not heads:
        raise LlavamechError("choose at least one head to look at")
    if not any(e.box is not None for e in examples):
        raise LlavamechError("where_heads_look needs examples with the asked animal's box (\"box\" in the file): "
                             "none has one")
    shares, sizes = {h: [] for h in heads}, []
    for example in progress([e for e in examples if e.box is not None], f"{model.name}: where the heads look"):
        trace = model.trace(**example.inputs("vqa"))
        parts = list(prompt_regions(model, example, "vqa", trace).values())
        sizes.append([part.float().mean().item() for part in parts])
        for layer, head in heads:
            w = trace.attn_weights[layer, head].cpu()
            shares[(layer, head)].append([w[part].sum().item() for part in parts])
    split = lambda values: dict(zip(REGIONS, (bootstrap(np.array(values), seed=seed)[i] for i in range(len(REGIONS)))))
    rows = {f"{l}_{h}": split(v) for (l, h), v in shares.items()}
    rows["uniform attention"] = split(sizes)
    return pd.DataFrame(rows).T


def paper_overlap(key: str, k: int = 10, n_heads: int = 1024) -> dict:
    """The paper's top-k overlap (data/reference/paper.csv) with its own chance level: Llava-1.5-7b has 32 layers
    of 32 heads, and the paper compares top-10 sets."""
    known = paper_numbers().index
    if key not in known:
        overlaps = [k for k in known if k.startswith("transfer.top")]
        raise LlavamechError(f"no paper number {key!r}; the paper's overlaps are {', '.join(overlaps) or 'none'}")
    shared = int(float(paper_numbers().loc[key, "value"]))
    return {"k": k, "share of heads": k / n_heads, "overlap": shared, "expected by chance": k * k / n_heads,
            "P(overlap ≥ observed | chance)": float(hypergeom.sf(shared - 1, n_heads, k, k))}


def at_which_k(holds: dict) -> str:
    """Where a per-k verdict ({k: bool}) holds, in words for the prose and the scorecard: "at every k (3, 5, 10)",
    "at no k (3, 5, 10)", or "at k = 3 and 10, not at 5"."""
    if not holds:
        raise LlavamechError("at_which_k needs a verdict for at least one k, {k: bool}")
    said = lambda ks: ", ".join(map(str, ks[:-1])) + (" and " if len(ks) > 1 else "") + str(ks[-1])
    yes, no = [k for k, v in holds.items() if v], [k for k, v in holds.items() if not v]
    if not no or not yes:
        return f"at {'every' if yes else 'no'} k ({', '.join(map(str, holds))})"
    return f"at k = {said(yes)}, not at {said(no)}"


def describe_looks(looks: pd.DataFrame, heads) -> str:
    """Where each of `heads` ("l_h", rows of `where_heads_look`) mostly looks, in words for the prose: the region
    with its largest share (mean and interval, and what uniform attention would put there), and its share on the
    question's words, the animal's word included (means: the two regions' shares summed), beside uniform's."""
    uniform = looks.loc["uniform attention"]
    on_question = lambda row: row[REGIONS[2]].mean + row[REGIONS[3]].mean
    said = []
    for head in heads:
        row = looks.loc[head]
        top = max(REGIONS, key=lambda region: row[region].mean)
        said.append(f"{head} puts {row[top]} on the {top} (uniform {uniform[top].mean:.3f}) and "
                    f"{on_question(row):.3f} on the question (uniform {on_question(uniform):.3f})")
    return "; ".join(said)
