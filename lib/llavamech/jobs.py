"""`llavamech run EXAMPLES.jsonl --model NAME --out DIR`: explain every item of an example set, one JSON row per item.

Built to be killed and restarted, and to be spread over processes:
- each process appends its rows to `DIR/part-RANK.jsonl`, one whole line per write, flushed, so a killed run loses at
  most the item it was on; a restart skips every index already written (whatever the number of processes was);
- under `accelerate launch --multi_gpu --num_processes N` (or torchrun), process r takes items r, r+N, r+2N, ...;
  when all are done the first process merges the rows of this run's items into `DIR/results.jsonl`, ordered by item.
  (On a machine without GPUs the same command starts N CPU processes; accelerate's `--cpu` flag alone starts only one.)
- `DIR/run.json` records what the rows were computed from: model, method, heads, dtype, the example file, and a
  content hash of every item (its fields and its image file's bytes). A run with other settings is refused unless
  `force`, which starts it over; a changed item (the file regenerated, a line edited, an image replaced) is computed
  again on resume, its old row dropped: recomputing what changed gives what a clean run gives, and keeps the rest.
- `DIR/run.lock` is locked (flock) by the run's first process for the run's life: a second run into the folder,
  `force` or not, is refused in one line and touches nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LlavamechError
from .examples import Example, example_file, read_jsonl
from .imaging import box_mask
from .models import load
from .patch_eval import pointing
from .patches import check_method
from .progress import progress

try:
    import fcntl
except ImportError:   # Windows: no flock, so no lock (runs there are single-user anyway)
    fcntl = None

RESULTS, SETTINGS, LOCK = "results.jsonl", "run.json", "run.lock"
# What torchrun (and so accelerate launch) sets beside WORLD_SIZE; without them joining a process group fails or hangs.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Processes:
    """This process's place among the processes of a run (one, unless started by `accelerate launch`)."""
    rank: int = 0
    count: int = 1
    state: object = None

    @classmethod
    def current(cls, device: str = "cpu") -> "Processes":
        world = os.environ.get("WORLD_SIZE", "1")
        if not world.strip().lstrip("-").isdigit():
            raise LlavamechError(f"WORLD_SIZE={world!r} is not a number of processes; unset it, or start the run with "
                                 "accelerate launch")
        if int(world) <= 1:
            return cls()
        missing = [v for v in LAUNCHER_VARIABLES if v not in os.environ]
        if missing:   # checked before joining: a stray WORLD_SIZE would otherwise wait forever for its peers
            raise LlavamechError(f"WORLD_SIZE={world} is set but {', '.join(missing)} not: start the processes with "
                                 "`accelerate launch` (or torchrun), or unset WORLD_SIZE for one process")
        from accelerate import PartialState   # started by accelerate launch or torchrun: join the process group
        state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())   # gloo on CPU, nccl on GPUs
        return cls(state.process_index, state.num_processes, state)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def decide(self, action):
        """Run `action` in the first process alone and return its value there (None elsewhere); its refusal is
        raised in every process, since a refusal in one alone would leave the others waiting for it forever."""
        answer = [None]
        if self.rank == 0:
            try:
                value = action()
            except LlavamechError as e:
                answer = [str(e)]
        if self.state is not None:
            from accelerate.utils import broadcast_object_list
            broadcast_object_list(answer, from_process=0)
        if answer[0] is not None:
            raise LlavamechError(answer[0])
        return value if self.rank == 0 else None


def row(model, index: int, example: Example, method: str = "tool", heads: int = 3, top: int = 10):
    """One item's result row (the explanation's contract fields, plus correctness and pointing where the truth is
    known) and the explanation itself."""
    x = model.explain(example.image, question=example.question, method=method,
                      heads=heads if method == "top-k" else None)
    contract = x.to_dict()
    out = {"index": index, "source": example.source, "image": str(example.image), "animal": example.animal,
           **{k: v for k, v in contract.items() if k not in ("seconds", "model", "question")},
           "top_heads": contract["top_heads"][:top], "seconds": round(x.seconds["total"], 4)}
    out["colour"] = example.colour
    if example.asked is not None:
        out["question"], out["expected"] = example.question, example.expected
    out["correct"] = None if example.expected is None else x.answer.lower() == example.expected.lower()
    if example.box is not None:
        mask = box_mask(example.box, x.image.size, x.image_processor, tuple(x.grid_shape))
        out["pointing"] = pointing(x.patch_grid, mask) if mask.any() else None   # a box the model does not see
    return out, x


