"""Relaxation times, τ(T), and time–temperature superposition.

- ``τ_c(tw)`` (:func:`relaxation_time`): the first lag ``t`` with ``Q(tw, tw+t) < c·Q(tw, tw)``, linearly
  interpolated in ``t`` between the two snapshots that bracket the crossing. It is *unresolved* when the
  curve is already below ``c·Q(tw,tw)`` at the first snapshot after ``tw`` (the crossing falls before
  the second snapshot after ``tw``: flag −1, "faster than the schedule resolves") or never drops below
  it (flag +1, "slower than the run"); unresolved times are NaN, never numbers.
- ``τ(T)`` (:func:`log_log_slope`): slope of ``ln τ`` vs ``ln T`` over a range of (high) temperatures;
  for overdamped Langevin on a flat loss ``D = Tη/P`` and the slope is −1.
- Time–temperature superposition: ``Q(t)`` at each temperature against ``t/τe(T)``; the power-law
  exponent is the slope of ``ln Q`` vs ``ln(t/τe)`` over a window (default ``1 ≤ t/τe ≤ 10³``) at the
  highest temperature (−1/2 for diffusion, where ``Q ≈ ε/sqrt(πDt)``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Flag values of :func:`relaxation_time`.
RESOLVED, TOO_FAST, TOO_SLOW = 0, -1, 1


def relaxation_time(lags: np.ndarray, q: np.ndarray, c: float, q0: float | None = None) -> tuple[float, int]:
    """``(τ_c, flag)`` for one curve ``q [T]`` at lags ``lags [T]`` (``lags > 0``, increasing).

    ``q0`` is ``Q(tw, tw)`` (default 1, the value of the self-overlap at zero lag). Non-finite entries of
    ``q`` are skipped. Flag 0: resolved; −1: already below at the first lag (unresolved, too fast);
    +1: never below (unresolved, too slow). τ is NaN unless resolved.
    """
    lags = np.asarray(lags, dtype=float)
    q = np.asarray(q, dtype=float)
    ok = np.isfinite(q) & (lags > 0)
    lags, q = lags[ok], q[ok]
    level = c * (1.0 if q0 is None else float(q0))
    below = np.flatnonzero(q < level)
    if below.size == 0:
        return float("nan"), TOO_SLOW
    j = int(below[0])
    if j == 0:
        return float("nan"), TOO_FAST
    t0, t1, y0, y1 = lags[j - 1], lags[j], q[j - 1], q[j]
    return float(t0 + (level - y0) * (t1 - t0) / (y1 - y0)), RESOLVED


def relaxation_times(tw_steps: np.ndarray, steps: np.ndarray, q: np.ndarray, thresholds: np.ndarray,
                     q0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``τ [K, C]`` and ``flag [K, C]`` (int8) for two-time curves ``q [K, T]`` on ``steps [T]``.

    Row k uses the snapshots with ``step > tw_steps[k]`` at lags ``step − tw``; ``q0 [K]`` defaults to 1.
    """
    tw_steps = np.asarray(tw_steps)
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    tau = np.full((tw_steps.size, thresholds.size), np.nan)
    flag = np.zeros((tw_steps.size, thresholds.size), dtype=np.int8)
    for k, tw in enumerate(tw_steps):
        after = steps > tw
        for i, c in enumerate(thresholds):
            tau[k, i], flag[k, i] = relaxation_time(steps[after] - tw, q[k, after], c,
                                                    None if q0 is None else q0[k])
    return tau, flag


def log_log_slope(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """Least-squares slope of ``ln y`` vs ``ln x`` over the finite positive points.

    Returns ``(slope, intercept, (lo, hi))`` with the Student-t confidence interval at ``level`` from the
    regression's standard error (NaN interval with fewer than 3 points; NaN slope with fewer than 2).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan"), (float("nan"), float("nan"))
    fit = stats.linregress(np.log(x[ok]), np.log(y[ok]))
    if ok.sum() < 3:
        return float(fit.slope), float(fit.intercept), (float("nan"), float("nan"))
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


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite ``samples`` (NaN when fewer than 2)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
