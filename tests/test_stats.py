"""rlscape.stats against hand-computed values and scipy (numpy only; no torch, no env)."""

from __future__ import annotations

import math
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
from scipy import stats as sps

from rlscape.stats import bootstrap_ci, cvar, histogram_mode, ltp, mean_sem, quantiles, welch_t_test


def test_mean_sem_by_hand() -> None:
    mean, sem = mean_sem([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert sem == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-12)  # sample variance 5/3 (ddof = 1)


def test_mean_sem_axis_and_one_sample() -> None:
    x = np.arange(12.0).reshape(3, 4)
    mean, sem = mean_sem(x, axis=0)
    assert mean.shape == sem.shape == (4,)
    np.testing.assert_allclose(mean, [4, 5, 6, 7])
    np.testing.assert_allclose(sem, np.full(4, 4 / math.sqrt(3)))  # rows 4 apart: std 4
    m1, s1 = mean_sem([3.0])
    assert m1 == 3.0 and np.isnan(s1)


def test_quantiles_shapes() -> None:
    x = np.arange(1.0, 11.0)
    assert float(quantiles(x, 0.2)) == pytest.approx(2.8)  # linear: 1 + 0.2·9
    q = quantiles(np.stack([x, -x]), [0.1, 0.5], axis=1)
    assert q.shape == (2, 2)
    np.testing.assert_allclose(q, [[1.9, -9.1], [5.5, -5.5]])


def test_histogram_mode_negative_returns() -> None:
    # 100 bins on [-3, 1]: width 0.04; -2.96 and -2.95 share bin 1 = [-2.96, -2.92), centre -2.94
    x = np.array([-3.0, -2.96, -2.95, -1.0, 0.0, 1.0])
    assert float(histogram_mode(x)) == pytest.approx(-2.94, abs=1e-12)
    # all negative: 3 of 4 at -5 → bin 0 of [-5, -1], centre -4.98 (floor division gave -5 or -4.99…)
    assert float(histogram_mode([-5.0, -5.0, -5.0, -1.0])) == pytest.approx(-4.98, abs=1e-12)
    assert float(histogram_mode([7.0, 7.0])) == 7.0  # one value: itself


def test_histogram_mode_axis() -> None:
    x = np.array([[-5.0, -5.0, -5.0, -1.0], [1.0, 1.0, 1.0, 5.0]])
    np.testing.assert_allclose(histogram_mode(x.T, axis=0), [-4.98, 1.02], atol=1e-12)


def test_cvar_by_hand() -> None:
    x = np.arange(1.0, 11.0)
    # q_0.2 = 2.8; E[min(R − 2.8, 0)] = (−1.8 − 0.8)/10 = −0.26; CVaR = 2.8 − 0.26/0.2 = 1.5 = mean(1, 2)
    assert float(cvar(x, 0.2)) == pytest.approx(1.5, abs=1e-12)
    assert float(cvar(-x, 0.2)) == pytest.approx(-9.5, abs=1e-12)  # mean(−10, −9): negative returns
    assert float(cvar(x, 1.0)) == pytest.approx(x.mean())  # α = 1: the mean
    rng = np.random.default_rng(0)
    y = rng.normal(size=1000)
    np.testing.assert_allclose(cvar(y), np.sort(y)[:100].mean(), rtol=1e-12)  # α·n integer: mean of the worst 10 %
    with pytest.raises(ValueError, match="alpha"):
        cvar(x, 0.0)


def test_ltp_mode_and_reference() -> None:
    x = np.array([1.0, 1.0, 1.0, 1.0, 10.0, 0.2, 0.3])
    # bins of width 0.098 from 0.2; the four 1.0 fall in bin 8, centre 0.2 + 8.5·0.098 = 1.033 → threshold 0.5165
    assert float(histogram_mode(x)) == pytest.approx(1.033, abs=1e-12)
    assert float(ltp(x)) == pytest.approx(2 / 7)
    assert float(ltp(x, reference=4.0)) == pytest.approx(6 / 7)  # threshold 2: six returns below
    assert float(ltp(x, reference=4.0, fraction=0.25)) == pytest.approx(2 / 7)


def test_ltp_nan_when_mode_not_positive() -> None:
    with pytest.warns(RuntimeWarning, match="mode is ≤ 0"):
        assert np.isnan(ltp([-3.0, -2.0, -2.0, -1.0]))
    with pytest.warns(RuntimeWarning, match="reference return is ≤ 0"):
        assert np.isnan(ltp([0.0, 0.0, 1.0], reference=0.0))  # exactly 0
    with pytest.warns(RuntimeWarning, match="reference return"):
        assert np.isnan(ltp([1.0, 2.0], reference=-1.0))
    x = np.array([[1.0, 1.0, 0.1], [-1.0, -1.0, -2.0]])
    with pytest.warns(RuntimeWarning):
        out = ltp(x)
    assert out[0] == pytest.approx(1 / 3) and np.isnan(out[1])


def test_welch_by_hand_and_scipy() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    res = welch_t_test(x, y)
    va, vb = (5 / 3) / 4, 10 / 5  # s²/n
    assert res.t == pytest.approx(-3.5 / math.sqrt(va + vb), rel=1e-12)
    assert res.df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 4), rel=1e-12)
    ref = sps.ttest_ind(x, y, equal_var=False)
    assert res.t == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-10)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.normal(0, 1, 7), rng.normal(0.5, 3, 11) - 100  # negative values, unequal variances
        ref = sps.ttest_ind(a, b, equal_var=False)
        got = welch_t_test(a, b)
        assert (got.t, got.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-10)


