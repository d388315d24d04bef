"""Causal checks: run the model with parts of it ablated, through forward hooks removed on exit (the model is
unchanged afterwards), and measure what the answer loses.

Ablations: heads (their slice of o_proj's input), whole attention or FFN layers, and image patches (their visual
embeddings, the projector's outputs). `how="zero"` sets the part to zero; `how="mean"` to its mean over the
positions of a reference example set (`activation_means`), which keeps the activations in their usual range.
"""
from __future__ import annotations

import contextlib
import itertools
import numbers
from dataclasses import dataclass
from math import comb, prod

import numpy as np
import pandas as pd
import torch

from . import families, validate
from .batching import first_batch, in_batches
from .errors import LlavamechError
from .examples import Example, example_list
from .hooks import hooked, inject, language_model_call, sdpa_attention, visual_rows
from .progress import progress
from .readouts import top_heads_of
from .stats import bootstrap, holm, sign_flip_p


@dataclass
class Means:
    """Mean activations over every position of a reference set: what mean ablation puts in place of a part. On
    the CPU (each ablation hook moves its part to where that part of the model runs)."""
    o_proj_in: torch.Tensor    # [L, H * head_dim] the heads' outputs before o_proj
    attn: torch.Tensor         # [L, d] attention outputs
    ffn: torch.Tensor          # [L, d] FFN outputs
    visual: torch.Tensor | None  # [d] visual embeddings (projector outputs); None for a text-only model


def _projector(model):
    """What outputs the visual embeddings (Llava's projector, Qwen-VL's merger, Idefics3's connector), or None."""
    return model.anatomy.projector if model.is_multimodal else None


def _grid_projector(model):
    """The projector where row p of its output [B, P, d] is patch p of the grid, row-major (Llava, Gemma 3), so that
    hooking it ablates patches; one line otherwise. Elsewhere its rows are tiles (LLaVA-NeXT, OneVision, Idefics3)
    or merged tokens flattened over the batch in the tower's own order (Qwen-VL), and the layout is applied after it."""
    if _projector(model) is None:
        raise LlavamechError(f"{model.name} is text-only: it has no image patches to ablate")
    grid = model.family.model_type == "gemma3" if model.family is not None \
        else not getattr(model.hf.config, "image_grid_pinpoints", None)
    if not grid:
        kind = model.family.class_name.removesuffix("ForConditionalGeneration") if model.family else "LLaVA-NeXT"
        raise LlavamechError(f"{model.name} is a {kind} model, whose projector does not output its patches as one "
                             "grid, row-major: ablate them through the input embeddings "
                             "(llavamech.patches.ablation_scores), which follow its image layout")
    return _projector(model)


def activation_means(model, examples: list[Example], mode: str) -> Means:
    """Means of every ablatable part over all positions of `examples` (run in `mode`)."""
    examples = example_list("activation_means", examples)
    a = model.anatomy
    sums: dict = {}

    def add(name, x):
        x = x.detach().float().reshape(-1, x.shape[-1])
        total, count = sums.get(name, (0.0, 0))
        sums[name] = (total + x.sum(0), count + len(x))

    modules = [(f"o{l}", layer.self_attn.o_proj, True) for l, layer in enumerate(a.layers)]
    modules += [(f"a{l}", layer.self_attn, False) for l, layer in enumerate(a.layers)]
    modules += [(f"f{l}", layer.mlp, False) for l, layer in enumerate(a.layers)]
    if _projector(model) is not None:
        modules.append(("visual", _projector(model), False))
    with hooked(model.hf) as hooks, torch.no_grad():
        for name, module, pre in modules:
            if pre:
                hooks.before(module, lambda m, args, name=name: add(name, args[0]))
            else:
                hooks.after(module, lambda m, args, out, name=name: add(name, out[0] if isinstance(out, tuple) else out))
        for example in progress(examples, "activation means"):
            model.hf(**model.inputs(**example.inputs(mode)), use_cache=False, logits_to_keep=1)
    mean = lambda name: (sums[name][0] / sums[name][1]).cpu()
    return Means(torch.stack([mean(f"o{l}") for l in range(a.n_layers)]),
                 torch.stack([mean(f"a{l}") for l in range(a.n_layers)]),
                 torch.stack([mean(f"f{l}") for l in range(a.n_layers)]),
                 mean("visual") if "visual" in sums else None)


