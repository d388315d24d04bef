import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from llavamech import stats
from llavamech.stats import bootstrap, chance_mrr, holm, scaled_k, sign_flip_p


def test_bootstrap_mean_and_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=400)
    e = bootstrap(x)
    assert e.mean == pytest.approx(x.mean()) and e.n == 400
    assert e.low < e.mean < e.high
    half = 1.96 * x.std() / np.sqrt(len(x))  # the normal-theory half-width the percentile interval should match
    assert e.high - e.low == pytest.approx(2 * half, rel=0.15)
    assert e.excludes(0.5) and not e.excludes(1.0)


def test_bootstrap_of_arrays_and_missing_values():
    x = np.array([[1.0, np.nan], [3.0, 2.0], [5.0, 4.0]])
    e = bootstrap(x)
    assert np.allclose(e.mean, [3.0, 3.0]) and e.n == 2
    assert e[0].mean == 3.0 and e[0].low <= 3.0 <= e[0].high
    constant = bootstrap(np.full(10, 0.25))
    assert constant.low == constant.high == 0.25
    # a value that sums inexactly: the resamples' means round differently, the interval must still be the value
    assert str(bootstrap(np.full(200, 0.0241))) == "0.0241 (all 200 alike)"
    mixed = bootstrap(np.stack([np.full(200, 0.0241), np.arange(200.0)], 1))
    assert mixed.low[0] == mixed.high[0] == mixed.mean[0] and mixed.low[1] < mixed.mean[1] < mixed.high[1]


