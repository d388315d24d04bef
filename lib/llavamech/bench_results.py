"""What a GPU machine wrote, read back for the book's appendix C: bench/bench_7b.py's table, bench/profile_explain.py's
phases and the GPU tier's JUnit file (tests/gpu/run.sh). The runs shipped in data/gpu/ are read this way, so the
appendix's numbers are the printed ones, not retyped."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pandas as pd

SECTION = re.compile(r"^(?P<dtype>bfloat16|float32): sequence length (?P<seq_len>\d+)")
ROW = re.compile(r"^  (?P<label>\S.*?)\s+(?P<ms>[\d.]+)\s+(?P<sdpa>[\d.]+)\s+(?P<explain>[\d.]+)"
                 r"\s+(?P<peak>[\d.]+|nan)$")
RATIO = re.compile(r"explain / SDPA forward from the image: (?P<image>[\d.]+)x .*?on ready inputs: (?P<ready>[\d.]+)x")
ITEMS = re.compile(r"explain, (?P<n>\d+) scenes in a row: (?P<rate>[\d.]+) items/s")
PHASE = re.compile(r"^  (?P<label>\S.*?)\s+(?P<ms>[\d.]+) ms$")


def read_bench(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """bench_7b.py's output: one row per (dtype, what was timed) with ms, its ratio to a plain SDPA forward and the
    peak GPU memory in GB; and per dtype the sequence length, explain's ratios to the SDPA forward from the image and
    on ready inputs, explain's items/s and whether memory was capped at a smaller card's."""
    rows, summary, dtype = [], {}, None
    for line in Path(path).read_text().splitlines():
        if m := SECTION.match(line):
            dtype = m["dtype"]
            summary[dtype] = {"sequence length": int(m["seq_len"]), "capped at (GB)": None}
        elif dtype is None:
            continue
        elif m := ROW.match(line):
            rows.append({"dtype": dtype, "what": m["label"], "ms": float(m["ms"]), "x SDPA forward": float(m["sdpa"]),
                         "peak GB": float(m["peak"])})
        elif m := RATIO.search(line):
            summary[dtype].update({"explain / SDPA forward from the image": float(m["image"]),
                                   "explain / SDPA forward on ready inputs": float(m["ready"])})
        elif m := ITEMS.search(line):
            summary[dtype]["explain items/s"] = float(m["rate"])
        elif m := re.search(r"memory capped at ([\d.]+) GB", line):
            summary[dtype]["capped at (GB)"] = float(m[1])
    if not rows:
        raise ValueError(f"{path} holds no table of bench/bench_7b.py")
    return pd.DataFrame(rows).set_index(["dtype", "what"]), pd.DataFrame(summary).T


def read_phases(path) -> pd.Series:
    """profile_explain.py's phases (its first dtype): milliseconds by phase."""
    phases = {}
    for line in Path(path).read_text().splitlines():
        if phases and not line.startswith("  "):
            break
        if m := PHASE.match(line):
            phases[m["label"]] = float(m["ms"])
    if not phases:
        raise ValueError(f"{path} holds no phases of bench/profile_explain.py")
    return pd.Series(phases, name="ms")


def _outcome(case) -> str:
    """passed, failed or skipped; stopped for a case recorded without a name (pytest-xdist's, for a case a time
    limit stopped before it reported)."""
    if case.get("name") is None:
        return "stopped"
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def read_tier(path) -> pd.DataFrame:
    """The GPU tier's JUnit file: per test function, how many of its cases passed, failed, were skipped or were
    stopped before they reported (`_outcome`)."""
    counts: dict[str, dict[str, int]] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = (case.get("name") or "(no name: stopped before reporting)").split("[")[0]
        counts.setdefault(name, dict.fromkeys(("passed", "failed", "skipped", "stopped"), 0))[_outcome(case)] += 1
    return pd.DataFrame(counts).T.sort_index()


def tier_cases(path, test: str) -> dict[str, str]:
    """The outcome of each parametrised case of one test function: {case id: passed | failed | skipped}."""
    return {case.get("name")[len(test) + 1:-1]: _outcome(case)
            for case in ElementTree.parse(path).getroot().iter("testcase")
            if (case.get("name") or "").startswith(test + "[")}


def tier_when(path) -> str:
    """The date the tier ran (its JUnit timestamp), YYYY-MM-DD."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return suite.get("timestamp", "")[:10]