def test_welch_too_few_samples() -> None:
    with pytest.warns(RuntimeWarning, match="at least 2 samples"):
        res = welch_t_test([1.0], [1.0, 2.0, 3.0])
    assert math.isnan(res.t) and math.isnan(res.df) and math.isnan(res.p)
    with pytest.warns(RuntimeWarning, match="at least 2 samples"):
        assert math.isnan(welch_t_test([1.0, np.nan], [1.0, 2.0]).p)  # NaN dropped → one sample


def test_bootstrap_by_hand() -> None:
    # two samples {0, 1}: the resampled mean is 0, ½, 1 with probability ¼, ½, ¼ → 95 % CI [0, 1]
    lo, hi = bootstrap_ci([0.0, 1.0], n_resamples=4000, rng=1)
    assert (float(lo), float(hi)) == (0.0, 1.0)
    lo, hi = bootstrap_ci([2.5, 2.5, 2.5], n_resamples=50)
    assert float(lo) == float(hi) == 2.5


def test_bootstrap_cluster_resamples_groups() -> None:
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # by sample: mean = Binomial(6, ½)/6 → 2.5 % / 97.5 % percentiles 1/6 and 5/6 (P(≤0) = 1/64 < 2.5 %)
    lo, hi = bootstrap_ci(x, n_resamples=4000, rng=2)
    assert (float(lo), float(hi)) == pytest.approx((1 / 6, 5 / 6))
    # by group: two groups of identical samples behave like two samples → [0, 1], wider
    lo, hi = bootstrap_ci(x, n_resamples=4000, rng=2, groups=[7, 7, 7, 9, 9, 9])
    assert (float(lo), float(hi)) == (0.0, 1.0)


def test_bootstrap_seeded_axis_and_statistics() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, size=(400, 3))
    a = bootstrap_ci(x, axis=0, rng=5)
    b = bootstrap_ci(x, axis=0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (3,)
    mean, sem = mean_sem(x, axis=0)
    # percentile CI of the mean ≈ mean ± 1.96·SEM; its endpoints vary by ~SEM·√(p(1−p)/B)/φ(1.96) ≈ 0.08·SEM at B = 1000
    np.testing.assert_allclose(a[0], mean - 1.96 * sem, atol=0.3 * sem.max())
    np.testing.assert_allclose(a[1], mean + 1.96 * sem, atol=0.3 * sem.max())
    lo, hi = bootstrap_ci(x[:, 0], partial(cvar, alpha=0.1), n_resamples=200)
    assert lo < float(cvar(x[:, 0])) < hi
    lo, hi = bootstrap_ci(x[:, 0], histogram_mode, n_resamples=50)
    assert lo <= hi


def test_stats_imports_no_torch_or_gymnasium() -> None:
    code = "import sys, rlscape.stats; print(any(m in sys.modules for m in ('torch', 'gymnasium')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
