"""The free-diffusion reference of the self-overlap, drawn beside the measured Q of Langevin runs.

trajkit's overdamped Langevin rule (``dynamics.noise_convention``) is
``w ← w − η (∇L + λ w) + sqrt(2 T η / P) · ξ``; without the force it is a Brownian walk with diffusion
constant ``D = T η / P`` per step (P = ``dynamics.n_train``, else ``dataset.n_train``), whose self-overlap
at cutoff ε is ``Q_free(t) = erf(ε / sqrt(4 D t))`` (OBSERVABLES.md, analytic checks). Where the measured
``Q`` falls below ``Q_free`` the parameters move faster than free diffusion; above it, the loss holds them.

:func:`langevin_diffusion` reads D from a run's metadata (None unless the run is Langevin with T, η and P
recorded); :func:`free_self_overlap_grid` averages ``Q_free`` over replicas with each replica's own ε,
as the measured ``Q`` is averaged, on the ``(tw_step, step)`` grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import erf

from trajkit.archive.metadata import get_path

#: Legend of the reference curve in the figures of ``overlaps`` and ``relaxation``.
FREE_LABEL = r"$Q_{\rm free} = {\rm erf}(\varepsilon/\sqrt{4Dt})$, $D = T\eta/P$"


def langevin_diffusion(archive: Any) -> float | None:
    """``D = T η / P`` of a Langevin run from its ``dynamics`` (``kind``, ``temperature``, ``lr``,
    ``n_train``) and ``dataset.n_train`` metadata; None when the run is not Langevin or one of them is missing."""
    meta = archive.metadata
    dyn = meta.get("dynamics") if isinstance(meta.get("dynamics"), dict) else {}
    if dyn.get("kind") != "langevin":
        return None
    temp, lr = dyn.get("temperature"), dyn.get("lr")
    p = dyn.get("n_train", get_path(meta, "dataset.n_train", None))
    if temp is None or lr is None or not p:
        return None
    return float(temp) * float(lr) / float(p)


def ensemble_diffusion(archives: Sequence[Any]) -> float | None:
    """The one ``D`` shared by every run of ``archives``; None when a run is not Langevin or they differ."""
    ds = [langevin_diffusion(a) for a in archives]
    if not ds or any(d is None for d in ds) or not np.allclose(ds, ds[0], rtol=1e-12, atol=0.0):
        return None
    return float(ds[0])


def free_self_overlap(lags: np.ndarray, epsilon: float, diffusion: float) -> np.ndarray:
    """``Q_free(t) = erf(ε / sqrt(4 D t))`` for ``lags [T] ≥ 0`` (1 at t = 0 or D = 0)."""
    t = np.asarray(lags, dtype=float)
    with np.errstate(divide="ignore"):
        return erf(float(epsilon) / np.sqrt(4.0 * float(diffusion) * t))


def free_self_overlap_grid(tw_step: np.ndarray, steps: np.ndarray, epsilon: np.ndarray,
                           diffusion: float) -> np.ndarray:
    """``mean_r Q_free(t; ε_rk, D)`` on the ``[K, T]`` grid (NaN where ``step < tw_step``); ``epsilon [R, K]``."""
    eps = np.asarray(epsilon, dtype=float)
    out = np.full((np.size(tw_step), np.size(steps)), np.nan)
    for k, tw in enumerate(np.asarray(tw_step)):
        after = steps >= tw
        lag = (steps[after] - tw).astype(float)
        out[k, after] = np.mean([free_self_overlap(lag, e, diffusion) for e in eps[:, k]], axis=0)
    return out