def read_rows(path: Path) -> list[dict]:
    """The rows of a part or results file. A last line cut short by a kill is left out (its item runs again); a bad
    line before the end is an error naming it and a way out that keeps the other rows."""
    return [r for r, _ in _rows_and_lines(path)[0]]


def _rows_and_lines(path: Path) -> tuple[list[tuple[dict, str]], bool]:
    """[(row, its line)] and whether the file ends in a line cut short."""
    if not path.exists():
        return [], False
    lines = path.read_text().split("\n")
    complete, tail = lines[:-1], lines[-1]   # text after the last newline: a write a kill interrupted
    out = []
    for number, line in enumerate(complete, 1):
        try:
            out.append((json.loads(line), line))
            out[-1][0]["index"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise LlavamechError(f"{path}:{number} is not a result row; delete that line (`sed -i {number}d {path}`: "
                                 f"its item is computed again, the {len(complete) - 1} other rows are kept) and rerun") \
                from None
    return out, bool(tail)


def item_hash(example: Example) -> str:
    """What an item's row is computed from: its fields (its source line included) and its image file's bytes."""
    fields = [example.source, str(example.image), example.animal, example.colour, example.box, example.facts,
              *([example.asked, example.answer] if example.asked is not None or example.answer is not None else [])]
    digest = hashlib.sha256(json.dumps(fields, default=list).encode())
    with open(example.image, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings(model_name: str, examples: Path, method: str, heads: int, dtype: str) -> dict:
    return {"model": model_name, "examples": str(examples.resolve()), "method": method, "heads": heads,
            "dtype": dtype}


def check_out(out: Path, wanted: dict, force: bool) -> None:
    """Before anything is loaded: refuse a folder another run is writing into, or one holding another run's rows
    (unless `force`). Checked again under the lock; here it only spares loading a model to be refused."""
    if out.exists() and not out.is_dir():
        raise LlavamechError(f"--out {out} is a file; give a folder for the run's rows")
    if out.is_dir():
        lock(out).close()
        check_settings(out, wanted, force)


def check_settings(out: Path, wanted: dict, force: bool) -> None:
    saved = out / SETTINGS
    if force or not saved.exists():
        return
    before = _recorded(out)
    differ = [f"{k} {before.get(k)!r} -> {wanted[k]!r}" for k in wanted if before.get(k) != wanted[k]]
    if differ:
        raise LlavamechError(f"{out} holds the results of a different run ({'; '.join(differ)}); use another --out, "
                             "or --force to replace them")


def _recorded(out: Path) -> dict:
    try:
        return json.loads((out / SETTINGS).read_text()) if (out / SETTINGS).exists() else {}
    except json.JSONDecodeError:
        raise LlavamechError(f"{out / SETTINGS} is not readable JSON; use --force to start the run over") from None


def lock(out: Path):
    """The run folder's lock, held until the returned file is closed or the process ends (a kill releases it)."""
    try:
        handle = open(out / LOCK, "a+")
    except OSError as e:
        raise LlavamechError(f"cannot write in --out {out}: {e.strerror}") from None
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise LlavamechError(f"another run (process {holder}) is writing into {out}; wait for it to end, or give "
                             "another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def writing(path: Path):
    """A write that fails (a full disk, a folder made read-only) is one line naming the file; every row already
    written is whole or is cut on restart, so the same command resumes."""
    try:
        yield
    except OSError as e:
        raise LlavamechError(f"cannot write {path}: {e.strerror or e}; the rows written so far are kept: free space "
                             "(or fix the folder) and rerun the same command to resume") from None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_text(text)
        os.replace(tmp, path)


def start(out: Path, wanted: dict, hashes: list[str], force: bool):
    """First process only, before any process reads or appends: lock the folder, check it again under the lock,
    clear it under `force`, drop the rows of items that changed and the lines a kill cut short, record what this
    run computes from. Returns (the held lock, how many rows were dropped as changed)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LlavamechError(f"cannot create --out {out}: {e.strerror}") from None
    held = lock(out)
    check_settings(out, wanted, force)
    if force:
        for stale in [*out.glob("part-*.jsonl"), out / RESULTS]:
            stale.unlink(missing_ok=True)
    before = [] if force else _recorded(out).get("items", [])
    changed = {i for i in range(max(len(before), len(hashes)))
               if i >= len(before) or i >= len(hashes) or before[i] != hashes[i]}
    dropped = 0
    for part in out.glob("part-*.jsonl"):
        rows, cut_short = _rows_and_lines(part)
        keep = [line for r, line in rows if r["index"] not in changed]
        dropped += len(rows) - len(keep)
        if len(keep) < len(rows) or cut_short:   # rewritten whole, so that appending starts on a fresh line
            _write_atomically(part, "".join(line + "\n" for line in keep))
    _write_atomically(out / SETTINGS, json.dumps({**wanted, "items": hashes}, indent=2) + "\n")
    return held, dropped


def merge(out: Path, n_items: int) -> list[dict]:
    """The rows of this run's items (the first `n_items`; parts may hold more, from a run without --limit), one per
    item, ordered by item, written to results.jsonl (atomically)."""
    rows = {r["index"]: r for part in sorted(out.glob("part-*.jsonl")) for r in read_rows(part) if r["index"] < n_items}
    ordered = [rows[i] for i in sorted(rows)]
    _write_atomically(out / RESULTS, "".join(json.dumps(r) + "\n" for r in ordered))
    return ordered


def run(examples, model_name: str, out, device: str = "cpu", dtype: str = "float32", method: str = "tool",
        heads: int = 3, maps: bool = False, force: bool = False, device_map: str | None = None,
        limit: int | None = None) -> dict:
    """Explain every item of `examples` (a JSONL example file) into `out`; returns a summary of the whole run."""
    examples, out = Path(examples), Path(out)
    procs = Processes.current(device)
    check_method(method)
    wanted = settings(model_name, examples, method, heads, dtype)
    procs.decide(lambda: check_out(out, wanted, force))
    example_file(examples)
    if procs.count > 1 and device in ("auto", "cuda"):
        device = str(procs.state.device)
    model = load(model_name, device=device, dtype=dtype, device_map=device_map)
    check_method(method, model, heads)
    if not model.is_multimodal:
        raise LlavamechError(f"{model_name} is a text-only model; `run` explains images, so give a Llava model")
    every = read_jsonl(examples, vocabulary=model.knows)
    items = every[:limit]
    for item in items:   # a question the model cannot be asked stops the run before anything is computed
        try:
            model.check_question(item.question)
        except LlavamechError as e:
            raise LlavamechError(f"{item.source}: {e}") from None
    started = procs.decide(lambda: start(out, wanted, [item_hash(x) for x in every], force))
    try:
        return _compute(model, items, out, procs, method, heads, maps, dropped=started[1] if started else 0)
    finally:
        if started:
            started[0].close()   # the lock, also when the run fails inside a Python session that keeps the traceback


def _compute(model, items: list[Example], out: Path, procs: Processes, method: str, heads: int, maps: bool,
             dropped: int) -> dict:
    """This process's share of the items not yet done, appended to its part; the first process then merges."""
    done = {r["index"] for p in out.glob("part-*.jsonl") for r in read_rows(p)}
    procs.wait()          # every process has read what is done before any appends
    part = out / f"part-{procs.rank}.jsonl"
    mine = [i for i in range(len(items)) if i % procs.count == procs.rank and i not in done]
    if maps:
        with writing(out / "maps"):
            (out / "maps").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with writing(part), open(part, "a") as f:
        for i in progress(mine, f"{model.name} run (process {procs.rank + 1} of {procs.count})"):
            try:
                r, x = row(model, i, items[i], method, heads)
            except LlavamechError as e:
                raise LlavamechError(f"{items[i].source}: {e} (the rows before it are kept)") from None
            if maps:
                with writing(out / "maps" / f"{i:05d}.png"):
                    x.save_map(out / "maps" / f"{i:05d}.png",
                               title=f"#{i} {x.question} -> {x.answer} ({x.answer_prob:.2f})")
            f.write(json.dumps(r) + "\n")
            f.flush()
    seconds = time.perf_counter() - t0
    procs.wait()
    summary = {"items": len(items), "ran here": len(mine), "seconds": seconds,
               "items per second": len(mine) / seconds if mine and seconds > 0 else None}
    if procs.rank == 0:
        rows = merge(out, len(items))
        known = [r["correct"] for r in rows if r.get("correct") is not None]
        pointing = [r["pointing"] for r in rows if r.get("pointing") is not None]
        summary.update(written=len(rows), accuracy=float(np.mean(known)) if known else None,
                       pointing=float(np.mean(pointing)) if pointing else None)
        if dropped:
            summary["rows dropped as changed"] = dropped
    return summary
