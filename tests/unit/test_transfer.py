"""Head transfer: overlap against its chance level, rank correlation, per-head weight change, and a transplant
that moves exactly one head's weights and restores them."""
import copy

import numpy as np
import pandas as pd
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


def test_correlation_with_itself_is_one():
    x = np.random.default_rng(1).random((30, 4, 8))
    est = T.correlation(x, x, n_boot=200)
    assert est.mean == pytest.approx(1.0) and est.low == pytest.approx(1.0)
    assert abs(T.correlation(x, np.random.default_rng(2).random((30, 4, 8)), n_boot=200).mean) < 0.5


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
    assert table.loc[0, "heads"] == "0_1" and table.loc[0, "n"] == 4
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
    assert 0 < row["p (all heads)"] <= 1 and len(row["_null all"]) == 5
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


def test_gain_test_finds_the_head_that_gains_and_adjusts_over_every_head():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(40, 2, 4))
    after = before + rng.normal(scale=0.1, size=before.shape)
    after[:, 1, 2] += 1.0   # one head gains on every example
    table = T.gain_test(before, after, n_perm=2000)
    assert list(table.index[:2]) == ["0_0", "0_1"] and len(table) == 8
    assert table.loc["1_2", "gain"].mean == pytest.approx(1.0, abs=0.1)
    assert table.loc["1_2", "p, Holm (every head)"] == pytest.approx(8 / 2001)   # the floor times eight heads
    assert (table.drop("1_2")["p, Holm (every head)"] > 0.05).all()
    assert (table["p, Holm (every head)"] >= table["p"]).all()


def test_correlation_interval_reaches_above_an_estimate_that_noise_has_lowered():
    """Noisy per-example scores: the correlation of the means falls below the population's (1 here: both settings
    share one signal), the resamples' further below; the interval mirrors that back and holds the population's."""
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(1, 4, 8))
    a, b = signal + rng.normal(scale=3, size=(40, 4, 8)), signal + rng.normal(scale=3, size=(40, 4, 8))
    est = T.correlation(a, b, n_boot=500)
    assert est.mean < 0.9 and est.mean < est.high == 1.0 and est.low < 1.0


def idle_heads_world(n: int = 200, seed: int = 0):
    """Head scores as a trained model's are: half the heads do nothing (mean zero, a little noise), the others do
    much, unevenly, and with per-example noise as large as their mean; a second setting shares the big heads."""
    rng = np.random.default_rng(seed)
    active = np.zeros(32, bool)
    active[rng.permutation(32)[:16]] = True
    mean_a = np.where(active, rng.exponential(0.6, 32), 0.0)
    mean_b = np.where(active, 0.7 * mean_a + 0.3 * rng.exponential(0.6, 32), 0.0)
    def noisy(mean):
        scale = np.where(active, mean + 0.1, 0.002)
        return (mean + scale * rng.standard_normal((n, 32))).reshape(n, 4, 8)
    return noisy(mean_a), noisy(mean_b)


def test_pearson_intervals_hold_their_value_where_rank_intervals_do_not():
    """The nested-bootstrap coverage the chapter reports, on a world of idle and busy heads: Pearson's basic interval
    is near its 95 %, a rank correlation's (idle heads ordered by noise) far below it."""
    a, b = idle_heads_world()
    pearson = T.interval_coverage([a, b], "pearson", reps=100, n_boot=300)
    spearman = T.interval_coverage([a, b], "spearman", reps=100, n_boot=300)
    assert pearson.high >= 0.95 and pearson.mean >= 0.85, pearson
    assert spearman.high < pearson.low, (spearman, pearson)
    assert pearson.n == 100 and 0 <= pearson.low <= pearson.mean <= pearson.high <= 1
    with pytest.raises(ValueError, match="statistic must be one of pearson, spearman"):
        T.interval_coverage([a, b], "kendall")
    with pytest.raises(ValueError, match="two settings"):
        T.interval_coverage([a])


@pytest.mark.parametrize("within_layer", [False, True])
def test_the_intervals_are_those_of_each_resample_computed_one_by_one(within_layer):
    """All resamples at once (counts @ scores, stacked correlations) against the resample-by-resample definition:
    each resample's mean tables, scipy's Pearson (of each head less its layer's mean), the basic interval."""
    from scipy.stats import pearsonr
    rng = np.random.default_rng(4)
    signal = rng.normal(size=(1, 4, 8))
    parent, own, other = (signal + rng.normal(scale=2, size=(25, 4, 8)) for _ in range(3))
    flat = [x.reshape(25, -1) for x in (parent, own, other)]
    centre = (lambda x: (x.reshape(4, 8) - x.reshape(4, 8).mean(1, keepdims=True)).ravel()) if within_layer \
        else (lambda x: x)
    gap = lambda p, a, b: pearsonr(centre(p), centre(a)).statistic - pearsonr(centre(p), centre(b)).statistic
    draws = np.random.default_rng(7).integers(0, 25, size=(300, 25))
    boot = np.array([gap(*(x[d].mean(0) for x in flat)) for d in draws])
    estimate = gap(*(x.mean(0) for x in flat))
    q_low, q_high = np.percentile(boot, [2.5, 97.5])
    low, high = 2 * estimate - q_high, 2 * estimate - q_low
    got = T.parent_gap(parent, own, other, within_layer=within_layer, n_boot=300, seed=7)
    np.testing.assert_allclose([got.mean, got.low, got.high], [estimate, low, high], atol=1e-9)


