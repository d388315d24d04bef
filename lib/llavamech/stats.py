"""Means over examples with percentile-bootstrap 95 % intervals, and the chance levels the chapters quote."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr


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


def bootstrap(values, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean over the first axis of `values` ([n, ...]: one row per example) with a percentile-bootstrap 95 %
    interval; examples are resampled together, so array-valued means keep their correlations. NaN rows (an
    example where the measure is undefined) are left out, element by element. Where fewer than two examples are
    left the interval is NaN, not the zero-width one resampling a single value gives: `excludes` is then False."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError("bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = np.stack([np.nanmean(x[d], axis=0) for d in draws])
    low, high = np.nanpercentile(means, [2.5, 97.5], axis=0)
    too_few = np.isfinite(x).sum(axis=0) < 2
    low, high = np.where(too_few, np.nan, low), np.where(too_few, np.nan, high)
    n = int(np.isfinite(x.reshape(len(x), -1)).all(axis=1).sum())
    mean = np.nanmean(x, axis=0)
    unwrap = (lambda a: float(a)) if x.ndim == 1 else (lambda a: a)
    return Estimate(unwrap(mean), unwrap(low), unwrap(high), n)


def sign_flip_p(differences, n_perm: int = 10_000, seed: int = 0) -> np.ndarray:
    """One-sided paired permutation p-value that the mean of `differences` ([n] or [n, ...]: one row per example,
    each a paired difference) is above zero, per element: each example's sign is flipped at random, the observed
    mean's rank among the flipped means counted with the observed one included, so p ≥ 1 / (n_perm + 1)."""
    x = np.asarray(differences, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(x)))
    flipped = signs @ flat / len(x)
    observed = flat.mean(axis=0)
    # a flipped mean that ties the observed one counts as reaching it; ties are judged at float32 precision, the
    # precision of the model's scores, so that rounding that differs between CPUs does not move a count by one
    tie = 1e-6 * np.abs(flat).max(axis=0) + 1e-12
    p = (1 + (flipped >= observed - tie).sum(axis=0)) / (n_perm + 1)
    return p.reshape(x.shape[1:]) if x.ndim > 1 else float(p[0])


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (same order as given): a test stands at level α when its
    adjusted p is at most α, with the chance of any false rejection in the family at most α."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def chance_mrr(vocab_size: int) -> float:
    """Expected reciprocal rank of a token whose rank is uniform over the vocabulary: H_V / V."""
    return float(np.sum(1.0 / np.arange(1, vocab_size + 1)) / vocab_size)


def scaled_k(k_paper: int, n_positions: int, n_paper: int = 576) -> int:
    """The paper's k of n_paper positions scaled to n_positions (same share, at least 1): 20 of 576 -> 2 of 64."""
    return max(1, round(k_paper * n_positions / n_paper))


def ranking_agreement(a, b, top: int = 5) -> dict:
    """How far two scores of the same units (e.g. every head's mean Imp and mean linear logit contribution) rank
    them alike: Spearman's rho over all units, and how many of each score's `top` units the other's top shares."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two scores must cover the same units ({a.shape} vs {b.shape})")
    top_a, top_b = np.argsort(-a, kind="stable")[:top], np.argsort(-b, kind="stable")[:top]
    return {"spearman": float(spearmanr(a, b).statistic), "top": top,
            "shared top": len(set(top_a.tolist()) & set(top_b.tolist())),
            "same first": bool(top_a[0] == top_b[0]) if top else True}
