"""Correlation of a landscape statistic with the generalisation gap across an ensemble, with bootstrap CIs.

For paired values ``(x_r, y_r)`` over runs ``r`` (NaN pairs dropped): Pearson's ``r`` (linear) and
Spearman's ``ρ`` (Pearson of the ranks: 1 for any strictly increasing relation). The confidence intervals
are percentile bootstrap intervals: ``n_boot`` resamples of the runs with replacement (seeded), the
coefficient recomputed on each (resamples where a variable is constant give no value and are skipped),
and the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from trajkit.errors import AnalysisError


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson coefficient of ``x, y [B, n]`` (NaN where a row is constant)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


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
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    for name, fx, fy in (("pearson", x, y),
                         ("spearman", stats.rankdata(x), stats.rankdata(y))):
        out[name] = float(_pearson(fx[None], fy[None])[0])
        if name == "pearson":
            boot = _pearson(x[idx], y[idx])
        else:
            boot = _pearson(stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1))
        boot = boot[np.isfinite(boot)]
        if boot.size:
            out[f"{name}_ci"] = [float(v) for v in np.percentile(boot, q)]
    return out
