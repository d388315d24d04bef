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

    def after(self, module: nn.Module, fn) -> None:
        self.handles.append(module.register_forward_hook(fn))

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
    got = {}

    def capture(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")   # None for a language model alone: it embeds its input_ids itself
        got["embeds"] = (module.embed_tokens(kwargs["input_ids"]) if embeds is None else embeds).detach()
        raise _Captured

    with hooked(model) as hooks:
        hooks.before(language_model, capture, with_kwargs=True)
        try:
            model(**inputs, use_cache=False)
        except _Captured:
            pass
    return got["embeds"]
