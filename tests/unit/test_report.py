"""The book helpers: glued estimates and paper numbers under predictable names."""
import pytest

from llavamech import report
from llavamech.reference import paper_numbers
from llavamech.stats import Estimate


@pytest.fixture
def glued(monkeypatch):
    store = {}
    monkeypatch.setattr(report, "_glue", lambda name, value, display=False: store.__setitem__(name, value))
    return store


def test_glue_estimates_names_mean_and_interval(glued):
    report.glue_estimates({"circuit.colour_mrr.tqa": Estimate(0.5, 0.25, 0.75, 10)})
    assert glued == {"circuit_colour_mrr_tqa": 0.5, "circuit_colour_mrr_tqa_ci": "[0.250, 0.750]"}


def test_glue_paper_reads_the_reference_table(glued):
    report.glue_paper("circuit.animal_mrr.tqa")
    assert glued == {"paper_circuit_animal_mrr_tqa": float(paper_numbers().loc["circuit.animal_mrr.tqa", "value"])}


def test_glue_paper_rejects_an_unknown_key(glued):
    with pytest.raises(KeyError):
        report.glue_paper("no.such.key")


def test_glued_floats_keep_what_a_page_can_show(glued):
    import numpy as np
    report.glue("x", 2.6566260796785355)
    report.glue("y", np.float32(0.7733888))
    report.glue("n", 7)
    assert glued == {"x": 2.65663, "y": 0.773389, "n": 7} and type(glued["y"]) is float
