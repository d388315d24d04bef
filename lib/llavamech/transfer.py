"""Head transfer (the book's chapter 4, "tuning enhances Vicuna's heads"): do the heads that answer a text question
in the language model also answer it, and the visual question, in the Llava tuned from it? And, beyond the paper,
how far did each head's weights move in tuning, and does putting the old weights back undo what tuning gave?

Head scores are mean head Imp [L, H] over one paired example set; per-example arrays are [n, L, H].
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from scipy.stats import hypergeom, spearmanr

from .hooks import hooked, model_lock
from .interventions import HeadSetTest
from .progress import progress
from .reference import paper_numbers
from .stats import Estimate, bootstrap


def top_set(scores, k: int) -> set[tuple[int, int]]:
    """The k heads with the highest score, as (layer, head)."""
    flat = np.asarray(scores).ravel()
    cols = np.asarray(scores).shape[1]
    return {(int(i) // cols, int(i) % cols) for i in np.argsort(-flat, kind="stable")[:k]}


def overlap_table(a, b, ks, seed: int = 0) -> pd.DataFrame:
    """For each k: how many of the top-k heads of `a` are among the top-k of `b`; the number expected if the two
    top sets were drawn at random (k·k/N of N heads), and the chance of an overlap at least this large (the
    hypergeometric tail); and the same within the layers the two top sets occupy (N = those layers' heads), the
    stricter null where a circuit sits in few layers: two sets confined to one layer of 8 heads share heads often."""
    a, b = np.asarray(a), np.asarray(b)
    n = a.size
    rows = []
    for k in ks:
        top_a, top_b = top_set(a, k), top_set(b, k)
        shared = len(top_a & top_b)
        within = len({layer for layer, _ in top_a | top_b}) * a.shape[-1]
        rows.append({"k": k, "share of heads": k / n, "overlap": shared, "expected by chance": k * k / n,
                     "P(overlap ≥ observed | chance)": float(hypergeom.sf(shared - 1, n, k, k)),
                     "heads in their layers": within, "expected (their layers)": k * k / within,
                     "P(overlap ≥ observed | their layers)": float(hypergeom.sf(shared - 1, within, k, k))})
    return pd.DataFrame(rows).set_index("k")


def rank_correlation(per_example_a, per_example_b, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Spearman correlation over all heads of the mean scores of two settings on the same examples, with a
    bootstrap 95 % interval (examples resampled together in both settings)."""
    a = np.asarray(per_example_a).reshape(len(per_example_a), -1)
    b = np.asarray(per_example_b).reshape(len(per_example_b), -1)
    if len(a) != len(b):
        raise ValueError(f"the settings must score the same examples ({len(a)} vs {len(b)})")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(n_boot, len(a)))
    boot = np.array([spearmanr(a[d].mean(0), b[d].mean(0)).statistic for d in draws])
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return Estimate(float(spearmanr(a.mean(0), b.mean(0)).statistic), float(low), float(high), len(a))


def gains(before, after, top: int | None = None) -> pd.DataFrame:
    """Per head, mean Imp before and after tuning and the gain, largest gain first."""
    before, after = np.asarray(before), np.asarray(after)
    frame = pd.DataFrame([{"head": f"{l}_{h}", "layer": l, "index": h, "before": before[l, h],
                           "after": after[l, h], "gain": after[l, h] - before[l, h]}
                          for l in range(before.shape[0]) for h in range(before.shape[1])])
    frame = frame.sort_values("gain", ascending=False, kind="stable").set_index("head")
    return frame.head(top) if top else frame


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
        raise ValueError(f"{tuned.name} and {base.name} have different attention shapes: was one tuned from the other?")


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


@contextlib.contextmanager
def transplanted(tuned, base, heads):
    """Within the block, the given heads of `tuned` carry `base`'s weights (W_Q, W_K, W_V, W_O slices and
    biases); restored on exit. Under grouped-query attention a head's key/value weights are shared with its
    group, so they move for the whole group."""
    _check_same_shape(tuned, base)
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


def transplant_test(tuned, base, examples, heads, mode: str = "vqa", draws: int = 200, seed: int = 0,
                    controls=("all", "same-layer"), control_examples: int | None = None) -> pd.DataFrame:
    """Put `base`'s weights back into `heads` of `tuned` and measure what the answer loses (Δ accuracy and Δ log p
    of the true colour, with bootstrap intervals over examples), against random head sets given theirs back
    (`interventions.null_sets`, per control in `controls`: the sets' mean, 2.5–97.5 % range, and the permutation
    p-value of the chosen heads' mean Δ log p, on the first `control_examples` examples; all batched)."""
    test = HeadSetTest(tuned, examples, mode, lambda model, rows: transplanted_rows(model, base, rows),
                       control_examples)
    heads = [tuple(h) for h in heads]
    hit = test.effect([heads])
    return pd.DataFrame([{
        "heads given back": ", ".join(f"{l}_{h}" for l, h in heads),
        "Δ accuracy": bootstrap(hit["Δ accuracy"][0], seed=seed), "Δ log p": bootstrap(hit["Δ log p"][0], seed=seed),
        **test.controls(heads, draws, np.random.default_rng(seed), controls),
        "clean accuracy": bootstrap(test.clean[id(test.encoded)]["correct"][0], seed=seed), "n": len(examples),
        "n (control)": test.n_control}])


def where_heads_look(model, examples, heads, seed: int = 0) -> pd.DataFrame:
    """For each head, the share of its attention from the last position on the asked animal's box, on the rest of
    the image, on the asked animal's word in the question, and on the rest of the text, over scenes (mean with
    bootstrap interval); and each target's share of the positions (what uniform attention would give)."""
    targets = ["asked animal's box", "rest of the image", "asked animal's word", "rest of the text"]
    shares, sizes = {h: [] for h in heads}, []
    for example in progress([e for e in examples if e.box is not None], f"{model.name}: where the heads look"):
        trace = model.trace(**example.inputs("vqa"))
        n = trace.attn_weights.shape[-1]
        image = torch.zeros(n, dtype=torch.bool)
        image[trace.positions.image_positions] = True
        box = torch.zeros(n, dtype=torch.bool)
        box[trace.positions.image_positions[torch.as_tensor(
            example.box_mask(model.processor.image_processor, trace.positions.grid_shape).ravel())]] = True
        word = trace.input_ids.cpu() == model.token_id(example.animal)
        parts = [box, image & ~box, word, ~image & ~word]
        sizes.append([part.float().mean().item() for part in parts])
        for layer, head in heads:
            w = trace.attn_weights[layer, head].cpu()
            shares[(layer, head)].append([w[part].sum().item() for part in parts])
    split = lambda values: dict(zip(targets, (bootstrap(np.array(values), seed=seed)[i] for i in range(len(targets)))))
    rows = {f"{l}_{h}": split(v) for (l, h), v in shares.items()}
    rows["uniform attention"] = split(sizes)
    return pd.DataFrame(rows).T


def paper_overlap(key: str, k: int = 10, n_heads: int = 1024) -> dict:
    """The paper's top-k overlap (data/reference/paper.csv) with its own chance level: Llava-1.5-7b has 32 layers
    of 32 heads, and the paper compares top-10 sets."""
    shared = int(float(paper_numbers().loc[key, "value"]))
    return {"k": k, "share of heads": k / n_heads, "overlap": shared, "expected by chance": k * k / n_heads,
            "P(overlap ≥ observed | chance)": float(hypergeom.sf(shared - 1, n_heads, k, k))}
