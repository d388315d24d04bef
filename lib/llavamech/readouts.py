"""Dataset-level runs: trace every example once, keep only what the readouts return (memory stays bounded: no
trace outlives its example), and summarise with bootstrap intervals.

    out = collect(model, examples, {"heads": head_imp, "layers": layer_imp}, mode="vqa")
    bootstrap(out["heads"])   # mean head Imp [L, H] with its 95 % interval
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import attribution, validate
from .errors import LlavamechError
from .examples import Example, example_list
from .progress import progress
from .stats import ranking_agreement
from .trace import Trace


@dataclass
class Item:
    """What a readout sees for one example: the model, the example, its trace, and the answer tokens."""
    model: object
    example: Example
    trace: Trace
    mode: str

    @property
    def answer(self) -> int:
        """The model's own top-1 next token (the paper scores this one)."""
        return self.trace.top_token

    @property
    def colour_id(self) -> int | None:
        return None if self.example.colour is None else self.model.token_id(self.example.colour)

    @property
    def animal_id(self) -> int:
        return self.model.token_id(self.example.animal)

    @property
    def correct(self) -> float:
        """1.0 if the answer is the true one (the colour, for a colour question), 0.0 if not, NaN when unknown."""
        expected = self.example.expected
        return float("nan") if expected is None else float(self.answer == self.model.token_id(expected))


Readout = Callable[[Item], object]


def collect(model, examples: list[Example], readouts: dict[str, Readout], mode: str = "vqa",
            all_positions: bool = False, desc: str | None = None) -> dict[str, list]:
    """Run every readout on every example's trace; {name: [one value per example]}. Values that are tensors or
    numbers of one shape are stacked into an array [n, ...]; a readout returning a dict gives a dict of those."""
    examples = example_list("collect", examples)
    if not isinstance(readouts, dict) or not readouts or not all(callable(r) for r in readouts.values()):
        raise LlavamechError("readouts must be a dict {name: function(item) -> value}, e.g. "
                             "{\"heads\": readouts.head_imp}")
    kept = {name: [] for name in readouts}
    for example in progress(examples, desc or f"{model.name} {mode.upper()}"):
        trace = model.trace(**example.inputs(mode), all_positions=all_positions)
        item = Item(model, example, trace, mode)
        for name, readout in readouts.items():
            value = readout(item)
            if value is None:
                raise LlavamechError(f"readout {name!r} returned None on {example.source or 'an example'}: a readout "
                                     "returns its value (a tensor, a number or a dict of them)")
            kept[name].append(value)
        del trace, item
    return {name: _stack(values) for name, values in kept.items()}


def _stack(values: list):
    if values and all(isinstance(v, dict) for v in values):  # a readout returning several named values
        if len({frozenset(v) for v in values}) > 1:
            raise LlavamechError("a readout returned dicts with different keys on different examples: "
                                 f"{sorted(values[0])} and {sorted(next(v for v in values if v.keys() != values[0].keys()))}")
        return {key: _stack([v[key] for v in values]) for key in values[0]}
    try:
        arrays = [validate.host_array(v, None if isinstance(v, torch.Tensor) else np.float64) for v in values]
        if len({a.shape for a in arrays}) == 1:
            return np.stack(arrays)
    except (TypeError, ValueError):
        pass
    return values


# ---- the readouts every chapter uses (token: the model's own answer, as the paper) ----
def head_imp(item: Item) -> torch.Tensor:
    """Imp of every head for the model's answer: [L, H]."""
    return attribution.head_scores(item.trace)


def layer_imp(item: Item) -> torch.Tensor:
    """Imp of every attention layer and FFN layer for the model's answer: [2, L] (row 0 attention, row 1 FFN)."""
    scores = attribution.layer_scores(item.trace)
    return torch.stack([scores["attn"], scores["ffn"]])


def head_z(item: Item) -> torch.Tensor:
    """Linear logit contribution z(a^{l,h})_w of every head for the model's answer: [L, H] (additive, unlike Imp)."""
    return attribution.head_logit_contributions(item.trace)


def layer_z(item: Item) -> torch.Tensor:
    """Linear logit contribution of every attention and FFN layer for the model's answer: [2, L]."""
    z = attribution.layer_logit_contributions(item.trace)
    return torch.stack([z["attn"], z["ffn"]])


def correct(item: Item) -> float:
    return item.correct


def top_heads_of(mean_scores, k: int) -> list[tuple[int, int]]:
    """The k heads with the highest mean score, as (layer, head), best first."""
    return [(h["layer"], h["head"]) for h in attribution.top_heads(torch.as_tensor(mean_scores), k)]


def imp_vs_z(imp, z, layers_z, top: int) -> dict:
    """How far Imp and the linear logit contribution z rank the heads alike, for one setting: `imp` and `z` are the
    heads' mean scores [L, H], `layers_z` the layers' z [2, L] (attention, FFN) averaged over examples. A table row:
    Spearman over all heads, how many of the `top` heads each puts first the other shares, both top lists, the
    best attention layer and the largest FFN z; and, under "_agree", `stats.ranking_agreement`'s numbers."""
    agree = ranking_agreement(imp, z, top=top)
    return {"Spearman, Imp vs z (all heads)": f"{agree['spearman']:.3f}",
            f"top {top} shared": agree["shared top"],
            f"top {top} by Imp": ", ".join(f"{l}_{h}" for l, h in top_heads_of(imp, top)),
            f"top {top} by z": ", ".join(f"{l}_{h}" for l, h in top_heads_of(z, top)),
            "best attention layer by z": int(layers_z[0].argmax()), "largest FFN z": f"{layers_z[1].max():.3f}",
            "_agree": agree}

