"""Executed chapters as reproducible artefacts: normalise them, compare two executions within a stated tolerance,
and settle a fresh execution onto the committed one.

    python -m llavamech.notebooks settle FRESH.ipynb TARGET.ipynb   # make execute: keep TARGET if FRESH agrees
    python -m llavamech.notebooks compare REFERENCE.ipynb FRESH.ipynb

Why a tolerance: the same chapter executed on two CPUs (other SIMD kernels, thread counts, bfloat16 in hardware
or emulated) gives floats that differ in their last digits. What must not change is everything else: the cells,
their sources and tags, the text and structure of every output, and every number up to that noise. Two numbers a, b
printed in an output agree when

    |a - b| <= ATOL + RTOL * max(|a|, |b|)  +  one unit in the last printed digit (when both are printed decimals)

- ATOL = 1e-6: float32 noise on quantities of order one (probabilities, scores, normalised maps) and on the
  identity errors themselves (all below 1e-6; the identities are proven to 1e-5).
- RTOL = 1e-4: float32 accumulation over a forward pass (about 1e-7 per operation, 1e-6 to 1e-5 at its end), and
  the statistics computed from it: a mean of reciprocal ranks moves by about 2e-5 when another CPU reorders two
  near-equal logits far down the vocabulary. Every interval the book prints is wider than 1e-2 of its mean.
- The last-digit unit: a value on a rounding boundary (0.12849999 vs 0.12850001) prints as 0.128 on one machine
  and 0.129 on another. Integers get no such allowance: a count of 29 against 30 is a change.
- An estimate printed with its 95 % interval, `m [lo, hi]` (or glued as NAME beside NAME_ci = "[lo, hi]"), may
  move by a tenth of that interval's width, ESTIMATE_SHARE: a statistic over n scenes that ranks near-equal scores
  (rank agreement with patch ablation, whose background effects are float32 noise) moves with the CPU's kernels,
  and by far less than its sampling error. Where a statistic depended on noise alone (ranking a map's flat
  background), the library makes it deterministic instead (`patch_eval.resolved`).
Cells tagged `volatile` (wall-clock times, figures of a CPU's own bfloat16 kernels) are compared by their source
only; stderr streams are ignored.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ATOL = 1e-6
RTOL = 1e-4
ESTIMATE_SHARE = 0.1
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w)")   # not inside names: 1_3, col0
ESTIMATE = re.compile(rf"({NUMBER.pattern}) \[({NUMBER.pattern}), ({NUMBER.pattern})\]")
IGNORED_MIMES = ("image/",)   # PNG bytes differ with the font cache and antialiasing; their presence is compared


def normalise(path) -> None:
    """Make an executed notebook depend only on its content: cell ids from their index, no execution timestamps
    or durations, no widget state when no widget is shown. Rebuilding an unchanged chapter then changes nothing."""
    nb = json.loads(Path(path).read_text())
    nb["metadata"].pop("papermill", None)
    shows_widgets = any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                        for c in nb["cells"] for o in c.get("outputs", []))
    if not shows_widgets:
        nb["metadata"].pop("widgets", None)
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
        for key in ("papermill", "execution"):
            cell["metadata"].pop(key, None)
    order = _widget_order(nb)
    if order:   # widget ids are random per run: list the models in that order, numbered instead of their ids
        widgets = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
        widgets["state"] = {model_id: widgets["state"][model_id] for model_id in order}
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    for i, model_id in enumerate(order):
        text = text.replace(model_id, f"{i:032x}")
    Path(path).write_text(text)


def _widget_order(nb) -> list[str]:
    """Widget model ids in an order that does not depend on the ids: depth first from the displayed views,
    following each model's references (IPY_MODEL_...) in the order its state lists them."""
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    roots = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb["cells"]
             for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    order, stack = [], list(reversed(roots))
    while stack:
        model_id = stack.pop()
        if model_id in order or model_id not in state:
            continue
        order.append(model_id)
        refs = re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state[model_id]["state"], sort_keys=True))
        stack.extend(reversed(refs))
    return order


def numbers_agree(a: str, b: str, interval: float = 0.0) -> bool:
    """Whether two printed numbers agree within the tolerance of the module docstring (`interval`: the width of
    the 95 % interval of the estimate they belong to, if any)."""
    x, y = float(a), float(b)
    if x == y:
        return True
    slack = ATOL + RTOL * max(abs(x), abs(y)) + ESTIMATE_SHARE * interval
    if _is_decimal(a) and _is_decimal(b):
        slack += min(_last_digit(a), _last_digit(b))
    return abs(x - y) <= slack


def _is_decimal(s: str) -> bool:
    return "." in s or "e" in s.lower()


def _last_digit(s: str) -> float:
    """One unit in the last printed digit of a decimal: 0.128 -> 0.001, 2.4e-07 -> 1e-08."""
    mantissa, _, exponent = s.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def text_differences(where: str, ref: str, new: str, interval: float = 0.0) -> list[str]:
    """Differences between two output texts: their words exactly, their numbers within the tolerance (each number
    of an `m [lo, hi]` estimate with a tenth of that interval's width; any other with `interval`'s)."""
    if NUMBER.sub("#", ref) != NUMBER.sub("#", new):
        return [f"{where}: the text differs:\n  committed: {_excerpt(ref, new)}\n  fresh:     {_excerpt(new, ref)}"]
    pairs = zip(NUMBER.findall(ref), NUMBER.findall(new), _intervals(ref, interval))
    return [f"{where}: {a} -> {b} (beyond the tolerance)" for a, b, width in pairs if not numbers_agree(a, b, width)]


