"""trajkit.analysis.stats against analytic values: replica means and standard errors, the replica
bootstrap (its standard error, its interval's coverage of a known mean, stratified groups), percentile
intervals and log-log slopes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from trajkit.analysis.stats import (
    bootstrap_sem,
    log_log_slope,
    percentile_interval,
    replica_bootstrap,
    replica_mean_sem,
    window_slope,
)


def test_replica_mean_sem_is_the_nan_aware_textbook_formula():
    v = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 4.0, 7.0]])  # [R=3, 3]
    mean, sem = replica_mean_sem(v)
    np.testing.assert_allclose(mean[:2], [3.0, 3.0])
    assert mean[2] == 7.0
    assert sem[0] == pytest.approx(2.0 / np.sqrt(3))            # std(1, 3, 5; ddof=1) = 2
    assert sem[1] == pytest.approx(np.sqrt(2.0) / np.sqrt(2))   # std(2, 4; ddof=1) = √2
    assert np.isnan(sem[2])                                      # one replica: no standard error


def test_log_log_slope_of_an_exact_power_law():
    x = np.logspace(0, 3, 12)
    slope, intercept, (lo, hi) = log_log_slope(x, 3.0 * x**-1.5)
    assert slope == pytest.approx(-1.5, abs=1e-12)
    assert intercept == pytest.approx(np.log(3.0), abs=1e-12)
    assert lo == pytest.approx(-1.5, abs=1e-9) and hi == pytest.approx(-1.5, abs=1e-9)
    s, ci, n = window_slope(x, 3.0 * x**-1.5, (10.0, 1000.0))
    assert ci == pytest.approx((-1.5, -1.5), abs=1e-9)
    assert s == pytest.approx(-1.5) and n == int(np.sum((x >= 10) & (x <= 1000)))
    assert np.isnan(log_log_slope([1.0, 2.0], [1.0, 4.0])[2][0])   # two points: a slope, no interval
    assert np.isnan(log_log_slope([1.0], [1.0])[0])
    assert np.isnan(log_log_slope([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])[0])  # no spread in x: no slope


def test_log_log_slope_interval_covers_the_true_exponent_at_its_level():
    rng = np.random.default_rng(0)
    x = np.logspace(0, 2, 15)
    hits = 0
    trials = 400
    for _ in range(trials):
        y = 2.0 * x**0.7 * np.exp(0.2 * rng.standard_normal(x.size))
        _, _, (lo, hi) = log_log_slope(x, y, level=0.9)
        hits += lo <= 0.7 <= hi
    assert 0.85 <= hits / trials <= 0.95   # nominal 0.9; binomial sd 0.015


def test_bootstrap_standard_error_of_a_mean_is_sigma_over_root_r():
    rng = np.random.default_rng(1)
    v = rng.normal(1.0, 2.0, 400)
    boot = replica_bootstrap(lambda i: v[i].mean(), v.size, n_boot=2000, seed=3)
    assert boot.shape == (2000,)
    # the bootstrap SE of a mean is the plug-in std / √R (ddof = 0), up to Monte-Carlo error ~ 1/√(2B)
    assert bootstrap_sem(boot) == pytest.approx(v.std() / np.sqrt(v.size), rel=0.05)


def test_percentile_interval_covers_a_known_mean_at_about_its_level():
    rng = np.random.default_rng(2)
    hits, trials = 0, 200
    for t in range(trials):
        v = rng.normal(1.0, 2.0, 30)
        lo, hi = percentile_interval(replica_bootstrap(lambda i, v=v: v[i].mean(), 30, 300, seed=t), 0.9)
        hits += lo <= 1.0 <= hi
    assert 0.82 <= hits / trials <= 0.96   # nominal 0.9 (the percentile bootstrap under-covers a little at R=30)


def test_stratified_bootstrap_resamples_each_group_on_its_own():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.0, 1.0, 300), rng.normal(5.0, 3.0, 200)
    seen_sizes = set()

    def diff(i, j):
        seen_sizes.add((i.size, j.size))
        assert i.max() < a.size and j.max() < b.size
        return [b[j].mean() - a[i].mean(), a[i].mean()]

    boot = replica_bootstrap(diff, [a.size, b.size], n_boot=1500, seed=0)
    assert boot.shape == (1500, 2) and seen_sizes == {(300, 200)}
    want = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert bootstrap_sem(boot[:, 0]) == pytest.approx(want, rel=0.06)
    np.testing.assert_allclose(bootstrap_sem(boot), [bootstrap_sem(boot[:, 0]), bootstrap_sem(boot[:, 1])])


def test_the_bootstrap_is_reproducible_and_seeded():
    v = np.arange(10.0) ** 2
    one = replica_bootstrap(lambda i: v[i].mean(), 10, 50, seed=7)
    np.testing.assert_array_equal(one, replica_bootstrap(lambda i: v[i].mean(), 10, 50, seed=7))
    assert not np.array_equal(one, replica_bootstrap(lambda i: v[i].mean(), 10, 50, seed=8))
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(one, replica_bootstrap(lambda i: v[i].mean(), 10, 50, seed=gen))


def test_percentile_interval_is_scipys_percentile_interval_and_drops_undefined_values():
    v = np.random.default_rng(5).exponential(1.0, 25)
    res = sps.bootstrap((v,), np.mean, n_resamples=400, method="percentile", confidence_level=0.8,
                        rng=np.random.default_rng(11))
    lo, hi = percentile_interval(res.bootstrap_distribution, 0.8)
    assert (lo, hi) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)
    with_nan = np.concatenate([res.bootstrap_distribution, [np.nan, np.inf]])
    assert percentile_interval(with_nan, 0.8) == pytest.approx((lo, hi))
    assert all(np.isnan(percentile_interval(np.array([1.0, np.nan]))))
    grid = np.stack([np.linspace(0, 1, 101), np.full(101, np.nan)], axis=1)       # [B, 2]
    glo, ghi = percentile_interval(grid, 0.9)
    assert glo[0] == pytest.approx(0.05) and ghi[0] == pytest.approx(0.95) and np.isnan(glo[1])


def test_bootstrap_needs_two_replicas_and_one_resample():
    with pytest.raises(ValueError, match="at least 2 replicas"):
        replica_bootstrap(lambda i: 0.0, [3, 1], 10)
    with pytest.raises(ValueError, match="n_boot"):
        replica_bootstrap(lambda i: 0.0, 3, 0)