@pytest.mark.parametrize("kind", ["llava", "gemma3", "idefics3"])   # the image expanded into other tokens too
def test_prompt_regions_partition_the_prompt_and_place_its_parts(kind):
    from llavamech.examples import toy_examples
    model = tiny(kind)
    example = toy_examples(1, seed=5)[0]
    trace = model.trace(**example.inputs("vqa"))
    regions = T.prompt_regions(model, example, "vqa", trace)
    assert list(regions) == list(T.REGIONS)
    assert (torch.stack(list(regions.values())).sum(0) == 1).all()   # every position in exactly one region
    tokens = trace.positions.tokens
    words = lambda region: [tokens[i].lstrip("▁") for i in regions[region].nonzero().reshape(-1).tolist()]
    assert words("last position (T)") == ["is"] and regions["last position (T)"][-1]
    assert words("animal's word in the question") == words("animal's word in the answer prefix") == [example.animal]
    assert words("rest of the answer prefix") == ["The", "color", "of", "the"]
    assert words("rest of the question")[0] == "What" and words("rest of the question")[-1] == "?"
    image = regions["asked animal's box"] | regions["rest of the image"]
    assert image.sum() >= len(trace.positions.image_positions) and regions["asked animal's box"].any()


def test_shared_sets_run_each_set_once_and_give_what_a_plain_test_gives():
    from llavamech import interventions as I
    from llavamech.examples import toy_examples
    base = tiny("llava")
    tuned = tuned_from(base)
    items = toy_examples(3, seed=4)
    rows_run = []

    def counting(model, rows):
        rows_run.append(len(rows))
        return T.transplanted_rows(model, base, rows)

    shared = T.SharedSets(tuned, items, "vqa", counting)
    plain = I.HeadSetTest(tuned, items, "vqa", lambda m, rows: T.transplanted_rows(m, base, rows))
    before = sum(rows_run)
    first = shared.effect([[(0, 1)], [(1, 0), (0, 2)]])
    again = shared.effect([[(0, 2), (1, 0)], [(0, 1)], [(1, 3)]])   # two sets seen before, in another order
    assert sum(rows_run) - before == 3 * len(items)                   # three distinct sets, each run once
    np.testing.assert_array_equal(again["Δ log p"][0], first["Δ log p"][1])
    expected = plain.effect([[(0, 1)], [(1, 0), (0, 2)], [(1, 3)]])
    np.testing.assert_allclose(np.concatenate([first["Δ log p"], again["Δ log p"][2:]]), expected["Δ log p"], atol=1e-5)


def test_head_set_rows_of_one_size_share_their_random_sets():
    from llavamech.examples import toy_examples
    base = tiny("llava")
    tuned = tuned_from(base)
    test = T.transplant_sets(tuned, base, toy_examples(3, seed=2))
    a, b = (T.head_set_row(test, heads, draws=4, seed=1) for heads in ([(0, 1), (0, 2)], [(1, 2), (1, 3)]))
    drawn = [[frozenset(s) for s in row["_control all"].sets_run] for row in (a, b)]
    assert drawn[0] == drawn[1]   # the same generator's draws (unless one is a chosen set, which null_sets skips)
    np.testing.assert_array_equal(a["_control all"].null_logp, b["_control all"].null_logp)
    assert a["heads"] == "0_1, 0_2" and a["n"] == 3 and 0 < a["p (all heads)"] <= 1
    ablation = T.ablation_sets(tuned, toy_examples(3, seed=2), how="zero")
    assert T.head_set_row(ablation, [(0, 1)], draws=2, seed=1)["Δ log p"].n == 3


def test_at_which_k_says_where_a_verdict_holds():
    assert T.at_which_k({3: True, 5: True, 10: True}) == "at every k (3, 5, 10)"
    assert T.at_which_k({3: False, 5: False}) == "at no k (3, 5)"
    assert T.at_which_k({3: True, 5: False, 10: True}) == "at k = 3 and 10, not at 5"


def test_describe_looks_names_each_heads_main_region_beside_uniform():
    from llavamech.stats import Estimate
    share = lambda *values: {region: Estimate(v, v, v, 1) for region, v in zip(T.REGIONS, values)}
    looks = pd.DataFrame({"0_6": share(0, 0.1, 0.01, 0.02, 0, 0, 0.87, 0),
                          "uniform attention": share(0.1, 0.6, 0.01, 0.09, 0.01, 0.05, 0.01, 0.13)}).T
    said = T.describe_looks(looks, ["0_6"])
    assert said.startswith("0_6 puts 0.870 (all 1 alike) on the last position (T) (uniform 0.010)")
    assert said.endswith("0.030 on the question (uniform 0.100)")


