"""The executed-chapter regression's tolerance and settling (llavamech.notebooks)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llavamech import notebooks
from llavamech.notebooks import differences, numbers_agree, settle, text_differences

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("a, b", [
    ("2.6566260796785355", "2.656626070141792"),    # float32 noise in the 9th digit of a glued value
    ("1.2e-07", "2.4e-07"),                         # identity errors: both far below 1e-5
    ("0.128", "0.129"),                             # a value on a rounding boundary, printed to 3 digits
    ("0.0999", "0.1"),                              # ... across a power of ten
    ("-0.5", "-0.5"), ("12", "12"),
])
def test_noise_and_rounding_boundaries_agree(a, b):
    assert numbers_agree(a, b) and numbers_agree(b, a)


@pytest.mark.parametrize("a, b", [
    ("0.13", "0.128"),      # a statistic that moved in its 3rd digit
    ("0.967", "1"),         # 29 of 30 against 30 of 30
    ("29", "30"),           # counts get no last-digit allowance
    ("0.1", "-0.1"), ("1.0e-03", "2.0e-03"),
])
def test_real_changes_do_not_agree(a, b):
    assert not numbers_agree(a, b)


def test_text_is_compared_exactly_and_numbers_within_the_tolerance():
    assert text_differences("x", "head 1_3: 0.5000001 [0.4, 0.6]", "head 1_3: 0.5000002 [0.4, 0.6]") == []
    assert text_differences("x", "head 1_3: 0.5", "head 1_4: 0.5")                     # names are text
    assert text_differences("x", "the flip: 9.02e-05", "the flip: nan")                 # nan is not a number
    assert text_differences("x", "<td>0.13 is 0.106</td>", "<td>0.128 is 0.105</td>")


def notebook(value: str, tags=(), source="glue('x', v)") -> dict:
    cell = {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)}, "outputs": [
        {"output_type": "display_data", "data": {"application/papermill.record/text/plain": value,
                                                 "image/png": value}, "metadata": {}},
        {"output_type": "stream", "name": "stderr", "text": value}]}
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_glued_values_are_compared_and_images_stderr_and_volatile_cells_are_not():
    assert differences(notebook("0.7733888333479021"), notebook("0.7733888233735585")) == []
    assert differences(notebook("0.13"), notebook("0.128"))
    assert differences(notebook("11.27", tags=["volatile"]), notebook("12.05", tags=["volatile"])) == []
    assert differences(notebook("1"), notebook("1", source="glue('y', v)"))   # a changed source is a change
    assert differences(notebook("1"), notebook("1", tags=["hide-input"]))   # so are changed tags: the page shows them


def test_settle_keeps_the_committed_notebook_only_when_the_execution_agrees(tmp_path):
    target, fresh = tmp_path / "ch.ipynb", tmp_path / "fresh.ipynb"
    target.write_text(json.dumps(notebook("0.50000001")))
    fresh.write_text(json.dumps(notebook("0.50000002")))
    before = target.read_text()
    assert settle(fresh, target) and target.read_text() == before
    fresh.write_text(json.dumps(notebook("0.51")))
    assert not settle(fresh, target) and json.loads(target.read_text())["cells"][0]["outputs"][0]["data"][
        "application/papermill.record/text/plain"] == "0.51"


def test_every_committed_chapter_agrees_with_itself_and_not_with_a_nudged_copy():
    """On a real notebook: identical copies agree; one estimate of its table, nudged by 0.02 (more than a tenth of
    its interval), is caught."""
    path = ROOT / "book" / "ch5_patch_tool.ipynb"
    nb = json.loads(path.read_text())
    assert differences(nb, nb) == []
    text = path.read_text()
    cell = next(c for c in nb["cells"] for o in c.get("outputs", []) if "text/html" in o.get("data", {})
                and "T_methods" in "".join(o["data"]["text/html"]))
    html = "".join(next(o for o in cell["outputs"] if "text/html" in o.get("data", {}))["data"]["text/html"])
    number = notebooks.NUMBER.findall(html.split("<tbody>")[1])[2]
    nudged = json.loads(text.replace(number, f"{float(number) + 0.02:.3g}", 1))
    assert differences(nb, nudged)


def test_the_other_machine_stand_in_changes_the_kernels():
    """`make test` executes the chapters with ATen's AVX2 kernels: check that the setting takes effect."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    capability = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()
    assert capability in ("AVX2", "DEFAULT")   # DEFAULT on a CPU without AVX2


def test_an_estimate_may_move_by_a_tenth_of_its_interval():
    assert text_differences("x", "<td>0.13 [0.106, 0.154]</td>", "<td>0.128 [0.105, 0.152]</td>") == []
    assert text_differences("x", "<td>0.13 [0.106, 0.154]</td>", "<td>0.12 [0.096, 0.144]</td>")
    assert text_differences("x", "0.13 and 0.5 [0.4, 0.6]", "0.128 and 0.5 [0.4, 0.6]")   # 0.13 has no interval


def glued(values: dict) -> dict:
    outputs = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": k}},
                "data": {"application/papermill.record/text/plain": v}} for k, v in values.items()]
    return {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs}], "metadata": {}}


def test_a_glued_mean_moves_within_a_tenth_of_its_glued_interval():
    ref = glued({"agreement": "0.13", "agreement_ci": "'[0.106, 0.154]'"})
    assert differences(ref, glued({"agreement": "0.128", "agreement_ci": "'[0.105, 0.152]'"})) == []
    assert differences(ref, glued({"agreement": "0.115", "agreement_ci": "'[0.106, 0.154]'"}))
