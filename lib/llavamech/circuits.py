"""How the deep heads answer (the book's chapters 2 and 3): query-key matching of the animal, value-output carrying the colour.

Per trace, at a head (layer l, head h) and source positions j:
- `stream_parts`: the layer input h^{l-1}_j split as embedding + "key input" (sum of earlier attention outputs,
  Σ_{l'<l} A^{l'}_j) + "value input" (sum of earlier FFN outputs, Σ_{l'<l} F^{l'}_j) — the paper's names — and,
  for Qwen3-VL, "deepstack input" (the visual features it adds after its first layers);
- `value_output`: u_j = α_{T,j} v_j W_O, what the head writes from j;
- `ov_output`: v_j W_O, what it would write from j with all its attention there (for the OV logit difference);
  both times Gemma's frozen attention-output norm;
- `attention_mass`: Σ_j α_{T,j}.
`measure` runs them over an example set for chosen heads, with the baselines each needs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import attribution, lens, validate
from .errors import LlavamechError
from .examples import Example, example_list
from .progress import progress
from .stats import bootstrap

PARTS = ("layer input", "key input", "value input", "value output")


def _positions(trace, positions) -> torch.Tensor:
    """Source positions as distinct indices into the trace's sequence; a boolean mask over the sequence is taken
    as the positions it marks. Out of range, negative (which would wrap to the end) or repeated (counted twice in an
    attention mass) positions are refused."""
    where = positions if isinstance(positions, torch.Tensor) else torch.as_tensor(positions, dtype=None if len(
        positions) else torch.long)
    if where.dtype == torch.bool:
        if where.shape != (trace.seq_len,):
            raise LlavamechError(f"a boolean mask of positions must cover the {trace.seq_len} positions of the "
                                 f"sequence, not shape {tuple(where.shape)}")
        return where.nonzero().reshape(-1)
    if where.is_floating_point() or where.ndim != 1:
        raise LlavamechError("positions must be a list of whole sequence positions such as [5, 9], or a boolean mask")
    if len(where) and (int(where.min()) < 0 or int(where.max()) >= trace.seq_len):
        bad = [p for p in where.tolist() if not 0 <= p < trace.seq_len]
        raise LlavamechError(f"positions must lie in 0..{trace.seq_len - 1} (the sequence has {trace.seq_len}), "
                             f"got {bad[0]}" + (f" and {len(bad) - 1} more outside" if len(bad) > 1 else ""))
    if len(torch.unique(where)) != len(where):
        raise LlavamechError("positions holds a position twice: it would be counted twice")
    return where


def _head(trace, layer, head) -> tuple[int, int]:
    a = trace.anatomy
    return validate.heads("head", [(layer, head)], a.n_layers, a.n_heads)[0]


def stream_parts(trace, layer: int, positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of `layer` at `positions` and its two halves: {part: [k, d]}; layer input = embedding + key
    input + value input exactly. Where the model also adds visual features after its first layers (Qwen3-VL's
    deepstack), their sum over the earlier layers is a third part, "deepstack input" (zero at text positions), and
    the layer input is the embedding plus all three. Needs all_positions=True."""
    if trace.resid_in_all is None:
        raise LlavamechError("stream_parts needs model.trace(..., all_positions=True)")
    n_layers = trace.anatomy.n_layers
    layer = validate.whole("layer", layer, 0, n_layers, f" (the model has {n_layers} layers; {n_layers} is the "
                                                        "stream after the last)")
    positions = _positions(trace, positions)
    parts = {"layer input": trace.resid_in_all[layer, positions],
             "key input": trace.attn_out_all[:layer, positions].sum(0),
             "value input": trace.mlp_out_all[:layer, positions].sum(0)}
    if trace.visual_added_all is not None:
        parts["deepstack input"] = trace.visual_added_all[:layer, positions].sum(0)
    return parts