def test_bootstrap_is_the_mean_of_each_resample_taken_one_by_one():
    """Every resample's mean as one product of draw counts, against the definition: nanmean of each resample."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 3, 2))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 0, 0] = np.nan
    x[0, 0, 0] = 1.0                                   # one finite value: most resamples of it are all NaN
    draws = np.random.default_rng(9).integers(0, 40, size=(500, 40))
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        means = np.stack([np.nanmean(x[d], axis=0) for d in draws])
    low, high = np.nanpercentile(means, [2.5, 97.5], axis=0)
    e = bootstrap(x, n_boot=500, seed=9)
    np.testing.assert_allclose(e.low[1:], low[1:], atol=1e-12)
    np.testing.assert_allclose(e.high[1:], high[1:], atol=1e-12)
    assert np.isnan(e.low[0, 0]) and np.isnan(e.high[0, 0])   # fewer than two examples: no interval


def test_chance_levels():
    assert chance_mrr(1) == 1.0 and chance_mrr(2) == 0.75
    assert chance_mrr(32064) < 0.0004
    assert scaled_k(20, 576) == 20 and scaled_k(20, 64) == 2 and scaled_k(20, 4) == 1


def test_ranking_agreement():
    import numpy as np
    from llavamech.stats import ranking_agreement
    a = np.arange(12.0).reshape(3, 4)
    same = ranking_agreement(a, 2 * a + 1, top=3)
    assert same["spearman"] == 1.0 and same["shared top"] == 3 and same["same first"]
    flipped = ranking_agreement(a, -a, top=3)
    assert flipped["spearman"] == -1.0 and flipped["shared top"] == 0 and not flipped["same first"]


def test_an_estimate_over_identical_examples_says_so_instead_of_a_degenerate_interval():
    from llavamech.stats import bootstrap
    assert str(bootstrap([1.0] * 20)) == "1.00 (all 20 alike)"
    assert str(bootstrap([0.0, 1.0] * 10)).startswith("0.5 [")


def test_holm_adjusts_a_family_step_down_and_keeps_its_order():
    p = [0.04, 0.005, 0.03, 0.5]
    # sorted 0.005, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 = 0.02, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert np.allclose(holm(p), [0.09, 0.02, 0.09, 0.5])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0]) and holm([0.01]) == pytest.approx([0.01])
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.random(6)
        assert (holm(q) >= q).all() and (holm(q) <= 1).all()


def test_sign_flip_p_is_the_share_of_sign_flips_whose_mean_reaches_the_observed_one():
    # [1, 2, 3]: only the all-positive flip (1 of 8) reaches the mean 2; [-1, -2, -3]: every flip does
    p = sign_flip_p(np.array([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]]), n_perm=20_000)
    assert p.shape == (2,) and p[0] == pytest.approx(1 / 8, abs=0.01) and p[1] == pytest.approx(1.0)
    assert sign_flip_p(np.zeros(5), n_perm=99) == 1.0                      # no difference at all: never significant
    assert sign_flip_p(np.full(30, 0.5), n_perm=999) == pytest.approx(1 / 1000, abs=2e-3)   # floor 1 / (n_perm + 1)


def test_sign_flip_ties_are_judged_at_float32_precision():
    """Differences that are zero on one CPU and float32 rounding on another give the same p-value."""
    import numpy as np
    from llavamech.stats import sign_flip_p
    d = np.array([0.3, -0.1, 0.2, 0.0, 0.0, 0.25, -0.05, 0.0])
    noisy = d + np.array([0, 0, 0, 3e-8, -2e-8, 0, 0, 1e-8])
    assert sign_flip_p(d, seed=1) == sign_flip_p(noisy, seed=1)


def test_one_example_gives_no_interval_rather_than_a_zero_width_one():
    one = bootstrap([0.7])
    assert one.mean == 0.7 and np.isnan(one.low) and np.isnan(one.high) and not one.excludes(0.0)
    assert str(one) == "0.700 (n=1: no interval)"
    columns = bootstrap(np.array([[1.0, np.nan], [2.0, 5.0], [3.0, np.nan]]))
    assert np.isfinite(columns.low[0]) and np.isnan(columns.low[1]) and columns[1].mean == 5.0


def test_average_ranks_and_spearman_are_scipys_row_by_row():
    rng = np.random.default_rng(0)
    tables = np.round(rng.normal(size=(50, 32)), 1)            # rounded: ties in most rows
    tables[3] = 1.0                                              # a constant row
    other = rng.normal(size=(50, 32))
    assert np.array_equal(stats.average_ranks(tables), rankdata(tables, axis=-1))
    rho = stats.spearman(tables, other)
    assert np.isnan(rho[3])
    expected = [spearmanr(a, b).statistic for a, b in zip(np.delete(tables, 3, 0), np.delete(other, 3, 0))]
    assert np.allclose(np.delete(rho, 3), expected, atol=1e-12)
    assert stats.spearman(tables[0], other[0]) == pytest.approx(spearmanr(tables[0], other[0]).statistic, abs=1e-12)


def test_pearson_is_scipys_row_by_row():
    from scipy.stats import pearsonr
    rng = np.random.default_rng(1)
    tables, other = rng.normal(size=(20, 32)), rng.normal(size=(20, 32))
    tables[5] = 2.0                                              # a constant row
    r = stats.pearson(tables, other)
    assert np.isnan(r[5])
    expected = [pearsonr(a, b).statistic for a, b in zip(np.delete(tables, 5, 0), np.delete(other, 5, 0))]
    assert np.allclose(np.delete(r, 5), expected, atol=1e-12)


def test_a_wilson_interval_is_the_textbooks_and_keeps_its_width_at_all_or_none():
    assert stats.wilson(0.93, 100) == pytest.approx((0.8625, 0.9657), abs=1e-4)   # Wilson (1927), z = 1.96
    low, high = stats.wilson(1.0, 100)
    assert low < 1.0 == high
    low, high = stats.wilson(0.0, 100)
    assert low == 0.0 < high


def test_a_statistic_of_means_resamples_paired_sets_together_and_others_each_on_its_own():
    """`of_means` against the resample-by-resample definition: paired sets drawn with one set of indices, unpaired
    sets each with its own draws (the first set's first), the basic interval of the resampled statistic."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 6)), rng.normal(size=(30, 6)) + np.arange(6)
    diff = lambda x, y: (x - y).mean(-1)
    draws = np.random.default_rng(5)
    da, db = draws.integers(0, 20, size=(400, 20)), draws.integers(0, 30, size=(400, 30))
    boot = np.array([diff(a[i].mean(0), b[j].mean(0)) for i, j in zip(da, db)])
    estimate = diff(a.mean(0), b.mean(0))
    q_low, q_high = np.percentile(boot, [2.5, 97.5])
    got = stats.of_means(diff, [a, b], n_boot=400, seed=5, paired=False)
    np.testing.assert_allclose([got.mean, got.low, got.high], [estimate, 2 * estimate - q_high, 2 * estimate - q_low],
                               atol=1e-12)
    assert got.n == 20
    paired = stats.of_means(diff, [a, b[:20]], n_boot=400, seed=5)
    boot = np.array([diff(a[i].mean(0), b[:20][i].mean(0)) for i in np.random.default_rng(5).integers(0, 20, (400, 20))])
    q_low, q_high = np.percentile(boot, [2.5, 97.5])
    np.testing.assert_allclose([paired.low, paired.high], [2 * paired.mean - q_high, 2 * paired.mean - q_low], atol=1e-12)
    with pytest.raises(ValueError, match="paired settings hold the same examples"):
        stats.of_means(diff, [a, b])
    with pytest.raises(ValueError, match="at least two examples"):
        stats.of_means(diff, [a[:1], b], paired=False)
    with pytest.raises(ValueError, match="NaN"):
        stats.of_means(diff, [np.where(a > 2, np.nan, a), b], paired=False)


@pytest.mark.parametrize("paired", [True, False])
def test_the_nested_bootstrap_finds_a_difference_of_means_held_95_percent_of_the_time(paired):
    """A difference of means (unbiased, near normal) is held about 95 % of the time, as theory says (where an
    interval falls short, chapter 4's rank correlation, see test_transfer)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 30)), rng.normal(size=(60, 30))
    held = stats.coverage_of_means(lambda x, y: (x - y).mean(-1), [a, b], paired=paired, reps=200, n_boot=300)
    assert held.low <= 0.95 <= held.high and held.n == 200, held


def test_a_coverage_is_read_short_above_or_undistinguished_by_its_wilson_interval():
    from llavamech.stats import Estimate, coverage_reading
    assert coverage_reading(Estimate(0.91, 0.862, 0.942, 200)) == \
        "short of 95 %: such intervals hold their value in about 86 %–94 % of samples"
    assert coverage_reading(Estimate(0.93, 0.886, 0.958, 200)) == \
        "not shown short of 95 % (200 samples cannot tell 89 % from 95 %)"
    assert coverage_reading(Estimate(0.995, 0.97, 0.999, 200)).startswith("above 95 %")
