"""Run a chapter's code without the book's toolchain (no Jupyter, papermill or jupytext): for a bare GPU machine
that has torch and transformers and nothing else of the notebook stack.

    python -m llavamech.chapters book/ch3_visual_circuit.py -p device cuda -p n_examples 8

A chapter is a Jupytext percent script: cells start at `# %%` lines, markdown cells are skipped, and the cell tagged
`parameters` is followed, as papermill does, by the `-p NAME VALUE` overrides (a name the cell does not define is an
error). The code cells run in order as plain Python, in the chapter's folder, with figures drawn off screen; where
IPython is not installed, its display calls do nothing. Exits non-zero with the chapter's traceback if a cell fails.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import os
import re
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

from .errors import LlavamechError

CELL = re.compile(r"^# %%(?P<rest>.*)$")


@dataclass
class Cell:
    kind: str          # "code" or "markdown"
    tags: list[str]
    source: str
    line: int          # 1-based line of the cell's first source line in the chapter


def read_cells(path) -> list[Cell]:
    """The cells of a Jupytext percent script (the header before the first `# %%` is not a cell)."""
    cells, lines = [], Path(path).read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if CELL.match(line)]
    for n, start in enumerate(starts):
        rest = CELL.match(lines[start]).group("rest")
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        tags = re.search(r"tags=\[([^\]]*)\]", rest)
        cells.append(Cell("markdown" if "[markdown]" in rest else "code",
                          re.findall(r'"([^"]+)"', tags.group(1)) if tags else [],
                          "\n".join(lines[start + 1:end]), start + 2))
    return cells


def parse_value(text: str):
    """A `-p` value as papermill reads it: True, False, None, an int, a float, or else the string itself; and, as
    papermill's -y would give it, a list written in brackets ([1, 3, 5] or ["tool", "ig"])."""
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    if text.startswith("[") and text.endswith("]"):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise LlavamechError(f"{text!r} is not a list such as [1, 3, 5] or [\"tool\", \"ig\"]") from None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parameter_names(cell: Cell) -> set[str]:
    """The names the parameters cell assigns."""
    return {target.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def run_chapter(path, parameters: dict | None = None, log=sys.stderr) -> dict:
    """Execute the chapter's code cells with `parameters` overriding its parameters cell; returns its namespace."""
    path = Path(path).resolve()
    parameters = parameters or {}
    cells = [c for c in read_cells(path) if c.kind == "code"]
    given = [c for c in cells if "parameters" in c.tags]
    if parameters and not given:
        raise SystemExit(f"{path.name} has no cell tagged parameters to override")
    unknown = sorted(set(parameters) - (parameter_names(given[0]) if given else set()))
    if unknown:
        raise SystemExit(f"{path.name} has no parameter {', '.join(unknown)}; its parameters: "
                         f"{', '.join(sorted(parameter_names(given[0])))}")
    namespace = {"__name__": "__main__", "__file__": str(path)}
    with _off_screen(), _in_folder(path.parent):
        for i, cell in enumerate(cells, 1):
            t = time.perf_counter()
            # Blank lines in front, so that a traceback names the chapter's own line numbers.
            exec(compile("\n" * (cell.line - 1) + cell.source, str(path), "exec"), namespace)
            if "parameters" in cell.tags:
                namespace.update(parameters)
            _close_figures()
            print(f"{path.name}: cell {i}/{len(cells)} (line {cell.line}) {time.perf_counter() - t:.1f} s", file=log)
    return namespace


@contextlib.contextmanager
def _in_folder(folder: Path):
    """Run where papermill runs a chapter (the book's folder: chapters read paths relative to it)."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _off_screen():
    """Figures drawn without a display, and IPython's display calls harmless where IPython is missing."""
    import matplotlib
    matplotlib.use("Agg")
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        ipython = sys.modules["IPython"] = types.ModuleType("IPython")
        ipython.get_ipython = lambda: None   # matplotlib asks whether it runs inside IPython: it does not
        ipython.version_info = (9, 0)        # (and, for an IPython older than 8.24, sets up GUI event loops)
        ipython.display = sys.modules["IPython.display"] = _display_stub()
    yield


def _display_stub() -> types.ModuleType:
    """IPython.display as far as the chapters use it: objects that can be built and shown, to no effect."""
    stub = types.ModuleType("IPython.display")

    class Shown:
        def __init__(self, *args, **kwargs):
            self.args = args

    stub.display = lambda *objects, **kwargs: None
    stub.HTML = stub.Image = stub.Markdown = stub.Math = Shown
    return stub


def _close_figures() -> None:
    import matplotlib.pyplot as plt
    plt.close("all")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m llavamech.chapters", description=__doc__.splitlines()[0])
    p.add_argument("chapter", help="a chapter's Jupytext script, e.g. book/ch3_visual_circuit.py")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (as papermill's -p)")
    args = p.parse_args(argv)
    chapter = Path(args.chapter).expanduser()
    if not chapter.is_file() or chapter.suffix != ".py":
        sys.exit(f"{args.chapter}: no such chapter script; give one of book/*.py, e.g. book/ch3_visual_circuit.py")
    try:
        run_chapter(args.chapter, {name: parse_value(value) for name, value in args.parameter})
    except LlavamechError as error:   # bad input (a parameter, an image): its one line, as the CLI gives it
        sys.exit(f"{Path(args.chapter).name}: {error}")


if __name__ == "__main__":
    main()
