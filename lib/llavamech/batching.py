"""Batched forward passes that fit the device: the first batch size comes from the free device memory, and a batch
that still runs out of memory is halved and retried. On the CPU the caller's cap is used, at most `CPU_ROWS`.

    logp = in_batches(lambda rows: forward(rows), rows, "ablation", first_batch(model, len(rows), seq_len))
"""
from __future__ import annotations

import torch

from .errors import LlavamechError

USABLE = 0.8   # the share of the free device memory a batch may plan for (the allocator needs some slack)
# On the CPU more rows a batch run slower per row once their activations leave the caches: toy-llava's 65
# patch-ablation rows took 0.16 s in batches of 16 and 0.22 s in one of 64 (one thread), with the same values.
CPU_ROWS = 16


def row_bytes(model, seq_len: int, backward: bool = False) -> int:
    """A generous estimate of the activation memory of one batch row of `seq_len` tokens: one layer's transients
    (hidden states, q/k/v, the FFN's three [S, I] tensors) for a forward pass without gradients; every layer's
    saved activations when a backward pass follows."""
    a = model.anatomy
    size = torch.finfo(model.dtype).bits // 8
    per_layer = seq_len * (6 * a.d_model + 3 * a.n_neurons) * size
    return per_layer * (a.n_layers + 1 if backward else 2)


def first_batch(model, rows: int, seq_len: int, cap: int = 64, backward: bool = False) -> int:
    """How many rows to run at once: at most `cap` and `rows`; on a GPU what its free memory holds, on the CPU at
    most `CPU_ROWS`."""
    device = torch.device(model.device)
    wanted = max(1, min(cap, rows))
    if device.type != "cuda":
        return min(wanted, CPU_ROWS) if device.type == "cpu" else wanted
    return max(1, min(wanted, int(usable_bytes(device) * USABLE) // row_bytes(model, seq_len, backward)))


def usable_bytes(device: torch.device) -> int:
    """The device memory this process can still allocate: the card's free memory plus what PyTorch's allocator
    holds unused, within the share `torch.cuda.set_per_process_memory_fraction` allows (a 24 GB card is emulated on
    a larger one that way: bench/bench_7b.py --card-gb 24)."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    usable = free + torch.cuda.memory_reserved(device) - allocated
    index = device.index if device.index is not None else torch.cuda.current_device()   # it takes no bare "cuda"
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda index: 1.0)(index)
    return min(usable, int(fraction * total) - allocated) if fraction < 1 else usable


def in_batches(run, items: list, method: str, batch: int) -> list:
    """`run(chunk)` over consecutive chunks of `items` of at most `batch` rows, in order: the list of its results.
    Out of device memory, the chunk is halved and retried; at one row, one clear error."""
    out, start = [], 0
    while start < len(items):
        chunk = items[start:start + batch]
        try:
            out.append(run(chunk))
        except torch.OutOfMemoryError:
            batch = _halved(batch, method)
            continue
        start += len(chunk)
    return out


def halving(run, method: str, batch: int):
    """`run(batch)` for a computation that batches internally (integrated gradients' steps): halved and retried
    out of device memory, one clear error at one row."""
    while True:
        try:
            return run(batch)
        except torch.OutOfMemoryError:
            batch = _halved(batch, method)


def _halved(batch: int, method: str) -> int:
    """The next batch size to try after running out of memory at `batch` (the failed batch's memory released)."""
    if batch == 1:
        raise LlavamechError(f"out of GPU memory in {method} at batch 1; use --dtype bfloat16, --device-map auto "
                             "or a GPU with more memory")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return batch // 2
