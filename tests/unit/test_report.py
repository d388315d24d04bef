"""The book helpers: glued estimates and causal tests under predictable names, tables that render the same."""
import numpy as np
import pytest

from llavamech import interventions, load, report
from llavamech.examples import toy_examples
from llavamech.stats import Estimate


def test_glue_estimates_names_mean_and_interval(glued):
    report.glue_estimates({"circuit.colour_mrr.tqa": Estimate(0.5, 0.25, 0.75, 10)})
    assert glued == {"circuit_colour_mrr_tqa": 0.5, "circuit_colour_mrr_tqa_est": "0.5 [0.25, 0.75]"}


def test_glued_floats_keep_what_a_page_can_show(glued):
    report.glue("x", 2.6566260796785355)
    report.glue("y", np.float32(0.7733888))
    report.glue("n", 7)
    assert glued == {"x": 2.65663, "y": 0.773389, "n": 7} and type(glued["y"]) is float


def test_a_causal_test_is_glued_for_the_prose(monkeypatch):
    glued = {}
    monkeypatch.setattr(report, "glue", lambda name, value: glued.__setitem__(name, value))
    model = load("tiny-random-llava")
    a = model.anatomy
    ranked = [(l, h) for l in reversed(range(a.n_layers)) for h in range(a.n_heads)]   # every head, as chapters rank
    table = interventions.head_ablation_test(model, toy_examples(4, seed=6), "vqa", ranked, ks=(1, 2), draws=40, how="zero",
                                 control_examples=2)
    report.glue_causal_test(table, ranked)
    assert {"k1_dacc", "k2_dlogp", "k2_p_all", "k1_p_same_layer", "k2_sets_same_layer", "k2_holm_all"} <= glued.keys()
    holm = [glued[f"k{k}_holm_{tag}"] for k in (1, 2) for tag in ("all", "same_layer")]
    assert glued["causal_verdict"].startswith(("yes: k = ", "partly: k = ") if min(holm) < 0.05 else "not established")
    assert f"{min(holm):.2g} (against" in glued["causal_summary"] and "4 tests" in glued["causal_summary"]
    assert glued["k2_p_all"] == float(table.loc[2, "p (all heads)"]) and glued["n_heads_total"] == len(ranked)
    layer, head = map(int, glued["worst_single_head"].split("_"))   # k = 1 ran every other head alone
    assert glued["worst_single_imp_rank"] == ranked.index((layer, head)) + 1 > 1
    # the verdict: "yes" needs a test standing against the chosen heads' own layers; against any layer, "partly"
    all_rank, within_rank = table.loc[1, "rank among sets (all heads)"], table.loc[1, "rank among sets (same layers)"]
    even = Estimate(0.0, -0.1, 0.1, 2)   # paired differences that leave the other tail out of it
    for all_p, within_p, verdict in ((0.01, 0.2, f"partly: k = 1 against all heads (rank {all_rank}), not against "
                                                   "same layers (the layer matters)"),
                                     (0.01, 0.02, f"yes: k = 1 against all heads (rank {all_rank}); k = 1 against "
                                                  f"same layers (rank {within_rank})"),
                                     (0.2, 0.2, "not established: no test survives correction")):
        adjusted = table.assign(**{"p, Holm (all heads)": [all_p, 1.0], "p, Holm (same layers)": [within_p, 1.0],
                                   **{f"paired Δ log p ({c})": [even, even] for c in ("all heads", "same layers")}})
        report.glue_causal_test(adjusted, ranked)
        assert glued["causal_verdict"] == verdict
    # a k where the chosen heads cost significantly *less* than random ones turns "yes" into "partly", named
    cheaper = Estimate(0.05, 0.02, 0.08, 2)
    adjusted = adjusted.assign(**{"p, Holm (all heads)": [0.01, 1.0], "p, Holm (same layers)": [0.02, 1.0],
                                  "paired Δ log p (all heads)": [even, cheaper]})
    report.glue_causal_test(adjusted, ranked)
    assert glued["causal_verdict"] == (f"partly: k = 1 against all heads (rank {all_rank}); k = 1 against same layers "
                                       f"(rank {within_rank}); but k = 2 costs less than all heads ({cheaper})")
    assert glued["k2_direction_all"] == "costs less than they do" and glued["k1_direction_all"] == "not distinguished from them"
