"""Dynamic susceptibility χ4: sample-to-sample fluctuations of the self-overlap.

``χ4(tw, t) = N [⟨Q²⟩ − ⟨Q⟩²]`` where ``⟨·⟩`` averages over samples of ``Q(tw, tw+t)`` — the replicas at
fixed ``tw`` (population variance, ``ddof = 0``, exactly as written), or, as an option, replicas × time
origins in a stationary window at fixed lag. Errors: bootstrap over replicas (resample replicas with
replacement, recompute χ4; the standard error is the standard deviation of the bootstrap replicates).
The peak ``χ4* = max_t χ4(tw, t)`` and its lag ``τ4`` (refined by a parabola through the three points
around the maximum in ``ln t`` when the maximum is interior).
"""

from __future__ import annotations

import numpy as np


def chi4(q: np.ndarray, n: int) -> np.ndarray:
    """``N·var(Q)`` over axis 0 (samples): ``q [S, ...]`` → ``[...]``; NaN where any sample is NaN."""
    q = np.asarray(q, dtype=float)
    return float(n) * np.var(q, axis=0)


def chi4_bootstrap(q: np.ndarray, n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of χ4: resample axis 0 of ``q [R, ...]`` → ``[n_boot, ...]``."""
    q = np.asarray(q, dtype=float)
    r = q.shape[0]
    idx = rng.integers(0, r, size=(n_boot, r))
    return np.stack([chi4(q[i], n) for i in idx])


def chi4_peak(lags: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``(χ4*, τ4)`` of one curve ``values [T]`` at ``lags [T]`` (lags > 0 and finite values only)."""
    lags = np.asarray(lags, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = (lags > 0) & np.isfinite(values)
    lags, values = lags[ok], values[ok]
    if values.size == 0:
        return float("nan"), float("nan")
    j = int(np.argmax(values))
    if 0 < j < values.size - 1:
        x = np.log(lags[j - 1:j + 2])
        y = values[j - 1:j + 2]
        a, b, c = np.polyfit(x, y, 2)
        if a < 0:
            xm = -b / (2 * a)
            if x[0] <= xm <= x[2]:
                return float(max(values[j], c - b * b / (4 * a))), float(np.exp(xm))
    return float(values[j]), float(lags[j])
