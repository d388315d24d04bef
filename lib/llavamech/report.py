"""Helpers for the book's executed pages: `glue` a value for the prose (myst-nb where it is installed; elsewhere,
e.g. in Colab, the value is only kept), tables that render the same every time, progress bars that the build can turn off, and the normalisation of
executed notebooks."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

try:
    from myst_nb import glue as _glue
except ImportError:  # Colab and plain Jupyter: nothing to render into
    _glue = None


def glue(name: str, value, display: bool = False) -> None:
    """Make `value` available to the page's prose as {glue:text}`name` (numbers: format it in the role)."""
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
    reproduces it byte for byte (pandas' Styler draws a random id each time)."""
    from IPython.display import HTML

    styler = frame.style.set_uuid(name)
    if number_format:
        styler = styler.format(number_format)
    return HTML(styler.to_html())


def progress(iterable, desc: str):
    """A progress bar for long loops; TQDM_DISABLE=1 turns it off (the book's build does, so that executed pages
    hold no bars: tqdm's notebook bars ignore that variable on their own)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, disable=os.environ.get("TQDM_DISABLE", "") not in ("", "0"))


def normalise_notebook(path) -> None:
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


if __name__ == "__main__":  # python -m llavamech.report NOTEBOOK.ipynb ...
    for notebook in sys.argv[1:]:
        normalise_notebook(notebook)
