"""The chapter runner of the bare GPU machine (llavamech.chapters): a chapter's code cells run as plain Python with
papermill-style parameters, without Jupyter and, here, without IPython."""
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from llavamech import chapters
from llavamech.errors import LlavamechError

ROOT = Path(__file__).resolve().parents[2]
BLOCK_IPYTHON = """
import sys
class Block:   # as on a machine where IPython is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "IPython":
            raise ImportError(name)
sys.meta_path.insert(0, Block())
from llavamech.chapters import main
main(sys.argv[1:])
"""


def test_cells_and_parameters_are_read_as_jupytext_and_papermill_do(tmp_path):
    chapter = tmp_path / "ch.py"
    chapter.write_text('# ---\n# jupyter: {}\n# ---\n\n# %% [markdown]\n# # Title\n\n'
                       '# %% tags=["parameters"]\nn = 2\nname = "a"\n\n# %%\nresult = n * name\nboom = 1 / (n - 3)\n')
    cells = chapters.read_cells(chapter)
    assert [(c.kind, c.tags, c.line) for c in cells] == [("markdown", [], 6), ("code", ["parameters"], 9),
                                                         ("code", [], 13)]
    assert chapters.parameter_names(cells[1]) == {"n", "name"}
    assert [chapters.parse_value(v) for v in ("8", "0.5", "None", "True", "cuda")] == [8, 0.5, None, True, "cuda"]
    assert chapters.parse_value("[1, 100]") == [1, 100] and chapters.parse_value('["tool"]') == ["tool"]
    with pytest.raises(LlavamechError, match="is not a list such as"):
        chapters.parse_value("[tool, ig]")
    assert chapters.run_chapter(chapter, {"n": 4, "name": "b"})["result"] == "bbbb"
    with pytest.raises(ZeroDivisionError) as failed:   # the traceback names the chapter's own line
        chapters.run_chapter(chapter, {"n": 3})
    assert (str(chapter), 14) in [(f.filename, f.lineno) for f in traceback.extract_tb(failed.tb)]
    with pytest.raises(SystemExit, match="has no parameter devise; its parameters: n, name"):
        chapters.run_chapter(chapter, {"devise": "cuda"})


def test_a_chapter_runs_without_jupyter_or_ipython():
    done = subprocess.run([sys.executable, "-c", BLOCK_IPYTHON, "book/appendix_identities.py", "-p", "device", "cpu",
                           "-p", "seed", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "appendix_identities.py: cell 7/7" in done.stderr


@pytest.mark.parametrize("name", ["nope.py", "book"])
def test_a_chapter_that_is_not_there_is_one_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book").mkdir()
    with pytest.raises(SystemExit) as stop:
        chapters.main([name])
    assert "no such chapter script" in str(stop.value.code) and "\n" not in str(stop.value.code)


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("*.py")))
def test_the_gpu_tier_shrinks_every_size_of_every_chapter(chapter):
    """The GPU tier runs each chapter small (tests/gpu/test_cuda.py's CHAPTER_PARAMETERS): a size it left at the
    chapter's default (hundreds of scenes) cost minutes a chapter under the emulated GPU. A whole-number parameter of
    20 or more is a size, except the prompt length appendix C reads its memory table at (no work)."""
    import ast
    cell = next(c for c in chapters.read_cells(ROOT / "book" / chapter) if "parameters" in c.tags)
    defaults = {t.id: n.value.value for n in ast.parse(cell.source).body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(n.value, ast.Constant)}
    sizes = {name for name, value in defaults.items()
             if isinstance(value, int) and not isinstance(value, bool) and value >= 20} - {"seq_len"}
    tier = ast.parse((ROOT / "tests" / "gpu" / "test_cuda.py").read_text())
    shrunk = next(ast.literal_eval(n.value) for n in tier.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "CHAPTER_PARAMETERS" for t in n.targets))
    assert sizes <= shrunk.keys(), f"{chapter}: add {sorted(sizes - shrunk.keys())} to CHAPTER_PARAMETERS"