def test_parent_gap_is_the_own_correlation_less_the_others_with_a_paired_interval():
    rng = np.random.default_rng(0)
    parent = rng.random((40, 4, 8)) + np.arange(32).reshape(4, 8)      # a clear ordering, noisy per example
    own = parent + rng.normal(0, 0.5, parent.shape)                    # keeps it
    other = rng.random((40, 4, 8)) + np.arange(32)[::-1].reshape(4, 8) * 0.1   # another ordering
    gap = T.parent_gap(parent, own, other, n_boot=300)
    assert gap.mean == pytest.approx(T.correlation(parent, own, n_boot=10).mean
                                     - T.correlation(parent, other, n_boot=10).mean)
    assert gap.low > 0 and gap.n == 40
    assert T.parent_gap(parent, own, own, n_boot=50).mean == 0.0
    with pytest.raises(ValueError, match="same examples"):
        T.parent_gap(parent, own, other[:10])


def test_within_layer_correlations_ignore_which_layer_leads():
    layer_only = np.repeat([[0.0], [10.0]], 4, axis=1)                     # layer 1 leads; no order within a layer
    order = np.tile(np.arange(4.0), (2, 1))                                  # the same order within each layer
    noise = np.random.default_rng(0).random((30, 2, 4)) * 0.1
    parent = noise + layer_only + order
    same_order = T.parent_gap(parent, noise + order, noise + layer_only + order[:, ::-1], within_layer=True, n_boot=50)
    assert same_order.mean == pytest.approx(2.0, abs=0.02)                   # r +1 (layers ignored) less r -1
    across = T.parent_gap(parent, noise + order, noise + layer_only + order[:, ::-1], n_boot=50)
    assert across.mean < same_order.mean                                     # over all heads the leading layer counts


def test_a_crossing_gives_each_parent_its_gap_and_a_verdict_in_words():
    rng = np.random.default_rng(1)
    orders = {name: rng.permutation(32).reshape(4, 8).astype(float) for name in ("a", "b")}
    noisy = lambda base: base + rng.normal(0, 2, (40, 4, 8))
    parents = {name: noisy(o) for name, o in orders.items()}
    children = {name: noisy(o) for name, o in orders.items()}
    gaps = T.crossed_gaps(parents, children, n_boot=200)
    assert gaps["a"].mean == pytest.approx(T.parent_gap(parents["a"], children["a"], children["b"], n_boot=10).mean)
    assert gaps["b"].mean == pytest.approx(T.parent_gap(parents["b"], children["b"], children["a"], n_boot=10).mean)
    assert T.inherited(gaps) == "yes, from both parents"
    swapped = T.crossed_gaps(parents, {"a": children["b"], "b": children["a"]}, n_boot=200)
    assert T.inherited(swapped) == "not shown"
    with pytest.raises(ValueError, match="two parents"):
        T.crossed_gaps(parents, {"a": children["a"]})
    spread = T.child_spread(parents["b"], [children["a"], 2 * children["a"] + 1.0])
    assert spread == pytest.approx(0.0)                                      # nor a rescaling a correlation
    layer_shift = np.arange(4.0).reshape(1, 4, 1) * 5                        # moves whole layers only
    assert T.child_spread(parents["b"], [children["a"], children["a"] + layer_shift], within_layer=True) == \
        pytest.approx(0.0)
    assert T.child_spread(parents["b"], [children["a"], children["a"] + layer_shift]) > 0.01


def test_a_paired_verdict_says_which_side_or_what_the_interval_leaves_open():
    from llavamech.stats import Estimate
    assert T.paired_verdict(Estimate(0.05, -0.006, 0.14, 200), "x", "y") == \
        "not distinguished (differences up to 0.14 are not excluded)"
    assert T.paired_verdict(Estimate(0.2, 0.1, 0.3, 200), "x", "y") == "x scores them more alike"
    assert T.paired_verdict(Estimate(-0.2, -0.3, -0.1, 200), "x", "y") == "y scores them more alike"


def test_movement_and_gain_joins_each_head_s_move_to_its_gain_and_ranks_them():
    from scipy.stats import spearmanr
    heads = [f"{l}_{h}" for l in range(2) for h in range(4)]
    change = pd.DataFrame({"all": [0.1, 0.5, 0.2, 0.9, 0.3, 0.4, 0.6, 0.05]}, index=heads)
    gain = T.gains(np.zeros((2, 4)), np.array([[0.0, 2.0, 0.1, 3.0], [0.2, 0.1, 1.0, -0.1]]))
    joined, rho, p = T.movement_and_gain(change, gain)
    assert list(joined.index) == heads and joined.loc["0_3", "gain"] == 3.0
    expected = spearmanr(change["all"], [0.0, 2.0, 0.1, 3.0, 0.2, 0.1, 1.0, -0.1])
    assert rho == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue) and rho > 0.5
    with pytest.raises(ValueError, match="same heads"):
        T.movement_and_gain(change, gain.iloc[:5])
    with pytest.raises(ValueError, match="missing"):
        T.movement_and_gain(change.rename(columns={"all": "q"}), gain)
