"""Statistics over replicas that every analysis shares: means with standard errors, the replica
bootstrap, percentile intervals and log-log slopes.

- :func:`replica_mean_sem`: ``mean = (1/R') Σ_r v_r`` and ``sem = s/√R'`` over the R' replicas with a
  finite value (``s`` the sample standard deviation, ``ddof = 1``); NaN where R' < 2.
- :func:`replica_bootstrap`: the bootstrap distribution of a statistic of the replicas. Each of
  ``n_boot`` resamples draws R replica indices with replacement (from every group independently when
  there are several: a stratified bootstrap), and the statistic is recomputed on them. The resampling is
  :func:`scipy.stats.bootstrap` (``paired=False``, seeded ``rng``); the statistic receives *index*
  arrays, so it may be any function of whole replicas (a refit, a crossing time, a variance).
- :func:`percentile_interval`: the percentile interval ``[q_{(1−level)/2}, q_{(1+level)/2}]`` of a
  bootstrap distribution, over its finite values (a resample whose statistic is undefined, e.g. a
  relaxation time never reached, is left out); with every value finite it is scipy's
  ``method="percentile"`` interval. :func:`bootstrap_sem` is the standard deviation of the
  distribution (the bootstrap standard error).
- :func:`log_log_slope`: the least-squares fit ``ln y = a ln x + b`` (:func:`scipy.stats.linregress`)
  with the Student-t interval of ``a``; :func:`window_slope` restricts it to a window of ``x``.

>>> mean, sem = replica_mean_sem(values)                              # values [R, K, T]   # doctest: +SKIP
>>> boot = replica_bootstrap(lambda i: fit(values[i].mean(0)), R, n_boot=200, seed=0)  # doctest: +SKIP
>>> lo, hi = percentile_interval(boot, level=0.95)                                       # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats


def replica_mean_sem(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over replicas (``axis``, NaN-aware): ``[R, ...]`` → two ``[...]`` arrays.

    The standard error is ``std(ddof=1)/sqrt(R')`` over the R' finite values; NaN where R' < 2.
    """
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=axis)
        count = np.sum(np.isfinite(v), axis=axis)
        sem = np.where(count >= 2, np.nanstd(v, axis=axis, ddof=1) / np.sqrt(np.maximum(count, 1)), np.nan)
    return mean, sem


def replica_bootstrap(statistic: Callable[..., Any], replicas: int | Sequence[int], n_boot: int,
                      seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Bootstrap distribution ``[n_boot, ...]`` of ``statistic`` over resampled replicas.

    ``replicas`` is R (one group: ``statistic(idx)`` with ``idx`` int ``[R]``) or ``[R_1, ..., R_G]``
    (``statistic(idx_1, ..., idx_G)``, each group resampled on its own). The statistic returns a float
    or an array of any fixed shape ``[...]`` (NaN where undefined). Every group needs R ≥ 2. Seeded by
    ``seed`` (an int or a ``numpy.random.Generator``), so a result is reproducible.
    """
    sizes = [int(r) for r in np.atleast_1d(replicas)]
    if min(sizes) < 2:
        raise ValueError(f"the replica bootstrap needs at least 2 replicas per group, got {sizes}")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}: the bootstrap needs at least one resample")

    def as_float(*idx: np.ndarray) -> np.ndarray:
        return np.asarray(statistic(*idx), dtype=np.float64)

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    with warnings.catch_warnings():  # the interval is ours (NaN-aware); scipy's own may warn on NaN
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(tuple(np.arange(r) for r in sizes), as_float, n_resamples=int(n_boot),
                              vectorized=False, paired=False, method="percentile", rng=rng)
    return np.moveaxis(np.asarray(res.bootstrap_distribution, dtype=np.float64), -1, 0)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[Any, Any]:
    """Percentile interval of a bootstrap distribution ``[B, ...]`` over its finite values along axis 0.

    Returns ``(lo, hi)``: floats for 1-D ``samples``, arrays ``[...]`` otherwise; NaN where fewer than two
    values are finite.
    """
    s = np.asarray(samples, dtype=float)
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    if s.ndim == 1:
        s = s[np.isfinite(s)]
        if s.size < 2:
            return float("nan"), float("nan")
        lo, hi = np.percentile(s, q)
        return float(lo), float(hi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(np.where(np.isfinite(s), s, np.nan), q, axis=0)
    few = np.sum(np.isfinite(s), axis=0) < 2
    return np.where(few, np.nan, lo), np.where(few, np.nan, hi)


def bootstrap_sem(samples: np.ndarray) -> Any:
    """Bootstrap standard error: the standard deviation (``ddof = 1``) of the finite values along axis 0."""
    s = np.asarray(samples, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanstd(np.where(np.isfinite(s), s, np.nan), axis=0, ddof=1)
    return float(out) if np.ndim(out) == 0 else out


def log_log_slope(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """Least-squares slope of ``ln y`` vs ``ln x`` over the finite positive points.

    Returns ``(slope, intercept, (lo, hi))`` with the Student-t confidence interval at ``level`` from the
    regression's standard error (NaN interval with fewer than 3 points; NaN slope with fewer than 2).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    nan = float("nan")
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return nan, nan, (nan, nan)
    fit = stats.linregress(np.log(x[ok]), np.log(y[ok]))
    if ok.sum() < 3:
        return float(fit.slope), float(fit.intercept), (nan, nan)
    half = stats.t.ppf(0.5 + level / 2, ok.sum() - 2) * fit.stderr
    return float(fit.slope), float(fit.intercept), (float(fit.slope - half), float(fit.slope + half))


def window_slope(x: np.ndarray, y: np.ndarray, window: tuple[float, float],
                 level: float = 0.95) -> tuple[float, tuple[float, float], int]:
    """Slope of ``ln y`` vs ``ln x`` for ``window[0] ≤ x ≤ window[1]``: ``(slope, ci, n_points)``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    inside = (x >= window[0]) & (x <= window[1]) & np.isfinite(y) & (y > 0)
    slope, _, ci = log_log_slope(x[inside], y[inside], level)
    return slope, ci, int(inside.sum())
