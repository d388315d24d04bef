"""Arguments of the Python API checked where they come in: one LlavamechError line that names the argument and
what it may be, never an IndexError deep inside a hook, a silent slice (k=-1 keeping all but one), or a head that
does not exist ablated as a no-op."""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .errors import LlavamechError


def host_array(values, dtype=None) -> np.ndarray:
    """Values as a NumPy array on the host: a tensor from any device (bfloat16 read as float32, which NumPy lacks),
    an array or a (nested) list. What a user or a statistic receives comes back through here."""
    if isinstance(values, torch.Tensor):
        values = values.detach()
        values = (values.float() if values.is_floating_point() else values).cpu().numpy()
    return np.asarray(values, dtype=dtype)


def whole(name: str, value, least: int = 1, most: int | None = None, of: str = "") -> int:
    """`value` as a whole number in [least, most]; 2.5, "3", True and -1 are refused (`of`: whose bound `most` is).
    A one-element integer tensor (an argmax) counts as its number."""
    if getattr(value, "numel", None) is not None and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, (list, tuple, set)):   # one number was asked (a count, an index), and a selection came
        raise LlavamechError(f"{name} must be one whole number, not a list: got {value!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least \
            or (most is not None and value > most):
        bound = f"of at least {least}" if most is None else f"from {least} to {most}{of}"
        raise LlavamechError(f"{name} must be a whole number {bound}, got {value!r}")
    return int(value)


def layer(name: str, value, n_layers: int, model: str = "the model") -> int:
    return whole(name, value, 0, n_layers - 1, f" ({model} has {n_layers} layers, counted from 0)")


def layers(name: str, values, n_layers: int, model: str = "the model") -> list[int]:
    """A list of layer indices (a single int is taken as one)."""
    values = [values] if isinstance(values, numbers.Integral) and not isinstance(values, bool) else values
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise LlavamechError(f"{name} must be a list of layer numbers such as [0, 2], got {values!r}")
    return [layer(name, v, n_layers, model) for v in values]


def token(name: str, value, vocab: int) -> int:
    return whole(name, value, 0, vocab - 1, " (a token id of the vocabulary)")


def heads(name: str, values, n_layers: int, n_heads: int, model: str = "the model") -> list[tuple[int, int]]:
    """Heads as [(layer, head), ...]; the dicts of `top_heads` / `Explanation.top_heads` ({layer, head, ...}) are
    taken too, so a ranking can be ablated as it comes."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise LlavamechError(f"{name} must be a list of (layer, head) pairs such as [(3, 1)], got {values!r}")
    out = []
    for value in values:
        if isinstance(value, dict) and {"layer", "head"} <= value.keys():
            value = (value["layer"], value["head"])
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            raise LlavamechError(f"{name}: {value!r} is not a (layer, head) pair such as (3, 1)")
        out.append((layer(f"{name}: the layer of {tuple(value)!r}", value[0], n_layers, model),
                    whole(f"{name}: the head of {tuple(value)!r}", value[1], 0, n_heads - 1,
                          f" ({model} has {n_heads} heads per layer, counted from 0)")))
    return out
