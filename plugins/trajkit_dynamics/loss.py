"""Loss dynamics: power-law approach, learning times, critical width.

- Power law (:func:`fit_power_law`): ``L(t) ≈ L∞ + A t^−β`` fitted by least squares on ``ln L`` (relative
  errors, so the late tail counts as much as the early decay) with ``L∞ ≥ 0``, ``A > 0``,
  ``0 < β ≤ 10``. The start comes from a profile over β (for fixed β the model is linear in L∞ and A);
  ``scipy.optimize.curve_fit`` refines it; intervals are ``± z·σ`` from its covariance (a bootstrap over
  replicas replaces them in the plugin when there are replicas).
- Learning time (:func:`learning_times`): ``t_learn(ℓ) = min{t : L(t) ≤ ℓ}``, interpolated between the two
  snapshots that bracket the first crossing (linearly in ``ln t``, ``ln L``); a threshold never reached is
  NaN with ``reached = False`` — reported, never fitted.
- Critical width (:func:`fit_critical_width`): ``t_learn = A/(w − w_c)``, i.e. ``1/t_learn`` linear in ``w``
  with root ``w_c``; its interval by the delta method from the regression covariance (Student t).
  :func:`extrapolate_to_zero` fits ``w_c(ℓ)`` linearly in ``ℓ`` and reports the intercept ``w_c(0)``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def _model_log(t: np.ndarray, loss_inf: float, amplitude: float, beta: float) -> np.ndarray:
    return np.log(loss_inf + amplitude * t ** (-beta))


def fit_power_law(t: np.ndarray, loss: np.ndarray, window: tuple[float, float] | None = None,
                  level: float = 0.95) -> dict[str, float | tuple[float, float]]:
    """Fit ``L∞ + A t^−β`` to ``loss [T]`` at steps ``t [T]`` (points with ``t > 0``, ``L > 0`` inside
    ``window``). Returns ``loss_inf, amplitude, beta`` and ``*_ci`` intervals, ``n_points``; NaN when fewer
    than 4 points or the fit fails."""
    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    ok = (t > 0) & np.isfinite(loss) & (loss > 0)
    if window is not None:
        ok &= (t >= window[0]) & (t <= window[1])
    t, loss = t[ok], loss[ok]
    nan = float("nan")
    out: dict[str, float | tuple[float, float]] = {
        "loss_inf": nan, "amplitude": nan, "beta": nan, "loss_inf_ci": (nan, nan), "amplitude_ci": (nan, nan),
        "beta_ci": (nan, nan), "n_points": int(t.size)}
    if t.size < 4:
        return out
    best = None
    for beta in np.geomspace(1e-2, 5.0, 120):
        x = t ** (-beta)
        design = np.stack([np.ones_like(x), x], axis=1) / loss[:, None]
        coef, *_ = np.linalg.lstsq(design, np.ones_like(x), rcond=None)
        coef = np.array([max(coef[0], 0.0), max(coef[1], 1e-12)])
        resid = np.sum((np.log(coef[0] + coef[1] * x) - np.log(loss)) ** 2)
        if best is None or resid < best[0]:
            best = (resid, coef[0], coef[1], beta)
    _, l0, a0, b0 = best
    scale = float(np.max(loss))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(_model_log, t, np.log(loss), p0=(l0, a0, b0),
                                            bounds=([0.0, 1e-12 * scale, 1e-4], [np.inf, np.inf, 10.0]),
                                            max_nfev=20000)
    except (RuntimeError, ValueError):
        return out
    z = stats.norm.ppf(0.5 + level / 2)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(3, nan)
    for name, v, e in zip(("loss_inf", "amplitude", "beta"), popt, err, strict=True):
        out[name] = float(v)
        out[f"{name}_ci"] = (float(v - z * e), float(v + z * e))
    return out


def learning_times(t: np.ndarray, loss: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t_learn [C], reached [C])`` for each threshold ℓ: first crossing of ``L ≤ ℓ``, interpolated."""
    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    out = np.full(thresholds.size, np.nan)
    reached = np.zeros(thresholds.size, dtype=bool)
    finite = np.isfinite(loss)
    t, loss = t[finite], loss[finite]
    for i, ell in enumerate(thresholds):
        below = np.flatnonzero(loss <= ell)
        if below.size == 0:
            continue
        j = int(below[0])
        reached[i] = True
        if j == 0:
            out[i] = t[0]
            continue
        t0, t1, l0, l1 = t[j - 1], t[j], loss[j - 1], loss[j]
        if min(t0, t1, l0, l1, ell) > 0:
            f = (np.log(ell) - np.log(l0)) / (np.log(l1) - np.log(l0)) if l1 != l0 else 1.0
            out[i] = float(np.exp(np.log(t0) + f * (np.log(t1) - np.log(t0))))
        else:
            f = (ell - l0) / (l1 - l0) if l1 != l0 else 1.0
            out[i] = float(t0 + f * (t1 - t0))
    return out, reached


def fit_critical_width(widths: np.ndarray, t_learn: np.ndarray,
                       level: float = 0.95) -> dict[str, float | tuple[float, float]]:
    """Fit ``1/t_learn = (w − w_c)/A`` over the widths whose threshold was reached.

    Returns ``w_c``, ``w_c_ci`` (delta method, NaN with fewer than 3 points), ``w_c_se``, ``amplitude``
    (A) and ``n_points``."""
    w = np.asarray(widths, dtype=float)
    tl = np.asarray(t_learn, dtype=float)
    ok = np.isfinite(w) & np.isfinite(tl) & (tl > 0)
    w, y = w[ok], 1.0 / tl[ok]
    nan = float("nan")
    out: dict[str, float | tuple[float, float]] = {"w_c": nan, "w_c_ci": (nan, nan), "w_c_se": nan,
                                                  "amplitude": nan, "n_points": int(w.size)}
    if w.size < 2 or np.ptp(w) == 0:
        return out
    (a, b), cov = np.polyfit(w, y, 1, cov="unscaled") if w.size < 3 else np.polyfit(w, y, 1, cov=True)
    if a == 0:
        return out
    w_c = -b / a
    out.update(w_c=float(w_c), amplitude=float(1.0 / a))
    if w.size >= 3:
        grad = np.array([b / a**2, -1.0 / a])
        se = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
        half = stats.t.ppf(0.5 + level / 2, w.size - 2) * se
        out.update(w_c_se=se, w_c_ci=(float(w_c - half), float(w_c + half)))
    return out


def extrapolate_to_zero(thresholds: np.ndarray, values: np.ndarray,
                        level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Intercept at ℓ = 0 of a straight line through ``values(ℓ)`` with its Student-t interval
    (NaN interval with fewer than 3 points, NaN value with fewer than 2)."""
    x = np.asarray(thresholds, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    if x.size < 2 or np.ptp(x) == 0:
        return nan, (nan, nan)
    fit = stats.linregress(x, y)
    if x.size < 3:
        return float(fit.intercept), (nan, nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 2) * fit.intercept_stderr
    return float(fit.intercept), (float(fit.intercept - half), float(fit.intercept + half))
