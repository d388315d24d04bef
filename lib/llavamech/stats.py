"""Means over examples with percentile-bootstrap 95 % intervals, statistics of means (correlations) with basic
bootstrap intervals and the nested bootstrap that checks them, and the chance levels the chapters quote."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from . import validate
from .errors import LlavamechError
from .progress import progress


@dataclass(frozen=True)
class Estimate:
    """A mean over n examples with its 95 % interval; `mean`, `low`, `high` are arrays for array-valued means."""
    mean: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float
    n: int

    def __str__(self) -> str:
        if np.ndim(self.mean):
            return f"Estimate(shape {np.shape(self.mean)}, n={self.n})"
        if np.isnan(self.low) and np.isfinite(self.mean):
            return f"{self.mean:#.3g} (n={self.n}: no interval)"
        if self.low == self.high == self.mean:   # every example alike: a percentile interval says nothing more
            return f"{self.mean:#.3g} (all {self.n} alike)"
        return f"{self.mean:.3g} [{self.low:.3g}, {self.high:.3g}]"

    def __getitem__(self, index) -> "Estimate":
        """One element of an array-valued estimate, e.g. `heads[layer, head]`."""
        return Estimate(np.asarray(self.mean)[index], np.asarray(self.low)[index], np.asarray(self.high)[index], self.n)

    def excludes(self, value: float) -> bool:
        """Whether the 95 % interval lies wholly above or below `value`."""
        return bool(self.low > value or self.high < value)


def numbers(name: str, values, ndim: int | None = None, empty: bool = False) -> np.ndarray:
    """`values` as a float64 array with at least one example (one row), or one line saying why it cannot be: a
    list of words, a ragged list or a scalar where examples are needed (`ndim`: the dimensions it must have)."""
    if isinstance(values, (str, bytes, dict, set)):
        raise LlavamechError(f"{name} must be numbers, one per example, not a {type(values).__name__}")
    try:
        x = validate.host_array(values, np.float64)
    except (TypeError, ValueError):
        raise LlavamechError(f"{name} must be numbers, one row per example, all rows of one length") from None
    if x.ndim == 0 or (len(x) == 0 and not empty):
        raise LlavamechError(f"{name} must hold at least one example, got {'a single number' if x.ndim == 0 else 'none'}")
    if np.isinf(x).any():
        raise LlavamechError(f"{name} hold an infinite value: a mean with it is not a number; leave it out or use NaN")
    if ndim is not None and x.ndim != ndim:
        raise LlavamechError(f"{name} must have {ndim} dimension{'s' * (ndim > 1)}, not shape {x.shape}")
    return x


def bootstrap(values, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean over the first axis of `values` ([n, ...]: one row per example) with a percentile-bootstrap 95 %
    interval; examples are resampled together, so array-valued means keep their correlations. NaN rows (an
    example where the measure is undefined) are left out, element by element. Where fewer than two examples are
    left the interval is NaN, not the zero-width one resampling a single value gives: `excludes` is then False."""
    x = numbers("bootstrap's values", values)
    n_boot, seed = validate.whole("n_boot", n_boot), validate.whole("seed", seed, 0)
    rng = np.random.default_rng(seed)
    counts = resample_counts(rng.integers(0, len(x), size=(n_boot, len(x))), len(x))
    flat = x.reshape(len(x), -1)
    valid = np.isfinite(flat)
    with np.errstate(invalid="ignore", divide="ignore"):   # a resample of only NaN rows: NaN, as nanmean gives
        means = (counts @ np.where(valid, flat, 0.0) / (counts @ valid)).reshape(n_boot, *x.shape[1:])
    low, high = np.nanpercentile(means, [2.5, 97.5], axis=0)
    mean = np.nanmean(x, axis=0)
    # every example alike: each resample's mean is that value too, exactly (a product of counts rounds it)
    with warnings.catch_warnings():   # an element without a finite value is NaN (not alike), and too_few below
        warnings.simplefilter("ignore", RuntimeWarning)
        alike = np.nanmin(x, axis=0) == np.nanmax(x, axis=0)
    low, high = np.where(alike, mean, low), np.where(alike, mean, high)
    too_few = np.isfinite(x).sum(axis=0) < 2
    low, high = np.where(too_few, np.nan, low), np.where(too_few, np.nan, high)
    n = int(np.isfinite(x.reshape(len(x), -1)).all(axis=1).sum())
    unwrap = (lambda a: float(a)) if x.ndim == 1 else (lambda a: a)
    return Estimate(unwrap(mean), unwrap(low), unwrap(high), n)


