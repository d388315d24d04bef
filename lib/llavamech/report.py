"""Helpers for the book's executed pages: `glue` a value for the prose (myst-nb where it is installed; elsewhere,
e.g. in Colab, the value is only kept), the measures a chapter glues together (`glue_causal_test`), and tables
that render the same every time. (Executed notebooks are
normalised and compared by `llavamech.notebooks`; progress bars live in `llavamech.progress`.)"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import circuits
from .interventions import CONTROL_NAMES

try:
    from IPython.core.formatters import format_display_data  # noqa: F401  (myst-nb's glue formats through it)
    from myst_nb import glue as _glue
except ImportError:  # Colab and plain Jupyter, or a chapter run as a script without IPython: nothing to render into
    _glue = None

GLUE_DIGITS = 6   # significant digits kept of a glued float: more than any page shows, fewer than float32 noise


def glue(name: str, value, display: bool = False) -> None:
    """Make `value` available to the page's prose as {glue:text}`name` (numbers: format it in the role). Floats are
    kept to GLUE_DIGITS significant digits, so that the executed notebook holds what the page can show and not the
    last digits of float32 rounding, which differ from one CPU to another."""
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0
                                    and value.dtype.kind == "f"):
        value = float(f"{float(value):.{GLUE_DIGITS}g}")
    if _glue is not None:
        _glue(name, value, display=display)


def glue_name(key: str) -> str:
    """The glue name of a dotted measure key: `circuit.colour_mrr.tqa` -> `circuit_colour_mrr_tqa`."""
    return key.replace(".", "_")


def glue_estimates(estimates: dict) -> None:
    """Glue each estimate's mean under its key's name (for comparisons in prose) and the estimate as the book
    prints every one, mean and 95 % interval to 3 significant digits, as text under NAME_est."""
    for key, est in estimates.items():
        glue(glue_name(key), float(est.mean))
        glue(glue_name(key) + "_est", str(est))


def glue_evidence(measures: dict, mode: str, seed: int = 0) -> None:
    """Glue the measures at the evidence positions (`circuits.measure`'s `evidence ...`, mean over heads with its
    interval over the examples that have them) for a chapter's prose: evidence_colour_mrr_MODE,
    evidence_attention_same_MODE, evidence_attention_different_MODE, evidence_ov_MODE (as text) and
    evidence_uniform_MODE (a number)."""
    names = {"colour_mrr": "MRR value output colour", "attention_same": "attention same",
             "attention_different": "attention different", "ov": "OV logit difference"}
    for name, key in {**names, "uniform": "uniform attention"}.items():
        key = f"evidence {key}"
        glue(f"evidence_{name}_{mode}", float(circuits.head_mean(measures, key).mean()) if name == "uniform"
             else str(circuits.estimate(measures, key, seed)))


def glue_causal_test(causal: pd.DataFrame, ranked: list[tuple[int, int]]) -> None:
    """Glue a head-ablation test (`head_ablation_test`) for a chapter's prose. Per k: the heads (kK_heads), the
    top-k effect (kK_dacc, kK_dlogp, kK_dlogp_mean) and, per control, its paired difference from the random sets, their p-value and
    Holm-adjusted p-value over the table, the top-k's rank among the sets, the random sets' mean Δ log p and
    Δ accuracy and how many sets ran, and the paired difference in words (kK_paired_all, kK_p_all, kK_holm_all,
    kK_rank_same_layer, kK_random_dlogp_same_layer, kK_sets_all, kK_direction_all, ...). Where k = 1 ran every single head, the most harmful
    one and its rank by Imp among `ranked` (worst_single_head, worst_single_dlogp, worst_single_imp_rank). For the
    scorecard: which tests stand after Holm's correction, each with its rank among the sets (causal_verdict: "yes"
    only when one stands against heads of the chosen heads' own layers; "partly" when only against heads of any layer, which shows the layer matters,
    or when at some k the chosen heads cost significantly *less* than random ones, which it then names) and the one
    closest to standing (causal_summary)."""
    by_k = {int(k): row for k, row in causal.iterrows()}
    for k, row in by_k.items():
        glue(f"k{k}_heads", row["heads"])
        glue(f"k{k}_dacc", str(row["top-k Δ accuracy"]))
        glue(f"k{k}_dlogp", str(row["top-k Δ log p"]))
        glue(f"k{k}_dlogp_mean", float(row["top-k Δ log p"].mean))
        for control, name in CONTROL_NAMES.items():
            tag = control.replace("-", "_")
            glue(f"k{k}_p_{tag}", float(row[f"p ({name})"]))
            glue(f"k{k}_holm_{tag}", float(row[f"p, Holm ({name})"]))
            glue(f"k{k}_random_dlogp_{tag}", float(row[f"_null {control}"].mean()))
            glue(f"k{k}_random_dacc_{tag}", row[f"random Δ accuracy ({name})"])
            glue(f"k{k}_sets_{tag}", row[f"_control {control}"].sets)
            glue(f"k{k}_paired_{tag}", str(row[f"paired Δ log p ({name})"]))
            glue(f"k{k}_rank_{tag}", row[f"rank among sets ({name})"])
            glue(f"k{k}_direction_{tag}", _direction(row[f"paired Δ log p ({name})"]))
    glue("n_heads_total", len(ranked))
    holm = {(k, name): float(row[f"p, Holm ({name})"]) for k, row in by_k.items() for name in CONTROL_NAMES.values()}
    # each standing test with its rank among the random sets: the paired test is against their average, and a
    # reader should see whether the chosen heads also cost more than most of the sets themselves
    standing = [f"k = {k} against {name} (rank {by_k[k][f'rank among sets ({name})']})"
                for (k, name), p in holm.items() if p < 0.05]
    # the other tail: where the chosen heads cost *less* than the random sets (the paired interval above zero), the
    # claim fails at that k, and the scorecard must say so beside the tests that stand
    opposite = [f"k = {k} costs less than {name} ({by_k[k][f'paired Δ log p ({name})']})"
                for k, row in by_k.items() for name in CONTROL_NAMES.values()
                if row[f"paired Δ log p ({name})"].low > 0]
    within = CONTROL_NAMES["same-layer"]
    # the smallest adjusted p; on a tie, the same-layer test, the one the verdict rests on
    (k_min, name_min), p_min = min(holm.items(), key=lambda item: (item[1], item[0][1] != within))
    if any(name == within for (_, name), p in holm.items() if p < 0.05):
        verdict = "yes: " + "; ".join(standing)
    elif standing:   # beyond heads of any layer only: that says the layer matters, not these heads within it
        verdict = f"partly: {'; '.join(standing)}, not against {within} (the layer matters)"
    else:
        verdict = "not established: no test survives correction"
    if opposite:
        verdict = verdict.replace("yes: ", "partly: ", 1) + "; but " + "; ".join(opposite)
    glue("causal_verdict", verdict)
    glue("causal_summary", f"top {k_min}: Δ log p {by_k[k_min]['top-k Δ log p']}; smallest Holm-adjusted p "
                           f"{p_min:.2g} (against {name_min}, {len(holm)} tests)")
    if 1 in by_k:   # every single head, ablated alone: the all-heads control at k = 1 ran them all
        single = by_k[1]["_control all"]
        worst = int(np.argmin(single.null_logp))
        (layer, head), = single.sets_run[worst]
        glue("worst_single_head", f"{layer}_{head}")
        glue("worst_single_dlogp", float(single.null_logp[worst]))
        glue("worst_single_imp_rank", ranked.index((layer, head)) + 1)


def _direction(paired) -> str:
    """A paired difference (chosen heads' Δ log p less the random sets', 95 % interval) in words."""
    if not np.isfinite([paired.low, paired.high]).all():
        return "not tested (no random set)"
    return ("costs more than they do" if paired.high < 0 else "costs less than they do" if paired.low > 0
            else "not distinguished from them")


def table(frame, name: str, number_format: str | None = None):
    """A DataFrame shown in full (no truncated cells) as HTML with a fixed table id, so that re-executing a page
    reproduces it byte for byte (pandas' Styler draws a random id each time). A frame may carry, in `attrs`, a
    `note` (a footnote under the table) and `index=False` (no index column)."""
    from IPython.display import HTML   # Jupyter's: not on a bare GPU machine, which runs chapters as scripts

    styler = frame.style.set_uuid(name)
    if number_format:
        styler = styler.format(number_format, na_rep="—")   # a cell a row does not have
    if frame.attrs.get("index", True) is False:
        styler = styler.hide(axis="index")
    note = f'<p class="table-note">{frame.attrs["note"]}</p>' if frame.attrs.get("note") else ""
    return HTML(styler.to_html() + note)


def math(tex: str) -> str:
    """Inline TeX for a table cell or label: the HTML Sphinx writes for inline math, which the book's MathJax
    typesets inside executed outputs too."""
    return f'<span class="math notranslate nohighlight">\\({tex}\\)</span>'
