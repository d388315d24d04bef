"""Passes that touch a model (forward hooks, its attention implementation, its weights' `requires_grad`) hold that
model's lock, so two threads sharing one model serialise instead of landing in each other's hooks or restoring
each other's settings; and whatever they change is undone on the way out, even when the pass fails.

    with hooked(model.hf) as hooks:
        hooks.after(layer.mlp, lambda module, args, out: seen.append(out))
        model.hf(**inputs)
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import torch
from torch import nn

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock of one model (re-entrant: a hooked pass may run inside another, e.g. a trace under an ablation)."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


class Hooks:
    """The hooks registered during one `hooked` block."""

    def __init__(self):
        self.handles = []

    def before(self, module: nn.Module, fn, with_kwargs: bool = False) -> None:
        self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def after(self, module: nn.Module, fn, with_kwargs: bool = False) -> None:
        self.handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


@contextlib.contextmanager
def hooked(model: nn.Module):
    """Hold `model`'s lock and yield a `Hooks`; every hook registered through it is removed on exit."""
    with model_lock(model):
        hooks = Hooks()
        try:
            yield hooks
        finally:
            hooks.remove()


@contextlib.contextmanager
def sdpa_attention(model: nn.Module):
    """PyTorch's fused attention (SDPA) inside the block, the model's own implementation restored after. Nothing
    llavamech reads needs eager attention's weights (the trace computes the scored position's own), and SDPA is
    the faster forward on every device. A model without SDPA support stays as it is."""
    with model_lock(model):
        before = model.config._attn_implementation
        if before == "sdpa":
            yield
            return
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError):
            yield
            return
        try:
            yield
        finally:
            model.set_attn_implementation(before)


@contextlib.contextmanager
def frozen_weights(model: nn.Module):
    """The weights' `requires_grad` off inside the block (restored after), so a backward pass builds gradients for
    the inputs only: for llava-1.5-7b in bfloat16 the weight gradients alone would take another 14 GB."""
    with model_lock(model):
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


class _Captured(Exception):
    """Raised by the capturing hook of `language_model_inputs` to stop the pass once it has what it needs."""


@torch.no_grad()
def language_model_inputs(model: nn.Module, language_model: nn.Module, inputs: dict) -> torch.Tensor:
    """The input embeddings of `language_model` when `model(**inputs)` runs (for a Llava, the image's projected
    patches already merged in; for a language model alone, its embedded input_ids), in the model's dtype and on its
    device. The pass stops there: the decoder layers never run."""
    return language_model_call(model, language_model, inputs)[0]


# what a vision-language model computes from its image and hands its language model besides the embeddings:
# Qwen3-VL's "deepstack" features, added to the residual stream at the image positions after its first layers
VISUAL_KWARGS = ("visual_pos_masks", "deepstack_visual_embeds")


@torch.no_grad()
def language_model_call(model: nn.Module, language_model: nn.Module, inputs: dict) -> tuple[torch.Tensor, dict, dict]:
    """`language_model_inputs`; the position ids the model gave its language model when it computed them itself
    ({"position_ids": ...}, e.g. Qwen2-VL's 3-D rotary positions [3, B, S]; {} when the language model numbers
    its positions), which a pass on the embeddings alone must be given to place the image tokens as the model did;
    and what else of the image the language model received (`VISUAL_KWARGS`; {} for most models), which such a
    pass must hand the language model itself (`inject`)."""
    got = {}

    def capture(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")   # None for a language model alone: it embeds its input_ids itself
        got["embeds"] = (module.embed_tokens(kwargs["input_ids"]) if embeds is None else embeds).detach()
        got["extras"] = {} if kwargs.get("position_ids") is None else {"position_ids": kwargs["position_ids"].detach()}
        got["visual"] = {k: kwargs[k] for k in VISUAL_KWARGS if kwargs.get(k) is not None}
        raise _Captured

    with hooked(model) as hooks:
        hooks.before(language_model, capture, with_kwargs=True)
        try:
            model(**inputs, use_cache=False)
        except _Captured:
            pass
    return got["embeds"], got["extras"], got["visual"]


def visual_rows(visual: dict, rows: list[int]) -> dict:
    """What a batch's language model got of its images (`visual`, from `language_model_call`) for the batch rows
    `rows` (repeats allowed), in that order: each row's mask, and each row's own features, which the batch holds
    flattened over its image positions row after row. {} stays {}."""
    if not visual:
        return {}
    masks = visual["visual_pos_masks"]
    counts = masks.sum(1).tolist()
    return {"visual_pos_masks": masks[rows],
            "deepstack_visual_embeds": [torch.cat([x.split(counts)[r] for r in rows])
                                        for x in visual["deepstack_visual_embeds"]]}


def inject(hooks: Hooks, language_model: nn.Module, visual: dict, rows: int | None = None) -> None:
    """Hand the language model `visual` (from `language_model_call`) in a pass on embeddings alone: one example's
    for a batch of `rows` copies of it, or with rows=None a batch's as it is (`visual_rows` picks its rows)."""
    if not visual:
        return
    if rows is not None:
        visual = visual_rows(visual, [0] * rows)
    device = next(language_model.parameters()).device
    batched = {"visual_pos_masks": visual["visual_pos_masks"].to(device),
               "deepstack_visual_embeds": [x.to(device) for x in visual["deepstack_visual_embeds"]]}
    hooks.before(language_model, lambda module, args, kwargs: (args, {**kwargs, **batched}), with_kwargs=True)