def wilson(share: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion measured on n trials (unlike a bootstrap's, it keeps its width
    when every trial succeeds, or none)."""
    z, k = 1.959964, share * n
    centre, half = (k + z * z / 2) / (n + z * z), z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return 0.0 if k == 0 else float(centre - half), 1.0 if k == n else float(centre + half)


def resample_counts(draws, n: int) -> np.ndarray:
    """How often each of `n` examples is drawn in each resample (`draws`: [resamples, n] indices), so that every
    resample's mean is one matrix product (counts @ values / n) instead of a loop over thousands of resamples."""
    draws = np.asarray(draws)
    counts = np.zeros((len(draws), n))
    np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
    return counts


def sign_flip_p(differences, n_perm: int = 10_000, seed: int = 0) -> np.ndarray:
    """One-sided paired permutation p-value that the mean of `differences` ([n] or [n, ...]: one row per example,
    each a paired difference) is above zero, per element: each example's sign is flipped at random, the observed
    mean's rank among the flipped means counted with the observed one included, so p ≥ 1 / (n_perm + 1).
    NaN (an example where the difference is undefined) is left out, element by element: a zero flips to itself, so
    the test runs on the other examples alone; an element with no example left gets p = NaN, never a small p."""
    x = numbers("sign_flip_p's differences", differences)
    n_perm, seed = validate.whole("n_perm", n_perm), validate.whole("seed", seed, 0)
    flat = x.reshape(len(x), -1)
    valid = np.isfinite(flat)
    flat, count = np.where(valid, flat, 0.0), valid.sum(axis=0)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(x)))
    with np.errstate(invalid="ignore", divide="ignore"):
        flipped = signs @ flat / count
        observed = flat.sum(axis=0) / count
    # a flipped mean that ties the observed one counts as reaching it; ties are judged at float32 precision, the
    # precision of the model's scores, so that rounding that differs between CPUs does not move a count by one
    tie = 1e-6 * np.abs(flat).max(axis=0) + 1e-12
    p = np.where(count > 0, (1 + (flipped >= observed - tie).sum(axis=0)) / (n_perm + 1), np.nan)
    return p.reshape(x.shape[1:]) if x.ndim > 1 else float(p[0])


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values ([m], same order as given): a test stands at level α when
    its adjusted p is at most α, with the chance of any false rejection in the family at most α. A NaN p (a test that
    could not be run) stays NaN and is not counted in the family."""
    p = numbers("holm's p-values", p_values, ndim=1, empty=True)   # an empty family adjusts to nothing
    if ((p < 0) | (p > 1)).any():
        raise LlavamechError(f"holm's p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)][:3].tolist()}")
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, p[order] * (len(order) - np.arange(len(order))))
    adjusted[order] = np.maximum.accumulate(scaled) if len(order) else scaled
    return adjusted


def chance_mrr(vocab_size: int) -> float:
    """Expected reciprocal rank of a token whose rank is uniform over the vocabulary: H_V / V."""
    vocab_size = validate.whole("vocab_size", vocab_size)
    return float(np.sum(1.0 / np.arange(1, vocab_size + 1)) / vocab_size)


def scaled_k(k_paper: int, n_positions: int, n_paper: int = 576) -> int:
    """The paper's k of n_paper positions scaled to n_positions (same share, at least 1): 20 of 576 -> 2 of 64."""
    k_paper, n_positions = validate.whole("k_paper", k_paper), validate.whole("n_positions", n_positions)
    n_paper = validate.whole("n_paper", n_paper)
    return max(1, round(k_paper * n_positions / n_paper))


