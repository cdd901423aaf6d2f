"""Statistics of returns: small pure numpy functions (numpy in, numpy out).

In the style of rliable: no torch, no gymnasium, nothing stored; every function states the shapes of
its arrays. ``axis`` is the axis of the samples (default the last one); it disappears from the
result, the other axes are kept (``...`` below stands for them).

* :func:`mean_sem` — mean and standard error of the mean (ddof = 1);
* :func:`bootstrap_ci` — percentile bootstrap CI of any statistic, seeded, optionally a cluster
  bootstrap that resamples whole groups (e.g. the trials of one checkpoint);
* :func:`quantiles`, :func:`histogram_mode`, :func:`cvar`, :func:`ltp` — the post-update return
  distribution's statistics (methods.md §8);
* :func:`welch_t_test` — Welch's unequal-variance t-test (t, df, two-sided p).

Where a statistic is undefined (too few samples, a ratio threshold of a non-positive return) the
result is NaN and a :class:`RuntimeWarning` says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "mean_sem",
    "bootstrap_ci",
    "quantiles",
    "histogram_mode",
    "cvar",
    "ltp",
    "WelchResult",
    "welch_t_test",
]

Statistic = Callable[..., Any]


def _last(x: Any, axis: int) -> np.ndarray:
    """``x`` as float64 with the sample axis moved last: shape ``(..., n)``."""
    return np.moveaxis(np.asarray(x, np.float64), axis, -1)


def mean_sem(x: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean, ``std(ddof=1) / sqrt(n)``.

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n samples along ``axis``.
    axis : int
        The sample axis.

    Returns
    -------
    (mean, sem) : arrays of shape ``(...)`` (``x`` without ``axis``); sem is NaN where n < 2.
    """
    v = _last(x, axis)
    n = v.shape[-1]
    mean = v.mean(axis=-1) if n else np.full(v.shape[:-1], np.nan)
    if n < 2:
        return mean, np.full(v.shape[:-1], np.nan)
    return mean, v.std(axis=-1, ddof=1) / math.sqrt(n)


def quantiles(x: Any, q: Any, axis: int = -1) -> np.ndarray:
    """Empirical quantiles (numpy's default linear interpolation between order statistics).

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n samples along ``axis``.
    q : float or array of shape ``(k,)``, each in [0, 1].

    Returns
    -------
    array of shape ``(...)`` for a scalar q, ``(k, ...)`` for k quantiles.
    """
    return np.quantile(_last(x, axis), q, axis=-1)


def histogram_mode(x: Any, bins: int = 100, axis: int = -1) -> np.ndarray:
    """Centre of the fullest bin of a ``bins``-bin histogram over [min, max] (first bin on ties).

    The centre is ``(left + right) / 2`` of the bin's edges, right for negative returns too (the
    reference floor-divided it). All samples equal → that value.

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n ≥ 1 samples along ``axis``.
    bins : int
        Number of equal-width bins.

    Returns
    -------
    array of shape ``(...)``.
    """
    v = _last(x, axis)
    flat = v.reshape(-1, v.shape[-1])
    out = np.empty(flat.shape[0])
    for i, row in enumerate(flat):
        if row.min() == row.max():  # numpy would widen the range by ±0.5 around a single value
            out[i] = row[0]
            continue
        counts, edges = np.histogram(row, bins=bins)
        k = int(np.argmax(counts))
        out[i] = 0.5 * (edges[k] + edges[k + 1])
    return out.reshape(v.shape[:-1])


