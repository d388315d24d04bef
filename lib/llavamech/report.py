"""Helpers for the book's executed pages: `glue` a value for the prose (myst-nb where it is installed; elsewhere,
e.g. in Colab, the value is only kept), and tables that render the same every time. (Executed notebooks are
normalised and compared by `llavamech.notebooks`; progress bars live in `llavamech.progress`.)"""
from __future__ import annotations

try:
    from myst_nb import glue as _glue
except ImportError:  # Colab and plain Jupyter: nothing to render into
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
    """Glue each estimate's mean under its key's name and its 95 % interval as text under NAME_ci."""
    for key, est in estimates.items():
        glue(glue_name(key), float(est.mean))
        glue(glue_name(key) + "_ci", f"[{est.low:.3f}, {est.high:.3f}]")


def glue_paper(*keys: str) -> None:
    """Glue the paper's value of each key of data/reference/paper.csv as paper_NAME, so prose never types it."""
    from .reference import paper_numbers

    numbers = paper_numbers()
    for key in keys:
        glue("paper_" + glue_name(key), float(numbers.loc[key, "value"]))


def table(frame, name: str, number_format: str | None = None):
    """A DataFrame shown in full (no truncated cells) as HTML with a fixed table id, so that re-executing a page
    reproduces it byte for byte (pandas' Styler draws a random id each time). A frame may carry, in `attrs`, a
    `note` (a footnote under the table) and `index=False` (no index column)."""
    from IPython.display import HTML

    styler = frame.style.set_uuid(name)
    if number_format:
        styler = styler.format(number_format)
    if frame.attrs.get("index", True) is False:
        styler = styler.hide(axis="index")
    note = f'<p class="table-note">{frame.attrs["note"]}</p>' if frame.attrs.get("note") else ""
    return HTML(styler.to_html() + note)


def math(tex: str) -> str:
    """Inline TeX for a table cell or label: the HTML Sphinx writes for inline math, which the book's MathJax
    typesets inside executed outputs too."""
    return f'<span class="math notranslate nohighlight">\\({tex}\\)</span>'