def average_ranks(x) -> np.ndarray:
    """Ranks from 1 along the last axis, ties given their average rank (scipy's rankdata, "average"), for a whole
    stack of rows at once: a bootstrap ranks thousands of resampled score tables, and rankdata(axis=) loops in
    Python over them."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, axis=-1, kind="stable")
    ordered = np.take_along_axis(x, order, -1)
    m = x.shape[-1]
    index = np.broadcast_to(np.arange(m), x.shape)
    starts = np.ones(x.shape, bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]   # each run of equal values starts here...
    ends = np.ones(x.shape, bool)
    ends[..., :-1] = starts[..., 1:]                            # ...and ends where the next one starts
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, index, m - 1), -1), axis=-1), -1)
    ranks = np.empty(x.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, -1)
    return ranks


def spearman(a, b) -> np.ndarray:
    """Spearman's rho of `a` and `b` along the last axis (the other axes broadcast: one rho per row of a stack of
    resampled tables); NaN where either row is constant, as scipy's spearmanr gives."""
    return pearson(average_ranks(a), average_ranks(b))


def pearson(a, b) -> np.ndarray:
    """Pearson's r of `a` and `b` along the last axis (the other axes broadcast, as `spearman`'s); NaN where either
    row is constant, as scipy's pearsonr gives."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def basic_interval(estimate: float, boot, n: int, bound: float | None = None) -> Estimate:
    """`estimate` with the basic (reverse percentile) bootstrap 95 % interval of its resampled values `boot`:
    [2 est - q97.5, 2 est - q2.5], clipped to the statistic's range [-bound, bound] if it has one. For a correlation
    of means over examples: a resample's means carry the sample's noise twice, so its correlation falls further
    below the sample's than the sample's falls below the population's, by about as much, and the basic interval
    mirrors that shift back, where the percentile interval keeps it and BCa, once nearly every resample falls on one
    side, collapses (`transfer.interval_coverage` measures it). When nearly every resample falls below the estimate,
    the interval lies above it: the estimate itself is the biased one."""
    boot = np.asarray(boot, float)
    low, high = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5])
    low, high = 2 * estimate - high, 2 * estimate - low
    if bound is not None:
        low, high = np.clip([low, high], -bound, bound)
    return Estimate(float(estimate), float(low), float(high), n)


def of_means(statistic, arrays: list, n_boot: int = 2000, seed: int = 0, bound: float | None = None,
             paired: bool = True) -> Estimate:
    """`statistic` of the arrays' means over examples ([n_i, ...] each; the statistic takes stacks of the flattened
    means, one row per resample), with a basic bootstrap 95 % interval (`basic_interval`, within [-bound, bound]).
    `paired`: the arrays hold the same examples, resampled together (a head's scores in two settings); otherwise each
    array's examples are resampled on their own (two sets of different examples). n: the smallest set's size."""
    arrays = [x.reshape(len(x), -1) for x in (numbers(f"set {i + 1}'s scores", a) for i, a in enumerate(arrays))]
    sizes = [len(x) for x in arrays]
    if paired and len(set(sizes)) > 1:
        raise LlavamechError(f"paired settings hold the same examples, but the sets hold {sizes}")
    if min(sizes) < 2:
        raise LlavamechError(f"an interval over examples needs at least two examples in each set, got {sizes}")
    if not all(np.isfinite(x).all() for x in arrays):
        raise LlavamechError("the scores hold NaN or infinite values: leave out the examples without a score")
    n_boot = validate.whole("n_boot", n_boot)
    rng = np.random.default_rng(validate.whole("seed", seed, 0))
    # every resample's means at once, as how often it draws each example; the sample itself is the first row
    def counts(n):
        return np.vstack([np.ones((1, n)), resample_counts(rng.integers(0, n, size=(n_boot, n)), n)])
    shared = counts(sizes[0]) if paired else None
    values = np.asarray(statistic(*((shared if paired else counts(len(x))) @ x / len(x) for x in arrays)))
    return basic_interval(values[0], values[1:], min(sizes), bound)


def coverage_of_means(statistic, arrays: list, bound: float | None = None, paired: bool = True, reps: int = 200,
                      n_boot: int = 500, seed: int = 0) -> Estimate:
    """How often `of_means`' interval holds the value it estimates, by a nested bootstrap: each set's examples stand
    in for its population (the value: the statistic of all of them), `reps` samples of the same sizes are drawn from
    them (together where `paired`), and each gets its interval. The share that hold the population's value, with its
    Wilson 95 % interval; a calibrated interval holds it 95 % of the time."""
    arrays = [numbers(f"set {i + 1}'s scores", a) for i, a in enumerate(arrays)]
    reps, seed = validate.whole("reps", reps), validate.whole("seed", seed, 0)
    truth = float(statistic(*(x.reshape(len(x), -1).mean(0) for x in arrays)))
    rng = np.random.default_rng(seed)
    held = 0
    for rep in progress(range(reps), "interval coverage"):
        shared = rng.integers(0, len(arrays[0]), len(arrays[0])) if paired else None
        samples = [x[shared if paired else rng.integers(0, len(x), len(x))] for x in arrays]
        estimate = of_means(statistic, samples, n_boot, seed + rep + 1, bound, paired)
        held += estimate.low <= truth <= estimate.high
    return Estimate(held / reps, *wilson(held / reps, reps), reps)


def coverage_reading(held: Estimate, nominal: float = 0.95) -> str:
    """A measured coverage (`coverage_of_means`) in words, read alike in every chapter: short of the nominal level
    only where its Wilson interval lies wholly below it, above it only where wholly above, and otherwise not shown
    to differ, with how little that many samples can tell."""
    def pct(x):
        return f"{x * 100:.0f} %"
    if held.high < nominal:
        return f"short of {pct(nominal)}: such intervals hold their value in about {pct(held.low)}–{pct(held.high)} of samples"
    if held.low > nominal:
        return f"above {pct(nominal)} (wider than they need be): they hold their value in {pct(held.low)}–{pct(held.high)}"
    return f"not shown short of {pct(nominal)} ({held.n} samples cannot tell {pct(held.low)} from {pct(nominal)})"


def ranking_agreement(a, b, top: int = 5) -> dict:
    """How far two scores of the same units (e.g. every head's mean Imp and mean linear logit contribution) rank
    them alike: Spearman's rho over all units, and how many of each score's `top` units the other's top shares (`top`
at most the number of units; the dict's "top" is the one compared)."""
    a, b = numbers("ranking_agreement's first score", a), numbers("ranking_agreement's second score", b)
    if a.shape != b.shape:
        raise LlavamechError(f"the two scores must cover the same units, in the same shape ({a.shape} vs {b.shape})")
    a, b = a.ravel(), b.ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise LlavamechError("ranking_agreement's scores hold NaN or infinite values: a unit without a score cannot "
                             "be ranked; leave it out of both")
    top = min(validate.whole("top", top), len(a))   # the dict says which top it compared
    top_a, top_b = np.argsort(-a, kind="stable")[:top], np.argsort(-b, kind="stable")[:top]
    return {"spearman": float(spearmanr(a, b).statistic), "top": top,
            "shared top": len(set(top_a.tolist()) & set(top_b.tolist())),
            "same first": bool(top_a[0] == top_b[0])}