def cvar(x: Any, alpha: float = 0.1, axis: int = -1) -> np.ndarray:
    """Conditional value at risk of the lower tail: CVaR_α = q_α + E[min(R − q_α, 0)] / α.

    q_α is the empirical α-quantile (:func:`quantiles`); for α·n an integer this equals the mean
    of the α·n smallest returns. Lower = a heavier bad tail.

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n returns along ``axis``.
    alpha : float in (0, 1].

    Returns
    -------
    array of shape ``(...)``.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], not {alpha}")
    v = _last(x, axis)
    q = np.quantile(v, alpha, axis=-1)
    return q + np.minimum(v - q[..., None], 0.0).mean(axis=-1) / alpha


def ltp(x: Any, *, fraction: float = 0.5, reference: Any = None, bins: int = 100, axis: int = -1) -> np.ndarray:
    """Left-tail probability: P(R < fraction · m), m = the histogram mode of R (:func:`histogram_mode`),
    or ``reference`` when given (e.g. the return before the update).

    A threshold that is a fraction of m only reads as "much worse than usual" when m > 0: where
    m ≤ 0 the result is NaN and a :class:`RuntimeWarning` is issued.

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n returns along ``axis``.
    fraction : float
        The threshold as a fraction of m (0.5 in seed 002).
    reference : float or array of shape ``(...)``, optional
        m itself instead of the mode.
    bins : int
        Bins of the mode's histogram.

    Returns
    -------
    array of shape ``(...)``, each in [0, 1] or NaN.
    """
    v = _last(x, axis)
    m = histogram_mode(v, bins=bins) if reference is None else np.broadcast_to(np.asarray(reference, np.float64), v.shape[:-1])
    p = (v < fraction * m[..., None]).mean(axis=-1)
    bad = ~(m > 0)
    if np.any(bad):
        what = "mode" if reference is None else "reference return"
        warnings.warn(f"LTP is undefined where the {what} is ≤ 0 ({int(np.sum(bad))} of {bad.size}): NaN there",
                      RuntimeWarning, stacklevel=2)
        p = np.where(bad, np.nan, p)
    return np.asarray(p, np.float64)


def bootstrap_ci(
    x: Any,
    statistic: Statistic = np.mean,
    *,
    axis: int = -1,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    groups: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of ``statistic``.

    Each resample draws n samples with replacement along ``axis`` (the same indices for every other
    axis); with ``groups`` it draws whole groups instead (a cluster bootstrap: as many groups as
    there are, with replacement, each bringing all its samples), which is right when the samples
    of one group are not independent (trials of one checkpoint).

    Parameters
    ----------
    x : array, shape ``(..., n, ...)`` with the n samples along ``axis``.
    statistic : callable ``statistic(a, axis=-1)`` reducing the last axis of ``a`` (shape
        ``(..., B, n)`` for the ordinary bootstrap, ``(..., m)`` for a cluster resample of m
        samples) — e.g. ``np.mean``, ``np.median``,
        :func:`cvar`, :func:`histogram_mode`, ``functools.partial(cvar, alpha=0.05)``.
    n_resamples : int
        B, the number of bootstrap resamples.
    confidence : float in (0, 1)
        0.95: the 2.5 % and 97.5 % percentiles of the B resampled statistics.
    rng : numpy Generator or int seed
        The source of the resampling indices (seeded: the same call gives the same interval).
    groups : array of shape ``(n,)``, optional
        Group label of each sample along ``axis``.

    Returns
    -------
    (low, high) : arrays of shape ``(...)``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    v = _last(x, axis)
    n = v.shape[-1]
    if groups is None:
        idx = gen.integers(0, n, size=(n_resamples, n))
        stats = np.asarray(statistic(v[..., idx], axis=-1))  # (..., B)
        stats = np.moveaxis(stats, -1, 0)
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have one label per sample, shape ({n},), not {g.shape}")
        members = [np.flatnonzero(g == u) for u in np.unique(g)]
        picks = gen.integers(0, len(members), size=(n_resamples, len(members)))
        stats = np.stack([np.asarray(statistic(v[..., np.concatenate([members[k] for k in row])], axis=-1))
                          for row in picks])
    tail = 50 * (1 - confidence)
    low, high = np.percentile(stats, [tail, 100 - tail], axis=0)
    return low, high


@dataclass(frozen=True)
class WelchResult:
    """Welch's t-test of mean(x) − mean(y): statistic ``t``, Welch–Satterthwaite ``df``, two-sided ``p``."""

    t: float
    df: float
    p: float


def welch_t_test(x: Any, y: Any) -> WelchResult:
    """Welch's unequal-variance t-test of H0: E[x] = E[y], two-sided.

    t = (x̄ − ȳ) / √(s_x²/n_x + s_y²/n_y), df = (s_x²/n_x + s_y²/n_y)² /
    ((s_x²/n_x)²/(n_x − 1) + (s_y²/n_y)²/(n_y − 1)); equal to
    ``scipy.stats.ttest_ind(x, y, equal_var=False)``. NaN values are dropped first.

    Parameters
    ----------
    x : array of shape ``(n_x,)``, y : array of shape ``(n_y,)``.

    Returns
    -------
    WelchResult; all NaN (with a :class:`RuntimeWarning`) when a group has fewer than 2 samples,
    or when both groups have zero variance.
    """
    from scipy.special import stdtr

    a = np.asarray(x, np.float64).ravel()
    b = np.asarray(y, np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    nan = WelchResult(math.nan, math.nan, math.nan)
    if a.size < 2 or b.size < 2:
        warnings.warn(f"Welch's t-test needs at least 2 samples in each group, got {a.size} and {b.size}: NaN",
                      RuntimeWarning, stacklevel=2)
        return nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        warnings.warn("Welch's t-test: both groups have zero variance: NaN", RuntimeWarning, stacklevel=2)
        return nan
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    p = 2.0 * float(stdtr(df, -abs(t)))
    return WelchResult(float(t), float(df), p)
