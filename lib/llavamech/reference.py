"""The paper's reported numbers (data/reference/paper.csv) laid beside ours: paper | here (n, 95 % CI) | agrees?

"Agrees" tests the paper's claim, not its number: the organism has 38 words and 32 heads where Llava has 32,064
and 1,024, so absolute values (an MRR, above all) are not comparable, while the claimed ordering is.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .paths import REFERENCE_DIR
from .report import glue, glue_name
from .stats import Estimate, holm, sign_flip_p

PAPER_CSV = REFERENCE_DIR / "paper.csv"
SHORT = {"revised paper": "revised submission (secondary)", "code": "authors' code"}
TAG = {"revised paper": "rev.", "code": "code"}   # the scorecard's tags, spelled out in the introduction's key
NOTE = ("Paper: the number's source in brackets. \"Revised submission (secondary)\": known only from one published "
        "review quoting a revised submission, not from the paper's text; see <a href=\"intro.html#provenance\">where "
        "the paper's numbers come from</a>. Here: mean with its 95 % bootstrap interval over n examples.")


@lru_cache(maxsize=None)
def paper_numbers() -> pd.DataFrame:
    """Every reported number, indexed by key (see data/reference/README.md for the columns)."""
    return pd.read_csv(PAPER_CSV, dtype=str, keep_default_na=False).set_index("key")


def agreement(estimate: Estimate, relation: str, baseline: Estimate | float) -> str:
    """Whether our estimate stands in the paper's relation (">" or "<") to its baseline: "yes" when the 95 %
    intervals are apart, "direction only" when only the means are ordered so, "no" otherwise."""
    sign = 1 if relation == ">" else -1
    base_mean = baseline.mean if isinstance(baseline, Estimate) else baseline
    base_low, base_high = (baseline.low, baseline.high) if isinstance(baseline, Estimate) else (baseline, baseline)
    if sign * (estimate.mean - base_mean) <= 0:
        return "no"
    apart = estimate.low > base_high if sign > 0 else estimate.high < base_low
    return "yes" if apart else "direction only"


def directional_p(differences: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Paired differences ({key: [n] per example}) tested in the direction the paper reports for each key (its
    relation, against zero): one-sided sign-flip p-values over the examples, Holm-adjusted together as one family."""
    relation = paper_numbers()["relation"]
    raw = [sign_flip_p((1 if relation[key] == ">" else -1) * d[np.isfinite(d)], seed=seed)
           for key, d in differences.items()]
    return dict(zip(differences, map(float, holm(raw))))


def compare(estimates: dict[str, Estimate], keys: list[str] | None = None,
            chance: dict[str, float] | None = None, setting: str | None = None) -> pd.DataFrame:
    """One row per paper key in `keys` (default: every key with an estimate): the claim, the measure, the paper's
    number with its provenance, ours with n and the 95 % interval, chance where given, and whether the claim holds
    here. `setting` says how ours was measured where the paper's measure names its own (e.g. "top 2 of 64 patches"
    beside the paper's top-20 of 576). Each row's verdict, estimate (with and without n), and the paper's number
    with its short provenance tag are also glued (holds_KEY, here_KEY, here_short_KEY, paper_cell_KEY) for the
    introduction's scorecard."""
    table = paper_numbers()
    keys = keys if keys is not None else [k for k in table.index if k in estimates]
    unknown = [k for k in keys if k not in table.index]
    if unknown:
        raise KeyError(f"{unknown[0]} is not in {PAPER_CSV.name}")
    rows = []
    for key in keys:
        ref = table.loc[key]
        ours = estimates.get(key)
        row = {"claim": ref["claim"], "measure": ref["measure"],
               "paper": f"{float(ref['value']):.4g} [{SHORT.get(ref['provenance'], ref['provenance'])}]",
               "here (95 % CI)": (f"{ours} (n={ours.n}" + (f"; {setting}" if setting else "") + ")"
                                  if ours is not None else "not measured")}
        if chance is not None:
            row["chance here"] = f"{chance[key]:.3g}" if key in chance else ""
        verdict = ""
        if ours is not None and ref["relation"]:
            baseline = 0.0 if ref["versus"] == "0" else estimates.get(ref["versus"])
            verdict = agreement(ours, ref["relation"], baseline) if baseline is not None else "no baseline"
        row["holds here?"] = verdict
        # where reading the paper took a choice of ours (its note after the provenance), the table says so
        row["our reading of the paper"] = ref["note"].partition("; ")[2] if isinstance(ref["note"], str) else ""
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index(keys, name="key"))
    frame.attrs.update(note=NOTE, index=False)   # shown by report.table: a footnote, and no internal key column
    for key, row in frame.iterrows():   # for the introduction's scorecard, which cites every chapter's verdicts
        ref = table.loc[key]
        glue(f"holds_{glue_name(key)}", row["holds here?"] or "—")
        glue(f"here_{glue_name(key)}", row["here (95 % CI)"])
        glue(f"here_short_{glue_name(key)}", str(estimates.get(key, "not measured")))
        glue(f"paper_cell_{glue_name(key)}", f"{float(ref['value']):.4g} ({TAG.get(ref['provenance'], ref['provenance'])})")
    return frame


def glue_paper(*keys: str) -> None:
    """Glue the paper's value of each key of data/reference/paper.csv as paper_NAME, so prose never types it."""
    numbers = paper_numbers()
    for key in keys:
        glue("paper_" + glue_name(key), float(numbers.loc[key, "value"]))