def _intervals(text: str, default: float) -> list[float]:
    """For each number in `text`, the width of the interval of the estimate it belongs to (else `default`)."""
    widths = [default] * len(NUMBER.findall(text))
    for match in ESTIMATE.finditer(text):
        first = len(NUMBER.findall(text[:match.start()]))
        low, high = float(match.group(2)), float(match.group(3))
        widths[first:first + 3] = [abs(high - low)] * 3
    return widths


def _excerpt(text: str, other: str, width: int = 160) -> str:
    """The part of `text` around where it first departs from `other`."""
    start = next((i for i, (p, q) in enumerate(zip(text, other)) if p != q), min(len(text), len(other)))
    return repr(text[max(0, start - 40):start + width])


def differences(reference: dict, fresh: dict) -> list[str]:
    """Every difference between two executed notebooks (JSON dicts) that the tolerance does not absorb."""
    ref_cells, new_cells = reference["cells"], fresh["cells"]
    if [_shape(c) for c in ref_cells] != [_shape(c) for c in new_cells]:
        return ["the cells, their sources or their tags differ: the chapter changed (re-execute and commit it)"]
    found, widths = [], _glued_intervals(reference)
    for i, (ref, new) in enumerate(zip(ref_cells, new_cells)):
        if "volatile" in ref.get("metadata", {}).get("tags", []):
            continue
        ref_out, new_out = _outputs(ref), _outputs(new)
        if [k[0] for k in ref_out] != [k[0] for k in new_out]:
            found.append(f"cell {i}: other outputs: {[k[0] for k in ref_out]} -> {[k[0] for k in new_out]}")
            continue
        for (kind, a, name), (_, b, _) in zip(ref_out, new_out):
            found += text_differences(f"cell {i} {kind}", a, b, widths.get(name, 0.0))
    return found


def _glued_intervals(nb) -> dict[str, float]:
    """{glue name: the width of its 95 % interval}, for each value glued beside NAME_ci = "[lo, hi]"."""
    widths = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name", "")
            interval = re.fullmatch(rf"'\[({NUMBER.pattern}), ({NUMBER.pattern})\]'",
                                    _join(o.get("data", {}).get("application/papermill.record/text/plain", "")))
            if name.endswith("_ci") and interval:
                width = abs(float(interval.group(2)) - float(interval.group(1)))
                widths[name] = widths[name.removesuffix("_ci")] = width
    return widths


def _shape(cell) -> tuple:
    """What a cell is, apart from its outputs: its kind, its source, and its tags (they decide how the page shows it,
    so a kept notebook must carry the chapter's current ones)."""
    return cell["cell_type"], _source(cell), cell.get("metadata", {}).get("tags", [])


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _outputs(cell) -> list[tuple[str, str, str]]:
    """(kind, text, glue name) of each output that is compared: streams but stderr, every text-like MIME type
    (glued values included); images by their presence only."""
    found = []
    for o in cell.get("outputs", []):
        if o.get("name") == "stderr":
            continue
        name = o.get("metadata", {}).get("scrapbook", {}).get("name", "")
        if "text" in o:
            found.append((f"{o['output_type']} {o.get('name', '')}", _join(o["text"]), name))
        if o["output_type"] == "error":
            found.append(("error", f"{o.get('ename')}: {o.get('evalue')}", name))
        for mime, value in sorted(o.get("data", {}).items()):
            found.append((mime, "" if mime.startswith(IGNORED_MIMES) else _join(value), name))
    return found


def _join(value) -> str:
    if isinstance(value, list):
        return "".join(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def compare(reference_path, fresh_path) -> list[str]:
    return differences(json.loads(Path(reference_path).read_text()), json.loads(Path(fresh_path).read_text()))


def settle(fresh_path, target_path) -> bool:
    """Normalise the fresh execution; keep the target (the committed notebook) when the two agree within the
    tolerance, so that a rebuild on another machine leaves git clean; otherwise the fresh one replaces it.
    Returns whether the target was kept."""
    fresh_path, target_path = Path(fresh_path), Path(target_path)
    normalise(fresh_path)
    kept = target_path.is_file() and not compare(target_path, fresh_path)
    if kept:
        target_path.touch()   # up to date for make, unchanged for git
    else:
        shutil.copyfile(fresh_path, target_path)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "normalise":
        normalise(argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "settle":
        kept = settle(argv[1], argv[2])
        print(f"{argv[2]}: {'agrees with' if kept else 'replaced by'} the fresh execution"
              f"{' within the tolerance: kept' if kept else ''}")
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        found = compare(argv[1], argv[2])
        print("\n".join(found) if found else "agree within the tolerance")
        return 1 if found else 0
    print("usage: python -m llavamech.notebooks normalise NB | settle FRESH TARGET | compare REFERENCE FRESH")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
