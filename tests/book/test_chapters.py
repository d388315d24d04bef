"""The executed chapters (run `make execute` first; `make test` does): no errors, their figures present, outputs
equal to the committed reference notebooks (ignoring PNG bytes, ids, metadata, timings, and cells tagged
`volatile`, whose float32 rounding noise depends on the CPU), and the built HTML shows the figures."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIN_FIGURES = {"appendix_identities": 3, "appendix_organism": 3}
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("*.py"))


def load(name):
    return json.loads((ROOT / "book" / f"{name}.ipynb").read_text())


def committed(name):
    proc = subprocess.run(["git", "show", f"HEAD:book/{name}.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"book/{name}.ipynb is not committed yet")
    return json.loads(proc.stdout)


def images(nb):
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def signature(nb):
    """What must not change: cell sources, and each output's kind and text with numbers to 3 significant digits."""
    def text(o):
        raw = o.get("text") or o.get("data", {}).get("text/plain", "")
        raw = "".join(raw) if isinstance(raw, list) else raw
        raw = re.sub(r"at 0x[0-9a-f]+", "at 0x", raw)
        return re.sub(r"-?\d+\.\d+(e-?\d+)?", lambda m: f"{float(m.group()):.3g}", raw)

    cells = []
    for c in nb["cells"]:
        volatile = "volatile" in c.get("metadata", {}).get("tags", [])
        outs = [(o["output_type"], sorted(o.get("data", {})), None if volatile else text(o))
                for o in c.get("outputs", []) if o.get("name") != "stderr"]
        cells.append((c["cell_type"], "".join(c["source"]), outs))
    return cells


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"book/{c}" in toc for c in CHAPTERS)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executed_without_errors_and_with_figures(name):
    nb = load(name)
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert images(nb) >= MIN_FIGURES[name]
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first_code["metadata"].get("tags", [])


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_outputs_match_the_committed_reference(name):
    assert signature(load(name)) == signature(committed(name))


@pytest.mark.parametrize("name", CHAPTERS)
def test_built_page_shows_the_figures(name):
    page = ROOT / "_build" / "html" / "book" / f"{name}.html"
    html = page.read_text()
    assert html.count("<img") >= MIN_FIGURES[name]
    assert "Traceback" not in html
