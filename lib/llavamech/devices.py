"""Which device a name means here: one rule for `load(device=...)`, the CLI's --device and a chapter's `device`
parameter, so that each refuses a device this machine lacks with the same one line."""
from __future__ import annotations

import re

import torch

from .errors import LlavamechError


def resolve_device(device: str) -> str:
    """cpu, cuda, cuda:N, mps or auto (a GPU when there is one) -> a device that exists here, or one clear error."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise LlavamechError(f"device must be a name: cpu, cuda, cuda:N, mps or auto (not {device!r})")
    device = device.strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise LlavamechError(f"device '{device}' was asked for but no GPU is available here; use cpu")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise LlavamechError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} "
                                 f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise LlavamechError("device 'mps' (Apple GPU) is not available here; use cpu")
        return device
    raise LlavamechError(f"unknown device '{device}'; use cpu, cuda, cuda:N, mps or auto")
