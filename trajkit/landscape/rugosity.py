"""Named statistics of the landscape probes (:mod:`trajkit.landscape.probes`) around a minimum.

Profiles ``L [D, P]`` at offsets ``t [P]`` on ``[−r, r]`` (centre ``L0 = L(w0)`` at ``t = 0``):

- **sharpness** (:func:`sharpness`) — the mean loss rise at radius ``r``:
  ``S(r) = (1/2D) Σ_j [L(w0 + r d_j) + L(w0 − r d_j)] − L0``.
  For ``L = ½ (w − w0)ᵀ H (w − w0)`` and uniformly random unit directions (``normalization="unit"``)
  ``E[uᵀHu] = tr(H)/N``, so ``E S(r) = ½ r² tr(H)/N``. With per-tensor normalisation (``"layer"``:
  ``|d_t| = |w0_t|``) and ``H`` block-diagonal, ``E S(r) = ½ r² Σ_t |w0_t|² tr(H_t)/n_t``.
- **rugosity** (:func:`rugosity`) — the arc length of the profile over its chord, as the surface-metrology
  ratio of developed to projected length, computed on each half-ray from the minimum (``t ∈ [0, r]`` and
  ``[−r, 0]``) and averaged over half-rays and directions:
  ``ρ = Σ_i sqrt(Δt_i² + ΔL_i²) / sqrt(r² + (L(±r) − L0)²)``. ``ρ = 1`` for a straight profile and grows with
  wiggles. The ratio mixes the units of ``t`` (the probe's normalisation) and of the loss, so compare
  ``ρ`` across runs at one radius, normalisation and number of points, as this statistic is used here.

Random walks ``L [n_delta, walks, steps+1]`` with step sizes ``δ [n_delta]``:

- **increment variance** (:func:`increment_variance`) — ``V(δ) = Var(L_{k+1} − L_k)`` pooled over steps and
  walks, float64 ``[n_delta]``; and its log–log slope (:func:`increment_exponent`),
  ``V ∝ δ^γ``: ``γ = 2`` for a smooth landscape probed away from a critical point, ``γ = 4`` for a walk
  started at the bottom of a quadratic bowl (the gradient itself grows like ``δ``), smaller for rough ones.
- **autocorrelation length** (:func:`autocorrelation_length`) — each walk's loss series is detrended (least-
  squares line in ``k``, which removes the mean drift up the bowl), its normalised autocorrelation
  ``C(ℓ) = Σ_k x_k x_{k+ℓ} / Σ_k x_k²`` computed, and the first lag where ``C`` falls below ``1/e`` (linear
  interpolation between lags) converted to a distance ``ℓ_e · δ``; averaged over walks, ``[n_delta]``.
  An AR(1) series ``x_{k+1} = φ x_k + noise`` has ``C(ℓ) = φ^ℓ``, so ``ℓ_e = −1/ln φ`` steps.
"""

from __future__ import annotations

import numpy as np

from trajkit.errors import AnalysisError


def _centre(t: np.ndarray) -> int:
    t = np.asarray(t)
    c = int(np.argmin(np.abs(t)))
    if t[c] != 0:
        raise AnalysisError("probe offsets do not contain t = 0; use an odd number of points")
    return c


def sharpness(t: np.ndarray, losses: np.ndarray) -> float:
    """``S(r)``: mean of ``L(±r)`` over directions minus ``L0`` (``losses [D, P]`` at offsets ``t [P]``)."""
    losses = np.asarray(losses, dtype=np.float64)
    c = _centre(t)
    l0 = losses[:, c].mean()
    return float(0.5 * (losses[:, 0] + losses[:, -1]).mean() - l0)


def rugosity(t: np.ndarray, losses: np.ndarray) -> float:
    """``ρ``: arc length over chord of each half-ray profile, averaged (``losses [D, P]``, ``t [P]``)."""
    t = np.asarray(t, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    c = _centre(t)
    ratios = []
    for sl in (slice(c, None), slice(None, c + 1)):
        tt, ll = t[sl], losses[:, sl]
        arc = np.sqrt(np.diff(tt)[None, :] ** 2 + np.diff(ll, axis=1) ** 2).sum(axis=1)
        chord = np.sqrt((tt[-1] - tt[0]) ** 2 + (ll[:, -1] - ll[:, 0]) ** 2)
        ratios.append(arc / chord)
    return float(np.mean(ratios))


def increment_variance(losses: np.ndarray) -> np.ndarray:
    """``V(δ)`` float64 ``[n_delta]``: variance of ``L_{k+1} − L_k`` pooled over walks and steps."""
    losses = np.asarray(losses, dtype=np.float64)
    inc = np.diff(losses, axis=-1).reshape(losses.shape[0], -1)
    return inc.var(axis=1, ddof=1)


def increment_exponent(deltas: np.ndarray, variance: np.ndarray) -> float:
    """``γ``: least-squares slope of ``ln V`` against ``ln δ`` (NaN with fewer than two usable step sizes)."""
    d = np.asarray(deltas, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    ok = (d > 0) & (v > 0) & np.isfinite(v)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(d[ok]), np.log(v[ok]), 1)[0])


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation ``C(ℓ)`` float64 ``[K]`` of the linearly detrended series ``x [K]``."""
    x = np.asarray(x, dtype=np.float64)
    k = np.arange(x.size)
    x = x - np.polyval(np.polyfit(k, x, 1), k)
    n = x.size
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f), 2 * n)[:n]
    return acf / acf[0] if acf[0] > 0 else np.full(n, np.nan)


def correlation_lag(c: np.ndarray, level: float = float(np.exp(-1.0))) -> float:
    """First lag (interpolated linearly) where ``c`` falls below ``level``; NaN if it never does."""
    c = np.asarray(c, dtype=np.float64)
    below = np.flatnonzero(c < level)
    if below.size == 0 or not np.isfinite(c[0]):
        return float("nan")
    j = int(below[0])
    if j == 0:
        return 0.0
    return float(j - 1 + (c[j - 1] - level) / (c[j - 1] - c[j]))


def autocorrelation_length(deltas: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """``ℓ_e·δ`` float64 ``[n_delta]``: 1/e length of the detrended loss along the walks (distance units)."""
    losses = np.asarray(losses, dtype=np.float64)
    out = np.empty(losses.shape[0])
    for a, delta in enumerate(np.asarray(deltas, dtype=np.float64)):
        lags = [correlation_lag(autocorrelation(series)) for series in losses[a]]
        out[a] = np.nanmean(lags) * delta if np.any(np.isfinite(lags)) else np.nan
    return out
