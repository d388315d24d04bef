import pytest

from llavamech import reference
from llavamech.reference import agreement, compare, paper_numbers
from llavamech.stats import Estimate


def test_the_reference_table_is_well_formed():
    table = paper_numbers()
    assert table.index.is_unique
    assert set(table["provenance"]) <= {"code", "revised paper", "ours"}
    for key, row in table.iterrows():
        float(row["value"])
        assert row["relation"] in ("", ">", "<") and (row["relation"] == "") == (row["versus"] == "")


def test_agreement_tests_the_claimed_ordering():
    high, low = Estimate(0.8, 0.7, 0.9, 50), Estimate(0.2, 0.1, 0.3, 50)
    near = Estimate(0.65, 0.5, 0.75, 50)
    assert agreement(high, ">", low) == "yes"
    assert agreement(high, ">", near) == "direction only"
    assert agreement(low, ">", high) == "no"
    assert agreement(low, "<", high) == "yes"
    assert agreement(Estimate(0.1, -0.05, 0.2, 9), ">", 0.0) == "direction only"


def test_compare_lays_paper_beside_ours():
    ours = {"qk.attention_same.tqa": Estimate(0.9, 0.85, 0.95, 100),
            "qk.attention_different.tqa": Estimate(0.05, 0.03, 0.07, 100),
            "ov.logit_difference.tqa": Estimate(-0.1, -0.3, 0.1, 100)}
    table = compare(ours, chance={"qk.attention_same.tqa": 0.03})
    assert list(table.index) == list(ours)
    assert table.loc["qk.attention_same.tqa", "holds here?"] == "yes"
    assert table.loc["ov.logit_difference.tqa", "holds here?"] == "no"
    assert "0.768" in table.loc["qk.attention_same.tqa", "paper"] and "n=100" in table.iloc[0]["here (95 % CI)"]
    assert table.loc["qk.attention_same.tqa", "chance here"] == "0.03"
    assert compare({}, keys=["vis.colour_mrr.important"]).iloc[0]["here (95 % CI)"] == "not measured"
    with pytest.raises(KeyError):
        compare(ours, keys=["no.such.key"])


def test_compare_says_how_ours_was_measured_where_the_paper_names_its_setting():
    ours = {"vis.colour_mrr.important": Estimate(0.5, 0.4, 0.6, 80)}
    table = compare(ours, setting="top 2 of 64 patches")
    assert "top-20" in table.loc["vis.colour_mrr.important", "measure"]
    assert table.loc["vis.colour_mrr.important", "here (95 % CI)"].endswith("(n=80; top 2 of 64 patches)")


def test_glue_paper_reads_the_reference_table(glued):
    reference.glue_paper("circuit.animal_mrr.tqa")
    assert glued == {"paper_circuit_animal_mrr_tqa": float(paper_numbers().loc["circuit.animal_mrr.tqa", "value"])}


def test_glue_paper_rejects_an_unknown_key(glued):
    with pytest.raises(KeyError):
        reference.glue_paper("no.such.key")


def test_compare_glues_each_rows_cells_for_the_scorecard(glued):
    compare({"ov.logit_difference.tqa": Estimate(1.5, 1.2, 1.8, 40)})
    assert glued == {"holds_ov_logit_difference_tqa": "yes",
                     "here_ov_logit_difference_tqa": "1.5 [1.2, 1.8] (n=40)",
                     "here_short_ov_logit_difference_tqa": "1.5 [1.2, 1.8]",
                     "paper_cell_ov_logit_difference_tqa": "2.56 (rev.)"}
