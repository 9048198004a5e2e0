"""Correlation of a landscape statistic with the generalisation gap across an ensemble, with bootstrap CIs.

For paired values ``(x_r, y_r)`` over runs ``r`` (NaN pairs dropped): Pearson's ``r`` (linear) and
Spearman's ``ρ`` (Pearson of the ranks: 1 for any strictly increasing relation). The confidence intervals
are percentile bootstrap intervals: ``n_boot`` resamples of the runs with replacement (seeded;
:func:`scipy.stats.bootstrap` with ``paired=True``), the coefficient recomputed on each (resamples where a
variable is constant give no value and are skipped), and the ``(1 − level)/2`` and ``(1 + level)/2``
quantiles of the rest reported (as :func:`trajkit.analysis.stats.percentile_interval`; this layer does not
import the analysis core).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from trajkit.errors import AnalysisError


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson coefficient of ``x, y [..., n]`` along ``axis`` (NaN where a row is constant)."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis) * (yc * yc).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis) / np.where(den > 0, den, 1.0), np.nan)


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's ρ: the Pearson coefficient of the ranks along ``axis``."""
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def correlate(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, level: float = 0.95,
              seed: int | np.random.Generator | None = 0) -> dict[str, Any]:
    """``{"pearson", "pearson_ci", "spearman", "spearman_ci", "n"}`` for paired samples ``x, y [R]``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise AnalysisError(f"correlation: {x.size} values against {y.size}; they must be paired")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    out: dict[str, Any] = {"n": int(x.size), "pearson": nan, "pearson_ci": [nan, nan],
                           "spearman": nan, "spearman_ci": [nan, nan]}
    if x.size < 3:
        return out
    rng = np.random.default_rng(seed)
    for name, coefficient in (("pearson", _pearson), ("spearman", _spearman)):
        out[name] = float(coefficient(x, y))
        with warnings.catch_warnings():  # constant resamples give NaN, dropped below; scipy may warn on them
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap((x, y), coefficient, paired=True, vectorized=True, n_resamples=int(n_boot),
                                  method="percentile", rng=rng)
        boot = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
        if boot.size >= 2:
            out[f"{name}_ci"] = [float(v) for v in np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])]
    return out
