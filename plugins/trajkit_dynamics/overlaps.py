"""Two-time overlaps, displacement moments, self-overlap and the displacement distribution.

For snapshots ``a = w(tw)`` and ``b = w(tw+t)`` of the N selected parameters, the pair kernels give
``dot = Σ a·b``, ``norm_a = Σ a²``, ``norm_b = Σ b²``, ``sq = Σ (b−a)²``, ``quart = Σ (b−a)⁴`` and
``theta = Σ Θ(ε − |b−a|)``. From them (:func:`two_time_from_sums`):

==========================  =====================================================================
``overlap``                 ``C(tw, tw+t) = dot / N``
``overlap_normalized``      ``dot / sqrt(norm_a · norm_b)``
``msd``                     ``Δ(tw, tw+t) = sq / N``
``self_overlap``            ``Q(tw, tw+t) = theta / N``
``d4``                      ``D4 = quart / N``
``participation``           ``Y = quart / sq²``  (``≈ 3/N`` for Gaussian displacements)
``alpha2``                  ``α2 = ⟨Δw⁴⟩ / (3⟨Δw²⟩²) − 1 = N·quart / (3 sq²) − 1``
==========================  =====================================================================

``Y`` and ``α2`` are NaN where ``sq = 0`` (no motion). The inter-replica overlap is
``q_ab(t) = w^a(t)·w^b(t) / (|w^a(t)| |w^b(t)|)`` (:func:`replica_overlap`), the displacement
distribution the histogram of ``log10 |w_i(tw+t) − w_i(tw)|`` pooled over parameters and replicas
(:func:`displacement_histogram`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Arrays computed from the pair sums, in the order the plugin reports them.
TWO_TIME_NAMES = ("overlap", "overlap_normalized", "msd", "self_overlap", "d4", "participation", "alpha2")


def two_time_from_sums(sums: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The two-time observables from pair sums over ``n`` parameters (any common shape, e.g. ``[P]``).

    ``sums`` needs ``dot, sq, quart`` and, for the named observables, ``norm_a, norm_b`` (normalised
    overlap) and ``theta`` (self-overlap); missing inputs leave their outputs out.
    """
    out: dict[str, np.ndarray] = {}
    n = float(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if "dot" in sums:
            dot = np.asarray(sums["dot"], dtype=float)
            out["overlap"] = dot / n
            if "norm_a" in sums and "norm_b" in sums:
                out["overlap_normalized"] = dot / np.sqrt(np.asarray(sums["norm_a"], float)
                                                          * np.asarray(sums["norm_b"], float))
        sq = np.asarray(sums["sq"], dtype=float)
        quart = np.asarray(sums["quart"], dtype=float)
        out["msd"] = sq / n
        if "theta" in sums:
            out["self_overlap"] = np.asarray(sums["theta"], dtype=float) / n
        out["d4"] = quart / n
        moving = sq > 0
        out["participation"] = np.where(moving, quart / np.where(moving, sq, 1.0) ** 2, np.nan)
        out["alpha2"] = np.where(moving, n * quart / (3.0 * np.where(moving, sq, 1.0) ** 2) - 1.0, np.nan)
    return out


def epsilon_from_std(rows: np.ndarray, factor: float) -> np.ndarray:
    """Cutoff ``ε = std(w) / F`` over the parameters of each row: ``rows [..., N]`` → ``[...]``."""
    return np.std(np.asarray(rows, dtype=float), axis=-1) / float(factor)


def replica_overlap(gram: np.ndarray) -> np.ndarray:
    """Mean pairwise normalised inter-replica overlap from per-snapshot replica Gram matrices.

    ``gram [T, R, R]`` holds ``w^a(t)·w^b(t)``; returns ``mean_{a<b} q_ab(t)`` as ``[T]`` (NaN if R < 2).
    """
    g = np.asarray(gram, dtype=float)
    r = g.shape[-1]
    if r < 2:
        return np.full(g.shape[0], np.nan)
    diag = np.sqrt(np.einsum("tii->ti", g))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = g / (diag[:, :, None] * diag[:, None, :])
    iu = np.triu_indices(r, 1)
    return q[:, iu[0], iu[1]].mean(axis=1)


def displacement_histogram(displacements: Sequence[np.ndarray] | np.ndarray, bins: int = 60,
                           log10_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density of ``log10 |Δw|`` pooled over all given displacement arrays (zeros are left out).

    Returns ``(density [bins], edges [bins + 1])``; the density integrates to 1 over ``log10 |Δw|``.
    """
    parts = [np.abs(np.asarray(d, dtype=float)).ravel() for d in
             (displacements if isinstance(displacements, list | tuple) else [displacements])]
    vals = np.concatenate(parts)
    vals = np.log10(vals[vals > 0])
    if vals.size == 0:
        edges = np.linspace(-1.0, 1.0, bins + 1)
        return np.zeros(bins), edges
    if log10_range is None:
        lo, hi = float(vals.min()), float(vals.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        log10_range = (lo, hi)
    density, edges = np.histogram(vals, bins=bins, range=log10_range, density=True)
    return density, edges


def replica_mean_sem(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over replicas (axis 0, NaN-aware): ``[R, ...]`` → two ``[...]`` arrays.

    The standard error is ``std(ddof=1)/sqrt(R)``; NaN where fewer than two replicas have a value.
    """
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(v, axis=0)
            count = np.sum(np.isfinite(v), axis=0)
            sem = np.where(count >= 2, np.nanstd(v, axis=0, ddof=1) / np.sqrt(np.maximum(count, 1)), np.nan)
    return mean, sem