def patch_lists(patches):
    """`ablated`'s patches as None, one list of patch indices, or one list per batch row. Booleans (a mask taken
    for indices 0 and 1) and fractions (1.9 read as patch 1) are refused, not coerced."""
    if patches is None:
        return None
    if isinstance(patches, (np.ndarray, torch.Tensor)):
        if patches.dtype in (torch.bool, np.bool_) or patches.ndim > 2:
            raise LlavamechError("patches must be patch indices such as [3, 10] (or one list per batch row); for a "
                                 "boolean mask over the grid pass its indices, e.g. numpy.flatnonzero(mask)")
        patches = patches.tolist()
    if isinstance(patches, (str, bytes, dict)) or not hasattr(patches, "__iter__"):
        raise LlavamechError(f"patches must be a list of patch indices such as [3, 10], got {patches!r}")
    patches = [p.tolist() if isinstance(p, (np.ndarray, torch.Tensor)) else p for p in patches]
    nested = bool(patches) and all(hasattr(p, "__iter__") and not isinstance(p, (str, bytes)) for p in patches)
    for row in (patches if nested else [patches]):
        for p in row:
            if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
                hint = ("; for a boolean mask over the grid pass its indices, e.g. numpy.flatnonzero(mask)"
                        if isinstance(p, (bool, np.bool_)) else "")
                raise LlavamechError(f"patches must be whole patch indices such as [3, 10] (or one list per batch "
                                     f"row), got {p!r}{hint}")
    return [[int(p) for p in row] for row in patches] if nested else [int(p) for p in patches]


def check_means(model, means: "Means", how: str | None, needs_visual: bool) -> str:
    """`how` settled ("zero" where not given) and `means` fit for mean ablation on `model`: its shapes are this
    model's (means of another model would be broadcast into the wrong slices or fail inside a hook), with visual
    means where patches are ablated. Means given without a `how` are refused: zero ablation would run and ignore
    them (a loop over how="zero" and "mean" may pass them to both)."""
    if how is None:
        if means is not None:
            raise LlavamechError("means given without how: pass how=\"mean\" to ablate to them (how=\"zero\" ignores "
                                 "them)")
        how = "zero"
    if how not in ("zero", "mean"):
        raise LlavamechError(f"how must be 'zero' or 'mean', not {how!r}")
    if how == "zero":
        return how
    if not isinstance(means, Means):
        raise LlavamechError("mean ablation needs means=activation_means(model, reference_examples, mode)")
    a = model.anatomy
    expected = {"o_proj_in": (a.n_layers, a.n_heads * a.head_dim), "attn": (a.n_layers, a.d_model),
                "ffn": (a.n_layers, a.d_model)}
    for name, shape in expected.items():
        if tuple(getattr(means, name).shape) != shape:
            raise LlavamechError(f"these means are not {model.name}'s (their {name} is {tuple(getattr(means, name).shape)}, "
                                 f"{model.name} needs {shape}): compute them with activation_means({model.name}, ...)")
    if needs_visual:
        if means.visual is None:
            raise LlavamechError("mean ablation of patches needs visual means: compute the means on examples run "
                                 "with their image (activation_means(model, examples, \"vqa\"))")
        if means.visual.shape[-1] != a.d_model:
            raise LlavamechError(f"these means' visual part has width {means.visual.shape[-1]}, not "
                                 f"{model.name}'s {a.d_model}: compute them with activation_means({model.name}, ...)")
    return how


ABLATION_ARGUMENTS = ("heads", "attn_layers", "ffn_layers", "patches", "how", "means", "row_heads")


