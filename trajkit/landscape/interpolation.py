"""Linear interpolation between two minima and its loss barrier.

The path from ``w_a`` to ``w_b`` (optionally permutation-aligned, ``π(w_b)``) is
``w(α) = (1 − α) w_a + α w_b`` for ``α`` on a grid ``[A]`` in ``[0, 1]``; its loss profile ``L(α)`` is
evaluated with a batched loss (see :mod:`trajkit.landscape.probes`). The **barrier** is

    B = max_α L(α) − max(L(0), L(1))

``B ≈ 0`` means the two minima are linearly connected (no loss rise between them); ``B`` is never negative
when the grid contains both ends. Aligning ``w_b`` first removes the barriers that are only due to
relabelled hidden units (Entezari et al. 2021; Ainsworth et al. 2022).
"""

from __future__ import annotations

import numpy as np

from trajkit.errors import AnalysisError
from trajkit.landscape.probes import LossFn, evaluate


def alpha_grid(points: int) -> np.ndarray:
    """``points`` evenly spaced values of ``α`` on ``[0, 1]`` (``points >= 2``), float64."""
    if points < 2:
        raise AnalysisError(f"interpolation points={points}; use at least 2 (the two end points)")
    return np.linspace(0.0, 1.0, points)


def interpolation_path(loss_fn: LossFn, wa: np.ndarray, wb: np.ndarray, alphas: np.ndarray,
                       batch: int = 64) -> np.ndarray:
    """``L(α)`` float64 ``[A]`` along ``(1 − α) w_a + α w_b`` for ``alphas [A]``."""
    wa = np.asarray(wa, dtype=np.float32)
    wb = np.asarray(wb, dtype=np.float32)
    if wa.shape != wb.shape:
        raise AnalysisError(f"interpolation: end points have shapes {wa.shape} and {wb.shape}; they must "
                            "match")
    alphas = np.asarray(alphas, dtype=np.float64)
    out = np.empty(alphas.size)
    for lo in range(0, alphas.size, max(1, batch)):
        al = alphas[lo:lo + batch, None].astype(np.float32)
        out[lo:lo + al.shape[0]] = evaluate(loss_fn, (1 - al) * wa[None, :] + al * wb[None, :])
    return out


def barrier(losses: np.ndarray) -> float:
    """``max_α L − max(L(0), L(1))`` of a path ``losses [A]`` (first and last entries: the end points)."""
    losses = np.asarray(losses, dtype=np.float64)
    return float(losses.max() - max(losses[0], losses[-1]))
