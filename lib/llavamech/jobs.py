"""`llavamech run EXAMPLES.jsonl --model NAME --out DIR`: explain every item of an example set, one JSON row per item.

Built to be killed and restarted, and to be spread over processes:
- each process appends its rows to `DIR/part-RANK.jsonl`, one whole line per write, flushed, so a killed run loses at
  most the item it was on; a restart skips every index already written (whatever the number of processes was);
- under `accelerate launch --multi_gpu --num_processes N` (or torchrun), process r takes items r, r+N, r+2N, ...;
  when all are done the first process merges the parts into `DIR/results.jsonl`, ordered by item. (On a machine
  without GPUs the same command starts N CPU processes; accelerate's `--cpu` flag alone starts only one.)
- `DIR/run.json` records what produced the rows (model, method, dtype, examples); a different run into the same
  folder is refused unless `force`, which starts it over.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LlavamechError
from .examples import Example, read_jsonl
from .report import progress

RESULTS, SETTINGS = "results.jsonl", "run.json"


@dataclass
class Processes:
    """This process's place among the processes of a run (one, unless started by `accelerate launch`)."""
    rank: int = 0
    count: int = 1
    state: object = None

    @classmethod
    def current(cls, device: str = "cpu") -> "Processes":
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch
        from accelerate import PartialState   # started by accelerate launch or torchrun: join the process group
        state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())   # gloo on CPU, nccl on GPUs
        return cls(state.process_index, state.num_processes, state)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def row(model, index: int, example: Example, method: str = "tool", heads: int = 3, top: int = 10):
    """One item's result row (the explanation's contract fields, plus correctness and pointing where the truth is
    known) and the explanation itself."""
    from .imaging import box_mask

    x = model.explain(example.image, question=example.question, method=method, heads=heads)
    contract = x.to_dict()
    out = {"index": index, "source": example.source, "image": str(example.image), "animal": example.animal,
           **{k: v for k, v in contract.items() if k not in ("seconds", "model", "question")},
           "top_heads": contract["top_heads"][:top], "seconds": round(x.seconds["total"], 4)}
    out["colour"] = example.colour
    out["correct"] = None if example.colour is None else x.answer.lower() == example.colour.lower()
    if example.box is not None:
        mask = box_mask(example.box, x.image.size, x.image_processor, tuple(x.grid_shape))
        out["pointing"] = bool(mask.ravel()[int(np.argmax(np.asarray(x.patch_grid).ravel()))])
    return out, x


def read_rows(path: Path, repair: bool = False) -> list[dict]:
    """The rows of a part or results file. A last line cut short by a kill is left out (its item runs again) and,
    with `repair`, cut from the file so that appending starts on a fresh line; a bad line before the end is an
    error naming it, and nothing is changed."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]   # text after the last newline: a write the kill interrupted
    rows = []
    for number, line in enumerate(complete, 1):
        try:
            rows.append(json.loads(line))
            rows[-1]["index"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise LlavamechError(f"{path}:{number} is not a result row; move the file away or rerun with --force "
                                 "to start over") from None
    if tail and repair:
        with open(path, "r+") as f:
            f.truncate(len(text) - len(tail))
    return rows


def settings(model_name: str, examples: Path, method: str, heads: int, dtype: str) -> dict:
    return {"model": model_name, "examples": str(examples.resolve()), "method": method, "heads": heads,
            "dtype": dtype}


def check_out(out: Path, wanted: dict, force: bool) -> None:
    """Refuse a folder that holds another run's rows, unless `force`."""
    if out.exists() and not out.is_dir():
        raise LlavamechError(f"--out {out} is a file; give a folder for the run's rows")
    saved = out / SETTINGS
    if force or not saved.exists():
        return
    try:
        before = json.loads(saved.read_text())
    except json.JSONDecodeError:
        raise LlavamechError(f"{saved} is not readable JSON; use --force to start the run over") from None
    differ = [f"{k} {before.get(k)!r} -> {wanted[k]!r}" for k in wanted if before.get(k) != wanted[k]]
    if differ:
        raise LlavamechError(f"{out} holds the results of a different run ({'; '.join(differ)}); use another --out, "
                             "or --force to replace them")


def start(out: Path, wanted: dict, force: bool) -> None:
    """First process only: make the folder, clear it under `force`, record the settings."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LlavamechError(f"cannot create --out {out}: {e.strerror}") from None
    if force:
        for stale in [*out.glob("part-*.jsonl"), out / RESULTS]:
            stale.unlink(missing_ok=True)
    (out / SETTINGS).write_text(json.dumps(wanted, indent=2) + "\n")


def merge(out: Path) -> list[dict]:
    """Every part's rows, one per item, ordered by item, written to results.jsonl (atomically)."""
    rows = {r["index"]: r for part in sorted(out.glob("part-*.jsonl")) for r in read_rows(part)}
    ordered = [rows[i] for i in sorted(rows)]
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in ordered))
    os.replace(tmp, out / RESULTS)
    return ordered


def run(examples, model_name: str, out, device: str = "cpu", dtype: str = "float32", method: str = "tool",
        heads: int = 3, maps: bool = False, force: bool = False, device_map: str | None = None,
        limit: int | None = None) -> dict:
    """Explain every item of `examples` (a JSONL example file) into `out`; returns a summary of the whole run."""
    from .models import load
    from .patches import check_method

    examples, out = Path(examples), Path(out)
    procs = Processes.current(device)
    check_method(method)
    wanted = settings(model_name, examples, method, heads, dtype)
    check_out(out, wanted, force)
    if not examples.is_file():
        raise LlavamechError(f"example file not found: {examples}")
    if procs.count > 1 and device in ("auto", "cuda"):
        device = str(procs.state.device)
    model = load(model_name, device=device, dtype=dtype, device_map=device_map)
    check_method(method, model, heads)
    if not model.is_multimodal:
        raise LlavamechError(f"{model_name} is a text-only model; `run` explains images, so give a Llava model")
    items = read_jsonl(examples, vocabulary=model.knows)[:limit]
    if procs.rank == 0:   # while no process writes: settings, and the lines a kill cut short cut from every part
        start(out, wanted, force)
        for part in out.glob("part-*.jsonl"):
            read_rows(part, repair=True)
    procs.wait()
    done = {r["index"] for p in out.glob("part-*.jsonl") for r in read_rows(p)}
    procs.wait()          # every process has read what is done before any appends
    part = out / f"part-{procs.rank}.jsonl"
    mine = [i for i in range(len(items)) if i % procs.count == procs.rank and i not in done]
    if maps:
        (out / "maps").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with open(part, "a") as f:
        for i in progress(mine, f"{model.name} run (process {procs.rank + 1} of {procs.count})"):
            r, x = row(model, i, items[i], method, heads)
            if maps:
                x.save_map(out / "maps" / f"{i:05d}.png", title=f"#{i} {x.question} -> {x.answer} ({x.answer_prob:.2f})")
            f.write(json.dumps(r) + "\n")
            f.flush()
    seconds = time.perf_counter() - t0
    procs.wait()
    summary = {"items": len(items), "ran here": len(mine), "seconds": seconds,
               "items per second": len(mine) / seconds if mine and seconds > 0 else None}
    if procs.rank == 0:
        rows = merge(out)
        known = [r["correct"] for r in rows if r.get("correct") is not None]
        pointing = [r["pointing"] for r in rows if "pointing" in r]
        summary.update(written=len(rows), accuracy=float(np.mean(known)) if known else None,
                       pointing=float(np.mean(pointing)) if pointing else None)
    return summary