@contextlib.contextmanager
def ablated(model, heads=(), attn_layers=(), ffn_layers=(), patches=None, how: str | None = None,
            means: Means | None = None, row_heads=None):
    """Within the block, the model runs with the given parts ablated.

    heads: [(layer, head), ...]; attn_layers / ffn_layers: [layer, ...]; patches: patch indices (row-major) ablated
    in every batch row, or one list per batch row (to ablate a different patch in each copy of an image), at the
    projector, so only where it outputs the patch grid row-major (Llava, Gemma 3; `_grid_projector`);
    row_heads: one list of (layer, head) per batch row, ablated in that row only (many head sets in one pass)."""
    patches = patch_lists(patches)
    how = check_means(model, means, how, needs_visual=bool(patches))
    a = model.anatomy
    hd = a.head_dim
    # a head or layer that does not exist would be ablated as a silent no-op (or fail inside a hook): one line here
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads, model.name)
    attn_layers = validate.layers("attn_layers", attn_layers, a.n_layers, model.name)
    ffn_layers = validate.layers("ffn_layers", ffn_layers, a.n_layers, model.name)
    if row_heads is not None:
        row_heads = [validate.heads("row_heads", chosen, a.n_layers, a.n_heads, model.name) for chosen in row_heads]

    def fill(x, value):
        return torch.zeros_like(x) if how == "zero" else value.to(x.device, x.dtype).expand_as(x).clone()

    def heads_hook(layer, chosen):
        def hook(module, args):
            x = args[0].clone()
            for h in chosen:
                sl = slice(h * hd, (h + 1) * hd)
                x[..., sl] = fill(x[..., sl], None if how == "zero" else means.o_proj_in[layer, sl])
            return (x,) + args[1:]
        return hook

    def row_heads_hook(layer, masks):
        def hook(module, args):
            x = args[0]
            if len(x) != len(masks):
                raise LlavamechError(f"{len(masks)} head sets for a batch of {len(x)} rows")
            value = torch.zeros((), dtype=x.dtype, device=x.device) if how == "zero" \
                else means.o_proj_in[layer].to(x.device, x.dtype)
            return (torch.where(masks.to(x.device)[:, None, :], value, x),) + args[1:]
        return hook

    def output_hook(value):
        def hook(module, args, out):
            if isinstance(out, tuple):
                return (fill(out[0], value),) + out[1:]
            return fill(out, value)
        return hook

    def patches_hook(module, args, out):
        out = out.clone()
        rows = patches if patches and isinstance(patches[0], list) else [patches] * len(out)
        if len(rows) != len(out):
            raise LlavamechError(f"{len(rows)} patch lists for a batch of {len(out)} images")
        for r, chosen in enumerate(rows):
            idx = torch.as_tensor(list(chosen), dtype=torch.long)
            if len(idx) and not (0 <= int(idx.min()) and int(idx.max()) < out.shape[1]):
                raise LlavamechError(f"patches: {sorted(set(idx.tolist()))} holds a patch outside 0..{out.shape[1] - 1} "
                                     f"(the image gives {out.shape[1]} patches, row-major)")
            if len(idx):
                out[r, idx] = fill(out[r, idx], None if how == "zero" else means.visual)
        return out

    with hooked(model.hf) as hooks:
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        for layer, chosen in by_layer.items():
            hooks.before(a.layers[layer].self_attn.o_proj, heads_hook(layer, chosen))
        if row_heads is not None:
            cells: dict[int, list[tuple[int, int]]] = {}
            for r, chosen in enumerate(row_heads):
                for layer, head in chosen:
                    cells.setdefault(layer, []).append((r, head))
            for layer, where in cells.items():
                rows_, heads_ = torch.as_tensor(where).T
                masks = torch.zeros(len(row_heads), a.n_heads, dtype=torch.bool)
                masks[rows_, heads_] = True
                hooks.before(a.layers[layer].self_attn.o_proj,
                             row_heads_hook(layer, masks.repeat_interleave(hd, dim=1)))
        for layer in attn_layers:
            hooks.after(a.layers[layer].self_attn, output_hook(None if how == "zero" else means.attn[layer]))
        for layer in ffn_layers:
            hooks.after(a.layers[layer].mlp, output_hook(None if how == "zero" else means.ffn[layer]))
        if patches:
            hooks.after(_grid_projector(model), patches_hook)
        yield model


def same_length_groups(model, examples: list[Example], mode: str) -> list[tuple[list[int], list[dict]]]:
    """The model inputs of `examples` grouped by sequence length (batched without padding, each row is computed
    as it would be alone), and by the shape of every other input, which can differ at one length (LLaVA-OneVision's
    and Idefics3's tiles of images of different sizes pooled or split to as many tokens): [(indices into examples,
    their inputs)]."""
    groups: dict[tuple, tuple[list[int], list[dict]]] = {}
    for i, example in enumerate(examples):
        enc = model.inputs(**example.inputs(mode))
        shapes = tuple((key, tuple(value.shape[1:])) for key, value in enc.items())
        indices, inputs = groups.setdefault(shapes, ([], []))
        indices.append(i)
        inputs.append(enc)
    return list(groups.values())