def value_output(trace, layer: int, head: int, positions: torch.Tensor) -> torch.Tensor:
    """u_j = α_{T,j} v_j W_O^{l,h} at `positions`: [k, d]."""
    layer, head = _head(trace, layer, head)
    positions = _positions(trace, positions)
    return attribution.position_contributions(trace, layer, head)[positions]


def ov_output(trace, layer: int, head: int, positions: torch.Tensor) -> torch.Tensor:
    """v_j W_O^{l,h} at `positions` (u_j without the attention weight): [k, d]. Where a norm follows attention
    (Gemma), times its scale frozen for the layer, as in u_j (llavamech.attribution.out_scale)."""
    a = trace.anatomy
    layer, head = _head(trace, layer, head)
    positions = _positions(trace, positions)
    v = trace.values[layer][positions, a.kv_head(head)]               # [k, hd]
    out = attribution.through_o(a, layer, v[None], [head])[0]
    scale = attribution.out_scale(trace, layer, "attn")
    return out if scale is None else out * scale


def attention_mass(trace, layer: int, head: int, positions: torch.Tensor) -> float:
    """Share of head (layer, head)'s attention from the last position that lands on `positions`."""
    layer, head = _head(trace, layer, head)
    positions = _positions(trace, positions)
    return float(trace.attn_weights[layer, head, positions].sum())


def rankings(model, trace, layer: int, head: int, positions: torch.Tensor, tokens: dict[str, int]) -> dict:
    """Rank (1 = top) of each token in each part at each position, every vector read through the final norm and
    W_U: {(part, token name): [k]}."""
    vectors = dict(stream_parts(trace, layer, positions), **{"value output": value_output(trace, layer, head, positions)})
    return {(part, name): lens.token_ranks(model.anatomy, vectors[part], token, "unembed")
            for part in PARTS for name, token in tokens.items()}


def evidence_positions(model, trace, example: Example, mode: str) -> torch.Tensor | None:
    """Where the asked animal's colour is, found without any head's scores: in text, the colour word of the fact
    about the asked animal (the true colour's token, after the asked animal's name and before any other animal's);
    in an image, the patches inside the asked animal's box. [P] positions; None where the example has no facts
    (text) or no box (image), or the text states no such word. The control for the important positions, which are
    chosen by a score that grows with the head's attention and its value output's readout, so that measuring the
    same two things there favours the claims by construction."""
    if mode == "vqa":
        mask = example.box_mask(model.processor.image_processor, trace.positions.grid_shape)
        if mask is None:
            return None
        return trace.positions.image_positions[torch.as_tensor(mask.ravel()).nonzero().reshape(-1)]
    colour = dict(example.facts).get(example.animal)
    if colour is None:
        return None
    ids = trace.input_ids.cpu()
    named = {model.token_id(a): a for a, _ in example.facts}
    last, found = None, []
    for p, token in enumerate(ids[:-1].tolist()):
        last = named.get(token, last)
        if token == model.token_id(colour) and last == example.animal:
            found.append(p)
    return torch.tensor(found, dtype=torch.long) if found else None


