"""The executed chapters (run `make execute` first; `make test` does): no errors, their figures present, outputs
equal to the committed reference notebooks within the tolerance of `llavamech.notebooks` (whose docstring says why
it is what it is), and the built HTML shows the figures.

`make execute` leaves each fresh execution in _build/executed/NAME.ipynb (under `make test`, executed as another
machine would: one thread, AVX2 kernels) and keeps book/NAME.ipynb as committed when the two agree; the regression
below compares the fresh execution itself with the committed notebook (git HEAD)."""
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from llavamech import notebooks

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = ROOT / "_build" / "executed"
MIN_FIGURES = {"appendix_identities": 3, "appendix_organism": 3, "ch1_visual_embeddings": 3,
               "ch2_text_circuit": 4, "ch3_visual_circuit": 4, "ch4_head_transfer": 2, "ch5_patch_tool": 3, "ch6_beyond_colour": 5, "appendix_families": 1,
               "appendix_real_llava": 0}
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("*.py"))


def load(name):
    return nbformat.reads((ROOT / "book" / f"{name}.ipynb").read_text(), as_version=4)


def fresh(name) -> dict:
    path = EXECUTED / f"{name}.ipynb"
    if not path.is_file():
        pytest.skip(f"{path} not found: run `make execute` first")
    return json.loads(path.read_text())


def committed(name) -> dict:
    proc = subprocess.run(["git", "show", f"HEAD:book/{name}.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"book/{name}.ipynb is not committed yet")
    return json.loads(proc.stdout)


def images(nb):
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"book/{c}" in toc for c in CHAPTERS)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executed_without_errors_and_with_figures(name):
    for nb in (fresh(name), json.loads((ROOT / "book" / f"{name}.ipynb").read_text())):
        assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert images(nb) >= MIN_FIGURES[name]
        first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert "parameters" in first_code["metadata"].get("tags", [])


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_outputs_match_the_committed_reference(name):
    found = notebooks.differences(committed(name), fresh(name))
    assert not found, f"{name}: the fresh execution differs from the committed notebook:\n" + "\n".join(found[:20])


@pytest.mark.parametrize("name", CHAPTERS)
def test_executed_chapter_is_normalised(name):
    """Stable ids and no timestamps, so rebuilding an unchanged checkout leaves git status clean."""
    nb = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
    assert "papermill" not in nb["metadata"]
    assert [c["id"] for c in nb["cells"]] == [f"cell-{i}" for i in range(len(nb["cells"]))]
    assert not any("execution" in c["metadata"] for c in nb["cells"])


@pytest.mark.parametrize("name", CHAPTERS)
def test_built_page_shows_the_figures_and_every_glued_number(name):
    html = (ROOT / "_build" / "html" / "book" / f"{name}.html").read_text()
    assert html.count("<img") >= MIN_FIGURES[name]
    assert "Traceback" not in html
    source = (ROOT / "book" / f"{name}.py").read_text()
    if "{glue:" in source:
        assert "glue:text" not in html and "could not find" not in html.lower()


def test_no_paper_number_is_typed_into_the_prose():
    """Paper numbers reach the prose only through glue from data/reference/paper.csv (typed copies drift)."""
    import csv
    values = {row["value"] for row in csv.DictReader((ROOT / "data" / "reference" / "paper.csv").open())}
    decimals = {v for v in values if re.fullmatch(r"\d*\.\d+", v)}
    for name in CHAPTERS:
        prose = "\n".join(c.source for c in load(name).cells if c.cell_type == "markdown")
        typed = decimals & set(re.findall(r"\d*\.\d+", prose))
        assert not typed, f"{name}: paper numbers typed into the prose: {sorted(typed)}"


def test_widgets_render_from_the_vendored_javascript():
    """The explorer's page loads the widget manager from the book itself, not a CDN, and holds the saved state."""
    html = (ROOT / "_build" / "html" / "book" / "ch5_patch_tool.html").read_text()
    assert "_static/widgets/embed-amd.js" in html and "_static/widgets/require.js" in html
    assert "cdn.jsdelivr" not in html and "cdnjs.cloudflare" not in html
    assert "application/vnd.jupyter.widget-state+json" in html
    assert (ROOT / "_build" / "html" / "_static" / "widgets" / "embed-amd.js").stat().st_size > 1e6


def test_formulas_render_from_the_vendored_mathjax():
    """A page with formulas loads MathJax from the book itself (the README sends readers to the local HTML)."""
    html = (ROOT / "_build" / "html" / "book" / "ch1_visual_embeddings.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in html and "cdn.jsdelivr" not in html and "mathjax@3" not in html
    static = ROOT / "_build" / "html" / "_static" / "mathjax"
    assert (static / "tex-chtml.js").stat().st_size > 1e6
    assert len(list((static / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))) > 20


def test_colab_buttons_and_install_cells_agree_with_the_config():
    """The repository lives in one place, _config.yml: every chapter's Colab button opens the committed executed
    notebook there, and every chapter's (hidden) first cell installs the library from it when run in Colab."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url, branch = config["repository"]["url"], config["repository"]["branch"]
    repo = url.removeprefix("https://github.com/")
    tracked = subprocess.run(["git", "ls-files", "book"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for name in CHAPTERS:
        nb = load(name)
        install = [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])][0]
        assert f'"llavamech @ git+{url}@{branch}"' in install.source and '"google.colab" in sys.modules' in install.source
        assert nb.cells.index(install) <= 2, f"{name}: the install cell must run before any import of llavamech"
        html = (ROOT / "_build" / "html" / "book" / f"{name}.html").read_text()
        button = f"https://colab.research.google.com/github/{repo}/blob/{branch}/book/{name}.ipynb"
        assert button in html, f"{name}: no Colab button to {button}"
        assert f"book/{name}.ipynb" in tracked


def test_the_publishing_workflow_is_a_valid_github_actions_workflow():
    """.github/workflows/book.yml (tests, then GitHub Pages), checked against the GitHub Actions schema offline."""
    import shutil

    workflow = ROOT / ".github" / "workflows" / "book.yml"
    checker = shutil.which("check-jsonschema", path=str(Path(__import__("sys").executable).parent))
    proc = subprocess.run([checker, "--builtin-schema", "vendor.github-workflows", str(workflow)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = workflow.read_text()
    assert "make test" in text and "_build/html" in text and "actions/deploy-pages" in text
