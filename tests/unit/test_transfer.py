"""Head transfer: overlap against its chance level, rank correlation, per-head weight change, and a transplant
that moves exactly one head's weights and restores them."""
import copy

import numpy as np
import pytest
import torch

from llavamech import transfer as T
from tests.conftest import tiny


def test_overlap_of_identical_and_of_disjoint_rankings():
    a = np.arange(32.0).reshape(4, 8)
    table = T.overlap_table(a, a, [3, 5])
    assert list(table["overlap"]) == [3, 5]
    assert table.loc[3, "expected by chance"] == pytest.approx(9 / 32)
    assert table.loc[5, "P(overlap ≥ observed | chance)"] < 1e-3
    disjoint = T.overlap_table(a, -a, [3])
    assert disjoint.loc[3, "overlap"] == 0 and disjoint.loc[3, "P(overlap ≥ observed | chance)"] == 1.0


def test_chance_overlap_matches_a_simulation():
    rng = np.random.default_rng(0)
    sims = [T.overlap_table(rng.random((4, 8)), rng.random((4, 8)), [5]).loc[5, "overlap"] for _ in range(2000)]
    assert np.mean(sims) == pytest.approx(25 / 32, abs=0.05)


def test_rank_correlation_with_itself_is_one():
    x = np.random.default_rng(1).random((30, 4, 8))
    est = T.rank_correlation(x, x, n_boot=200)
    assert est.mean == pytest.approx(1.0) and est.low == pytest.approx(1.0)
    assert abs(T.rank_correlation(x, np.random.default_rng(2).random((30, 4, 8)), n_boot=200).mean) < 0.5


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_transplant_moves_one_head_and_restores_it(kv_heads):
    base = tiny("llama", kv_heads=kv_heads)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.hf.parameters():
            p.add_(0.01 * torch.randn_like(p))
    change = T.weight_change(tuned, base)
    assert (change[["q", "k", "v", "o", "all"]] > 0).all().all()
    assert (T.weight_change(base, base)[["q", "k", "v", "o", "all"]] == 0).all().all()
    before = {n: p.clone() for n, p in tuned.hf.named_parameters()}
    with T.transplanted(tuned, base, [(1, 3)]):
        assert T.weight_change(tuned, base).loc["1_3", "all"] == 0
        assert T.weight_change(tuned, base).loc["1_2", "q"] > 0
        moved = [n for n, p in tuned.hf.named_parameters() if not torch.equal(p, before[n])]
        assert sorted(moved) == sorted(f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkvo")
    assert all(torch.equal(p, before[n]) for n, p in tuned.hf.named_parameters())


def tuned_from(base):
    """A copy of `base` whose language model has moved a little, as visual tuning moves Vicuna's."""
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.hf.model.language_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tuned


def test_transplant_test_and_where_heads_look_on_a_tiny_llava():
    from llavamech.examples import toy_examples
    base = tiny("llava")
    tuned = tuned_from(base)
    items = toy_examples(4, seed=2)
    table = T.transplant_test(tuned, base, items, [(0, 1)], draws=3)
    assert table.loc[0, "heads given back"] == "0_1" and table.loc[0, "n"] == 4
    with T.transplanted(tuned, base, [(0, 1)]):
        pass
    looks = T.where_heads_look(tuned, items, [(0, 1), (1, 0)])
    assert list(looks.index) == ["0_1", "1_0", "uniform attention"]
    for row in looks.itertuples(index=False):
        assert sum(e.mean for e in row) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("family,kv_heads", [("llama", None), ("llama", 2), ("qwen2", 2)])
def test_batched_transplants_equal_one_transplant_at_a_time(family, kv_heads):
    """transplanted_rows (hooks, one head set per batch row) gives what transplanted (the weights moved) gives."""
    from llavamech import interventions as I
    from llavamech.examples import toy_examples
    base = tiny("llava", kv_heads=kv_heads, family=family)
    tuned = tuned_from(base)
    items = toy_examples(3, seed=4)
    sets = [[], [(0, 1)], [(1, 0), (0, 2)], [(1, 2), (1, 3)]]
    encoded = I.encode(tuned, items, "vqa")
    batched = I.set_scores(tuned, encoded, sets, lambda m, rows: T.transplanted_rows(m, base, rows), batch=5)
    for s, chosen in enumerate(sets):
        with T.transplanted(tuned, base, chosen):
            alone = I.answer_scores(tuned, items, "vqa")
        np.testing.assert_allclose(batched["log p"][s], alone["log p"], atol=1e-4)
    assert not np.allclose(batched["log p"][2], batched["log p"][0], atol=1e-4)


def test_transplant_test_reports_both_controls_with_p_values():
    from llavamech.examples import toy_examples
    base = tiny("llava")
    tuned = tuned_from(base)
    table = T.transplant_test(tuned, base, toy_examples(4, seed=2), [(0, 1), (0, 2)], draws=5, control_examples=3)
    row = table.iloc[0]
    assert row["n"] == 4 and row["n (control)"] == 3
    assert 1 / 6 <= row["p (all heads)"] <= 1 and len(row["_null all"]) == 5
    # same layers: the other 2-sets of layer 0's heads, all of them when there are no more than the draws asked
    n_heads = tuned.anatomy.n_heads
    assert len(row["_null same-layer"]) == min(5, n_heads * (n_heads - 1) // 2 - 1)


def test_overlap_within_the_layers_the_top_sets_occupy():
    a = np.zeros((4, 8))
    a[1] = np.arange(8.0) + 1   # every top head in layer 1
    b = a.copy()
    b[1] = b[1][::-1]           # same layer, opposite order: the two top 3 share no head
    table = T.overlap_table(a, b, [3])
    row = table.loc[3]
    assert row["overlap"] == 0 and row["heads in their layers"] == 8
    assert row["expected (their layers)"] == pytest.approx(9 / 8)
    same = T.overlap_table(a, a, [3]).loc[3]
    assert same["P(overlap ≥ observed | their layers)"] == pytest.approx(1 / 56)   # 1 / C(8, 3)
    assert same["P(overlap ≥ observed | chance)"] < same["P(overlap ≥ observed | their layers)"]