def colour_targets(model, examples: list[Example]) -> np.ndarray:
    """The true answer's token id of each example [n] (the colour, for a colour question); a causal check cannot
    score an example without one."""
    missing = [e.source for e in examples if e.expected is None]
    if missing:
        raise LlavamechError(f"{missing[0]}: no true answer; a causal check scores the true answer's log p, so every "
                             "item needs one (\"colour\", or \"answer\" beside its \"question\")")
    return np.array([model.token_id(e.expected) for e in examples])


@torch.no_grad()
def answer_scores(model, examples: list[Example], mode: str, batch: int = 64, **ablation) -> dict[str, np.ndarray]:
    """Per example, under the ablation given as keyword arguments of `ablated`: `log p` of the true colour and
    `correct` (top-1 is the true colour): arrays [n]. Every example needs its colour. At most `batch` examples per
    forward pass, fewer where the device's memory is short."""
    unknown = sorted(set(ablation) - set(ABLATION_ARGUMENTS))
    if unknown:
        raise LlavamechError(f"answer_scores has no argument {unknown[0]!r}: an ablation is given by "
                             f"{', '.join(ABLATION_ARGUMENTS)}")
    batch = validate.whole("batch", batch)
    if mode == "tqa" and patch_lists(ablation.get("patches")):
        raise LlavamechError("patches ablate the image, and mode \"tqa\" runs without it: ablate patches in "
                             "mode \"vqa\"")
    targets = colour_targets(model, examples)
    logp, correct = np.zeros(len(examples)), np.zeros(len(examples))

    def last_logits(encoded: list[dict]) -> torch.Tensor:
        inputs = {key: torch.cat([enc[key] for enc in encoded]) for key in encoded[0]}
        return model.hf(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float().cpu()

    with ablated(model, **ablation):
        for indices, encoded in same_length_groups(model, examples, mode):
            size = first_batch(model, len(encoded), encoded[0]["input_ids"].shape[1], batch)
            logits = torch.cat(in_batches(last_logits, encoded, "the causal checks", size))
            t = torch.as_tensor(targets[indices])
            logp[indices] = torch.log_softmax(logits, -1)[torch.arange(len(indices)), t].cpu().numpy()
            correct[indices] = (logits.argmax(-1) == t).float().cpu().numpy()
    return {"log p": logp, "correct": correct}


def effect(clean: dict, ablated_scores: dict) -> dict[str, np.ndarray]:
    """Per-example change from the clean run: `Δ log p` and `Δ accuracy` (negative = the ablation hurt)."""
    for name, scores in (("clean", clean), ("ablated_scores", ablated_scores)):
        if not isinstance(scores, dict) or not {"log p", "correct"} <= scores.keys():
            raise LlavamechError(f"effect's {name} must be answer_scores' dict, with \"log p\" and \"correct\"")
    if np.shape(clean["log p"])[-1:] != np.shape(ablated_scores["log p"])[-1:]:
        raise LlavamechError(f"effect compares the same examples: the clean scores cover {np.shape(clean['log p'])[-1]}"
                             f", the ablated {np.shape(ablated_scores['log p'])[-1]}")
    return {"Δ log p": ablated_scores["log p"] - clean["log p"],
            "Δ accuracy": ablated_scores["correct"] - clean["correct"]}


@dataclass
class Encoded:
    """Examples encoded once for many intervened passes over the language model: per group of equal length (run
    without padding), the example indices and the language model's inputs (the image already merged into the
    input embeddings, so no pass reruns the vision tower; with whatever else the model hands its language model, see
    `encode`), and each example's true-colour token."""
    groups: list[tuple[np.ndarray, dict]]
    targets: np.ndarray
    n: int


@torch.no_grad()
def encode(model, examples: list[Example], mode: str) -> Encoded:
    """`examples` as the language model's input embeddings and masks (see `Encoded`). For a Llava the vision tower
    and projector run once here; interventions inside the language model (heads, weights) leave them unchanged.
    A pass on embeddings alone is the model's own pass only with what the model derives from the token ids and the
    image besides them, kept per group: `extras`, forward arguments with a batch row per example (Qwen-VL's 3-D
    rotary positions [3, B, S], Gemma 3's token types [B, S] for its both-ways attention among image tokens), and
    `visual`, what the model hands its language model directly (Qwen3-VL's deepstack features, `hooks.inject`)."""
    targets = colour_targets(model, examples)
    groups = []
    for indices, encoded in same_length_groups(model, examples, mode):
        inputs = {key: torch.cat([enc[key] for enc in encoded]) for key in encoded[0]}
        embeds, extras, visual = language_model_call(model.hf, model.anatomy.language_model, inputs)
        extras.update(families.embeddings_extras(model.hf, inputs))
        groups.append((np.asarray(indices), {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"],
                                             "extras": extras, "visual": visual}))
    return Encoded(groups, targets, len(examples))


def _rows(inputs: dict, local: torch.Tensor) -> dict:
    """The forward arguments of the group's rows `local` (repeats allowed): embeddings, mask and extras (whose batch
    dimension is the second to last: Qwen-VL's positions are [3, B, S])."""
    return {"inputs_embeds": inputs["inputs_embeds"][local], "attention_mask": inputs["attention_mask"][local],
            **{key: value[..., local, :] for key, value in inputs["extras"].items()}}


@torch.no_grad()
def set_scores(model, encoded: Encoded, sets: list, intervention, batch: int = 512) -> dict[str, np.ndarray]:
    """`log p` of the true colour and `correct` for every example under each of `sets` (arrays [sets, n]),
    batched across sets: one batch row per (set, example), `intervention(model, row_sets)` a context manager that
    applies each row's own set (e.g. `ablated(model, row_heads=...)`, `transfer.transplanted_rows`). At most
    `batch` rows per forward pass, fewer where the device's memory is short; fused (SDPA) attention, which gives
    the eager pass's logits to float precision."""
    if not callable(intervention):
        raise LlavamechError("intervention must be a function (model, row_sets) -> context manager, e.g. "
                             "lambda m, rows: ablated(m, row_heads=rows)")
    batch = validate.whole("batch", batch)
    logp, correct = np.zeros((len(sets), encoded.n)), np.zeros((len(sets), encoded.n))
    for indices, inputs in encoded.groups:
        rows = [(s, i) for s in range(len(sets)) for i in range(len(indices))]
        size = first_batch(model, len(rows), inputs["inputs_embeds"].shape[1], batch)

        def run(chunk):
            which, local = (torch.as_tensor(x) for x in zip(*chunk))
            with intervention(model, [sets[s] for s in which.tolist()]), hooked(model.hf) as hooks:
                inject(hooks, model.anatomy.language_model, visual_rows(inputs["visual"], local.tolist()))
                logits = model.hf(**_rows(inputs, local), use_cache=False, logits_to_keep=1).logits[:, -1].float().cpu()
            local = local.cpu().numpy()
            t = torch.as_tensor(encoded.targets[indices[local]])
            return (which.cpu().numpy(), indices[local],
                    torch.log_softmax(logits, -1)[torch.arange(len(t)), t].cpu().numpy(),
                    (logits.argmax(-1) == t).float().cpu().numpy())

        with sdpa_attention(model.hf):
            done = in_batches(run, rows, "the causal checks", size)
        for which, examples_, lp, ok in done:
            logp[which, examples_], correct[which, examples_] = lp, ok
    return {"log p": logp, "correct": correct}


CONTROLS = ("all", "same-layer")


def check_controls(controls) -> tuple[str, ...]:
    """The random-set controls asked for, as a tuple of CONTROLS (one name alone is taken as one; () runs none)."""
    controls = (controls,) if isinstance(controls, str) else tuple(controls)
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise LlavamechError(f"controls must be some of {CONTROLS} (or none, ()), not {bad[0]!r}")
    return controls


def null_sets(n_layers: int, n_heads: int, heads, control: str, draws: int, rng) -> tuple[list, bool]:
    """The random head sets a chosen set is compared with, and whether they are all of them (an exact test).

    control="all": sets of as many heads, from all the model's heads; "same-layer": sets with as many heads in
    each layer as the chosen set has there, from those layers' heads. As in a permutation test, a random set may
    share heads with the chosen one; the chosen set itself is never one of them. When there are at most `draws`
    such sets they are enumerated (exact); otherwise `draws` are drawn uniformly (with replacement)."""
    if control not in CONTROLS:
        raise LlavamechError(f"control must be one of {CONTROLS}, not {control!r}")
    heads = validate.heads("heads", heads, n_layers, n_heads)
    if not heads:
        raise LlavamechError("a random-set control compares a chosen set of heads with random ones: choose at least "
                             "one head")
    draws = validate.whole("draws", draws)
    if not isinstance(rng, np.random.Generator):
        raise LlavamechError(f"rng must be a numpy.random.Generator, e.g. numpy.random.default_rng(0), "
                             f"not {type(rng).__name__}")
    chosen = frozenset(heads)
    if control == "all":
        pools = [([(l, h) for l in range(n_layers) for h in range(n_heads)], len(chosen))]
    else:
        counts: dict[int, int] = {}
        for layer, _ in chosen:
            counts[layer] = counts.get(layer, 0) + 1
        pools = [([(layer, h) for h in range(n_heads)], count) for layer, count in sorted(counts.items())]
    total = prod(comb(len(pool), k) for pool, k in pools)
    if total - 1 <= draws:
        every = [sum(parts, ()) for parts in itertools.product(*[list(itertools.combinations(pool, k))
                                                                  for pool, k in pools])]
        return [list(s) for s in every if frozenset(s) != chosen], True
    out = []
    while len(out) < draws:
        s = [pool[i] for pool, k in pools for i in sorted(rng.choice(len(pool), k, replace=False))]
        if frozenset(s) != chosen:
            out.append(s)
    return out, False


def p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value: (1 + number of random sets at least as extreme, i.e. as low) / (1 + sets)."""
    null = np.asarray(null)
    return float((1 + (null <= observed).sum()) / (1 + len(null)))


@dataclass
class Control:
    """A chosen set's effect against random sets, on the same examples: per example the chosen set's effect (`hit`)
    and the random sets' mean effect (`null_per_example`); per random set its mean effect; and two tests of the
    chosen set's Δ log p against them. Where no random set differs from the chosen one (it holds every head the
    control draws from) there is nothing to test against: both p-values are NaN, never significant.

    The paired test (`p_value`, the table's "p"): per example, the chosen set's Δ log p less the random sets' mean
    Δ log p there (`paired`); a one-sided sign-flip p-value that their mean is below zero (the chosen set costs
    more than a random set does, on average over examples). Its resolution grows with the examples, so it can stand
    where a layer has few head sets.
    The rank among sets (`rank_p`): (1 + random sets losing at least as much on average) / (1 + random sets): whether
    the chosen set is among the most costly sets. It cannot fall below 1 / (sets + 1): with a layer's 55 sets of
    three heads, 0.018, never under 0.05 once adjusted for a handful of tests. Shown, not tested."""
    control: str
    hit: dict                  # {"Δ log p", "Δ accuracy"}: [n] for the chosen set
    null_logp: np.ndarray      # [sets] mean Δ log p of each random set
    null_acc: np.ndarray       # [sets] mean Δ accuracy
    null_per_example: np.ndarray   # [n] the random sets' mean Δ log p on each example
    p_value: float             # the paired sign-flip test
    rank_p: float              # the rank among sets
    exact: bool                # every possible random set was run
    sets_run: list | None = None   # the random sets, in the order of null_logp

    @property
    def sets(self) -> int:
        return len(self.null_logp)

    @property
    def paired(self) -> np.ndarray:
        """[n] the chosen set's Δ log p less the random sets' mean Δ log p, per example (negative: costs more)."""
        return self.hit["Δ log p"] - self.null_per_example

    @property
    def rank(self) -> int:
        """1 + how many random sets cost at least as much log p on average as the chosen set."""
        return int(1 + (self.null_logp <= self.hit["Δ log p"].mean()).sum())


def against_random(model, heads, effect_of, draws: int, rng, control: str = "all") -> Control:
    """The effect of an intervention on `heads` and on random head sets (`null_sets`: `control` "all" or
    "same-layer", `draws` of them unless fewer exist). `effect_of(list of head sets)` -> {"Δ log p", "Δ accuracy"}:
    arrays [sets, n] (batched across sets). Tests: `Control`'s paired sign-flip test over examples and the chosen
    set's rank among the random sets."""
    a = model.anatomy
    null, exact = null_sets(a.n_layers, a.n_heads, heads, control, draws, rng)
    out = effect_of([list(heads)] + null)
    hit = {key: value[0] for key, value in out.items()}
    if not null:   # the chosen heads are every head the control draws from: nothing to test against, p = NaN
        return Control(control, hit, np.zeros(0), np.zeros(0), np.full(len(hit["Δ log p"]), np.nan), np.nan,
                       np.nan, True, [])
    null_logp, null_acc = out["Δ log p"][1:].mean(1), out["Δ accuracy"][1:].mean(1)
    per_example = out["Δ log p"][1:].mean(0)
    paired = sign_flip_p(per_example - hit["Δ log p"], seed=int(rng.integers(2 ** 31)))
    return Control(control, hit, null_logp, null_acc, per_example, paired,
                   p_value(float(hit["Δ log p"].mean()), null_logp), exact, null)


class HeadSetTest:
    """Head sets under one intervention (`set_scores`' `intervention`), against the clean model: the examples
    encoded once, and their first `control_examples` (all by default) for the random sets; the clean scores of
    each; a set's effect; and the random-set controls as a table's columns."""

    def __init__(self, model, examples: list[Example], mode: str, intervention, control_examples: int | None = None):
        examples = example_list("a head-set test", examples)
        if control_examples is not None:
            control_examples = validate.whole("control_examples", control_examples)
        self.model, self.intervention = model, intervention
        self.encoded = encode(model, examples, mode)
        self.n_control = len(examples) if control_examples is None else min(control_examples, len(examples))
        self.control = (encode(model, examples[:self.n_control], mode) if self.n_control < len(examples)
                        else self.encoded)
        self.clean = {id(enc): set_scores(model, enc, [[]], intervention) for enc in (self.encoded, self.control)}

    def effect(self, sets: list, encoded: Encoded | None = None) -> dict[str, np.ndarray]:
        """{"Δ log p", "Δ accuracy"}: [sets, n], on all the examples (or on `encoded`, e.g. `self.control`)."""
        encoded = self.encoded if encoded is None else encoded
        return effect(self.clean[id(encoded)], set_scores(self.model, encoded, sets, self.intervention))

    def controls(self, heads, draws: int, rng, controls=CONTROLS) -> dict:
        """Per control: the random sets' mean effect with its 2.5–97.5 % range over sets, the paired difference of
        `heads`' Δ log p from theirs with its sign-flip p-value (`Control`), `heads`' rank among the sets, how many
        sets ran; and, private, the sets' Δ log p and the `Control`."""
        row = {}
        for control in check_controls(controls):
            c = against_random(self.model, heads, lambda sets: self.effect(sets, self.control), draws, rng, control)
            name = CONTROL_NAMES[control]
            row.update({"Δ log p on the control's examples": f"{c.hit['Δ log p'].mean():.3g}",
                        f"random Δ accuracy ({name})": spread(c.null_acc),
                        f"random Δ log p ({name})": spread(c.null_logp),
                        f"paired Δ log p ({name})": bootstrap(c.paired, seed=int(rng.integers(2 ** 31)))
                        if c.sets else "no random set",
                        f"p ({name})": c.p_value,
                        f"rank among sets ({name})": f"{c.rank} of {c.sets + 1}" if c.sets else "—",
                        f"sets ({name})": f"{c.sets} (all)" if c.exact else str(c.sets),
                        f"_null {control}": c.null_logp, f"_control {control}": c})
        return row


def held_out_ranking(examples: list[Example], head_scores, n_test: int | None) -> tuple[list[Example], list]:
    """Split an example set for a causal test of the top heads: the first `n_test` examples to test on (None, or as
    many as there are examples or more, as a chapter run at a small n_examples asks: the first half), and every head
    ranked by its mean score (`head_scores`: [n, layers, heads], per example, e.g. Imp) over the *other* examples.
    Ranked and tested on the same examples, the top heads would be the ones that happen to score high there, and a
    random-set control does not undo that selection. (test examples, ranked heads)."""
    scores = validate.host_array(head_scores, float)
    if scores.ndim != 3 or len(scores) != len(examples):
        raise LlavamechError(f"head_scores must be per-example scores [n, layers, heads] for the {len(examples)} "
                             f"examples, not shape {scores.shape}")
    if n_test is not None:
        n_test = validate.whole("n_test", n_test)
    n_test = len(examples) // 2 if n_test is None or n_test >= len(examples) else n_test
    if n_test < 1:
        raise LlavamechError(f"a causal test needs examples to test on and others to rank the heads on: "
                             f"{len(examples)} example(s) are too few; raise n_examples")
    if not np.isfinite(scores[n_test:]).any(axis=0).all():
        raise LlavamechError("head_scores has a head with no finite score on the ranking examples: it cannot be ranked")
    mean = np.nanmean(scores[n_test:], axis=0)
    return examples[:n_test], top_heads_of(mean, mean.size)


def head_ablation_test(model, examples: list[Example], mode: str, ranked_heads: list[tuple[int, int]],
                       ks=(1, 3, 5), draws: int = 200, how: str = "mean", means: Means | None = None,
                       seed: int = 0, controls=CONTROLS, control_examples: int | None = None) -> pd.DataFrame:
    """Ablate the top-k heads of `ranked_heads`, and random sets of k heads (`null_sets`, per control in
    `controls`). One row per k: the top-k effect with its bootstrap interval over all examples; per control the
    random sets' mean effect with the 2.5–97.5 % range over sets and the permutation p-value of the top-k mean
    Δ log p among them (on the first `control_examples` examples, all by default: the control runs each random
    set on them, batched)."""
    a = model.anatomy
    ranked_heads = validate.heads("ranked_heads", ranked_heads, a.n_layers, a.n_heads, model.name)
    if not ranked_heads:
        raise LlavamechError("ranked_heads is empty: give the heads ranked, best first (e.g. held_out_ranking's)")
    ks = [ks] if isinstance(ks, numbers.Integral) else ks
    ks = [validate.whole("ks: each k", k, 1, len(ranked_heads), f" (ranked_heads holds {len(ranked_heads)} heads)")
          for k in ks]
    controls = check_controls(controls)
    draws = validate.whole("draws", draws, 1 if controls else 0)
    rng = np.random.default_rng(validate.whole("seed", seed, 0))
    test = HeadSetTest(model, examples, mode, lambda m, rows: ablated(m, row_heads=rows, how=how, means=means),
                       control_examples)
    rows = []
    for k in progress(ks, "top-k vs random heads"):
        top = list(ranked_heads[:k])
        hit = test.effect([top])
        rows.append({"k": k, "heads": ", ".join(f"{l}_{h}" for l, h in top),
                     "top-k Δ accuracy": bootstrap(hit["Δ accuracy"][0], seed=seed),
                     "top-k Δ log p": bootstrap(hit["Δ log p"][0], seed=seed),
                     **test.controls(top, draws, rng, controls), "n": len(examples), "n (control)": test.n_control})
    return with_holm(pd.DataFrame(rows).set_index("k"))


CONTROL_NAMES = {"all": "all heads", "same-layer": "same layers"}


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """The table with "p, Holm (control)" beside each "p (control)": every permutation p-value of the table (each
    row's, each control's) adjusted together as one family (`stats.holm`), so that a claim read off any cell of
    the table stands at its level however many cells were tested. Tables of several tests put together (`pd.concat`)
    are adjusted again, as one family."""
    table = table.drop(columns=[c for c in table.columns if c.startswith("p, Holm (")])
    columns = [f"p ({name})" for name in CONTROL_NAMES.values() if f"p ({name})" in table.columns]
    if not columns:
        return table
    adjusted = holm(table[columns].to_numpy(float).ravel()).reshape(len(table), len(columns))
    for i, column in enumerate(columns):
        table.insert(table.columns.get_loc(column) + 1, column.replace("p (", "p, Holm ("), adjusted[:, i])
    return table


SHOWN_NOTE = ("Mean [a, b]: the 95 % bootstrap interval of a mean over examples. Mean (a to b): the random head "
              "sets' mean and the range of their middle 95 %, a spread over sets, not an interval. Paired Δ log p: "
              "per example, the chosen heads' Δ log p less the random sets' mean there (negative: they cost more). "
              "p: one-sided sign-flip p-value of that paired difference over the examples (10,000 random flips, so "
              "never below 1/10,001 ≈ 0.0001); Holm: adjusted over every test of the table. Rank among sets: where "
              "the chosen heads' mean cost falls among the random sets' (1 = costliest), shown, not tested.")


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table without its private columns (those starting with `_`: arrays for the figures), its p-values to
    three significant digits (0.0498 is visibly under 0.05), a cell a row lacks as "—", and a note (shown under
    it) on how to read its cells."""
    table = table[[c for c in table.columns if not c.startswith("_")]].copy()
    for column in [c for c in table.columns if c.startswith(("p (", "p, Holm ("))]:
        table[column] = table[column].map(lambda p: f"{p:.3g}" if isinstance(p, float) else p)
    table = table.astype(object).where(table.notna(), "—")   # a cell a row does not have (rows of several tests)
    table.attrs["note"] = SHOWN_NOTE
    return table


def spread(values: np.ndarray) -> str:
    """Mean and 2.5–97.5 % range of the random sets' effects (not a confidence interval: the sets' spread)."""
    if not len(values):
        return "none"
    low, high = np.percentile(values, [2.5, 97.5])
    return f"{values.mean():.3g} ({low:.3g} to {high:.3g})"