def measure(model, examples: list[Example], heads: list[tuple[int, int]], k: int, mode: str,
            colours: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Every §5 measure over an example set, for each head in `heads` at its own k important positions (by its
    per-position Imp for the model's answer) and at k random positions of the same kind. Arrays [n, heads]:

    - `MRR <part> <colour|animal>` and `random MRR ...`: mean reciprocal rank over the k positions;
    - `attention same` / `attention different`: the head's attention mass on its important positions when the
      question names the asked animal / another animal of the scene (important positions found with the first);
      NaN where the scene has no other animal;
    - `OV logit difference`: readout of v_j W_O, true colour minus a random other colour, mean over positions;
    - `evidence ...`: the value output's colour MRR, the two attention masses and the OV logit difference at the
      `evidence_positions` instead (chosen without the head's scores), and `evidence uniform attention`, their
      share of the positions; NaN where an example has none;
    - `correct`: [n] whether the model answered the true colour.
    """
    examples = example_list("measure", examples)
    a = model.anatomy
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads, model.name)
    if not heads:
        raise LlavamechError("measure needs at least one head, e.g. the top heads of readouts.top_heads_of")
    k = validate.whole("k", k)
    kind = "image" if mode == "vqa" else "text"
    rng = np.random.default_rng(validate.whole("seed", seed, 0))
    generator = torch.Generator().manual_seed(seed)
    if isinstance(colours, str) or len(set(colours)) < 2:
        raise LlavamechError(f"colours must list at least two colours (the OV logit difference sets the true one "
                             f"against another), got {colours!r}")
    colour_ids = {c: model.token_id(c) for c in colours}
    rows = []
    for example in progress(examples, f"{model.name} {mode.upper()} circuit"):
        trace = model.trace(**example.inputs(mode), all_positions=True)
        true = model.token_id(example.colour) if example.colour else trace.top_token
        other = colour_ids[rng.choice([c for c in colours if colour_ids[c] != true])]
        tokens = {"colour": true, "animal": model.token_id(example.animal)}
        different = None
        if example.distractors:
            different = model.trace(**example.asking(rng.choice(example.distractors)).inputs(mode))
        row = {"correct": float(trace.top_token == true) if example.colour else np.nan}
        evidence = evidence_positions(model, trace, example, mode)
        for layer, head in heads:
            top = lens.important_positions(trace, [(layer, head)], k, kind)
            chance = lens.random_positions(trace, k, kind, generator)
            for prefix, where in (("", top), ("random ", chance)):
                for (part, name), ranks in rankings(model, trace, layer, head, where, tokens).items():
                    row.setdefault(f"{prefix}MRR {part} {name}", []).append(float((1.0 / ranks.float()).mean()))
            row.setdefault("attention same", []).append(attention_mass(trace, layer, head, top))
            row.setdefault("attention different", []).append(
                attention_mass(different, layer, head, top) if different is not None else np.nan)
            z = attribution.readout(trace, ov_output(trace, layer, head, top))
            row.setdefault("OV logit difference", []).append(float((z[:, true] - z[:, other]).mean()))
            row.setdefault("uniform attention", []).append(k / trace.seq_len)
            for key, value in _at_evidence(model, trace, different, evidence, layer, head, true, other).items():
                row.setdefault(key, []).append(value)
        rows.append(row)
    return {key: np.array([r[key] for r in rows], dtype=np.float64) for key in rows[0]}


def _at_evidence(model, trace, different, where: torch.Tensor | None, layer: int, head: int, true: int,
                 other: int) -> dict[str, float]:
    """`measure`'s `evidence ...` entries for one head on one example, at its `evidence_positions` `where` (NaN
    where it has none)."""
    keys = ("evidence MRR value output colour", "evidence attention same", "evidence attention different",
            "evidence OV logit difference", "evidence uniform attention")
    if where is None or not len(where):
        return dict.fromkeys(keys, np.nan)
    ranks = lens.token_ranks(model.anatomy, value_output(trace, layer, head, where), true, "unembed")
    z = attribution.readout(trace, ov_output(trace, layer, head, where))
    return dict(zip(keys, (float((1.0 / ranks.float()).mean()), attention_mass(trace, layer, head, where),
                           attention_mass(different, layer, head, where) if different is not None else np.nan,
                           float((z[:, true] - z[:, other]).mean()), len(where) / trace.seq_len)))


def head_mean(measures: dict[str, np.ndarray], key: str) -> np.ndarray:
    """One of `measure`'s [n, heads] arrays as the mean over heads per example, for the examples that have it (an
    example without another animal has no `attention different`; one without evidence positions no `evidence ...`)."""
    if key not in measures:
        raise LlavamechError(f"no measure {key!r}; measure() gives {', '.join(measures) or 'nothing here'}")
    values = measures[key]
    return np.nanmean(values[~np.isnan(values).all(1)], axis=1)


def estimate(measures: dict[str, np.ndarray], key: str, seed: int = 0):
    """`head_mean` with its 95 % bootstrap interval over the examples that have the measure."""
    return bootstrap(head_mean(measures, key), seed=seed)


def evidence_table(measures: dict[str, np.ndarray], seed: int = 0) -> pd.DataFrame:
    """The query-key and value-output measures at the important positions beside the same at the evidence positions
    (`evidence_positions`): a row each, mean over heads with its 95 % interval over examples, and the uniform
    attention level at each."""
    rows = {"value-output colour MRR": "MRR value output colour", "attention, same animal": "attention same",
            "attention, another animal": "attention different", "OV logit difference": "OV logit difference",
            "uniform attention": "uniform attention"}
    return pd.DataFrame({where: {name: str(estimate(measures, prefix + key, seed)) for name, key in rows.items()}
                         for where, prefix in (("important positions (by the head's Imp)", ""),
                                               ("evidence positions (fixed in advance)", "evidence "))})


def centroid_accuracy(vectors: np.ndarray, labels: list[str], folds: int = 2, seed: int = 0) -> np.ndarray:
    """Per example, whether a nearest-class-mean classifier trained on the other folds names its label: [n] of
    0/1. Features are standardised with the training folds' mean and spread; a label absent from the training
    folds counts as missed. The simplest linear read-out there is: it finds a word wherever a direction separates it."""
    x, labels = np.asarray(vectors, dtype=np.float64), np.asarray(labels)
    folds = validate.whole("folds", folds, 2)
    if x.ndim != 2 or len(labels) != len(x):
        raise LlavamechError(f"centroid_accuracy needs one vector per example [n, d] and one label each: got vectors "
                             f"of shape {x.shape} and {len(labels)} labels")
    if len(x) < folds:
        raise LlavamechError(f"the probe trains on {folds - 1} of {folds} folds of the examples: {len(x)} example(s) "
                             f"are too few; raise n_examples to at least {folds}")
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    hit = np.zeros(len(x))
    for f in range(folds):
        train, test = fold != f, fold == f
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
        z = (x - mu) / sd
        classes = sorted(set(labels[train]))
        centroids = np.stack([z[train][labels[train] == c].mean(0) for c in classes])
        guess = np.asarray(classes)[np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
        hit[test] = guess == labels[test]
    return hit


def probe(model, examples: list[Example], head: tuple[int, int], mode: str, part: str = "key input",
          seed: int = 0) -> dict:
    """A positive control for reading a word through W_U: is the asked animal *linearly* present in `part` at the
    head's most important position, whatever direction it takes? Per example, `part` (see `stream_parts`) at the
    head's top position and at one random position of the same kind; each set classified by `centroid_accuracy`
    (2 folds). {"important", "random": per-example 0/1 arrays, "chance": the most frequent animal's share}."""
    a = model.anatomy
    layer, _ = head = validate.heads("head", [head], a.n_layers, a.n_heads, model.name)[0]
    allowed = ("layer input", "key input", "value input") + (("deepstack input",) if model.family is not None
                                                              and model.family.model_type == "qwen3_vl" else ())
    if part not in allowed:
        raise LlavamechError(f"part must be one of {', '.join(allowed)}, not {part!r}")
    examples = example_list("probe", examples)
    kind = "image" if mode == "vqa" else "text"
    generator = torch.Generator().manual_seed(seed)
    at = {"important": [], "random": []}
    for example in progress(examples, f"{model.name} {mode.upper()}: {part} probe"):
        trace = model.trace(**example.inputs(mode), all_positions=True)
        for name, where in (("important", lens.important_positions(trace, [head], 1, kind)),
                            ("random", lens.random_positions(trace, 1, kind, generator))):
            at[name].append(stream_parts(trace, layer, where)[part][0].float().cpu().numpy())
    labels = [e.animal for e in examples]
    counts = pd.Series(labels).value_counts()
    return {**{name: centroid_accuracy(np.stack(v), labels, seed=seed) for name, v in at.items()},
            "chance": float(counts.iloc[0] / len(labels))}


def paper_estimates(measures: dict[str, np.ndarray], mode: str, seed: int = 0) -> dict:
    """The measures of `measure` (averaged over the heads, bootstrapped over examples) under the keys of
    data/reference/paper.csv, with the random-position baselines the claims are tested against."""
    est = lambda key: estimate(measures, key, seed)
    return {f"circuit.colour_mrr.{mode}": est("MRR value output colour"),
            f"circuit.colour_mrr_random.{mode}": est("random MRR value output colour"),
            f"circuit.animal_mrr.{mode}": est("MRR key input animal"),
            f"circuit.animal_mrr_random.{mode}": est("random MRR key input animal"),
            f"qk.attention_same.{mode}": est("attention same"),
            f"qk.attention_different.{mode}": est("attention different"),
            f"ov.logit_difference.{mode}": est("OV logit difference")}


def rankings_table(measures: dict[str, np.ndarray], seed: int = 0):
    """The four token rankings as a table: rows the parts, columns colour / animal MRR at the important and at
    random positions (mean over heads, 95 % interval over examples)."""
    cell = lambda key: str(estimate(measures, key, seed))
    return pd.DataFrame({f"{word} MRR, {where}": [cell(f"{prefix}MRR {part} {word}") for part in PARTS]
                         for word in ("colour", "animal")
                         for where, prefix in (("important", ""), ("random", "random "))},
                        index=pd.Index(PARTS, name="vector read through the final norm and W_U"))


CONTRASTS = {"contrast.colour_mrr.vqa_minus_tqa": "MRR value output colour",   # paper key: `measure`'s key
             "contrast.ov_logit_difference.vqa_minus_tqa": "OV logit difference"}


def contrast_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Setting b less setting a (`measure` on the same examples, in the same order: paired) for the two measures
    the paper sets text against images, the value output's colour MRR and the OV logit difference: per example the
    mean over heads ([n] each), under the keys of data/reference/paper.csv."""
    for name, measures in (("a", a), ("b", b)):
        missing = [m for m in CONTRASTS.values() if m not in measures]
        if missing:
            raise LlavamechError(f"setting {name} lacks {missing[0]!r}: pass measure()'s results for both settings")
    if len(a[CONTRASTS["contrast.colour_mrr.vqa_minus_tqa"]]) != len(b[CONTRASTS["contrast.colour_mrr.vqa_minus_tqa"]]):
        raise LlavamechError("the two settings must be measured on the same examples, in the same order")
    return {key: np.nanmean(b[measure], axis=1) - np.nanmean(a[measure], axis=1) for key, measure in CONTRASTS.items()}


def setting_contrast(a: dict[str, np.ndarray], b: dict[str, np.ndarray], seed: int = 0) -> dict:
    """`contrast_differences`' mean differences, each with its paired 95 % bootstrap interval."""
    return {key: bootstrap(d, seed=seed) for key, d in contrast_differences(a, b).items()}


def setting_summary(measures: dict[str, np.ndarray], correct, mode: str, seed: int = 0) -> dict[str, str]:
    """One setting's column of chapter 3's comparison: accuracy (from per-example `correct`) and the query-key and
    value-output measures of `measure`, each with its bootstrap interval, and the uniform attention level."""
    est = paper_estimates(measures, mode, seed=seed)
    return {"accuracy": str(bootstrap(correct, seed=seed)),
            "attention, same animal": str(est[f"qk.attention_same.{mode}"]),
            "attention, another animal": str(est[f"qk.attention_different.{mode}"]),
            "uniform attention": f"{np.nanmean(measures['uniform attention']):.3f}",
            "OV logit difference": str(est[f"ov.logit_difference.{mode}"]),
            "value-output colour MRR": str(est[f"circuit.colour_mrr.{mode}"])}
