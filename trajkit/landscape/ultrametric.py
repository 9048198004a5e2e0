"""Ultrametricity of a distance matrix: are the triangles between minima isosceles with a short base?

In an ultrametric space (``d(a,c) ≤ max(d(a,b), d(b,c))`` for all triples, the geometry of the states of a
replica-symmetry-broken spin glass and of the leaves of a rooted tree) every triangle is isosceles with
its two *largest* sides equal. For a triangle with sides ``d_min ≤ d_mid ≤ d_max`` trajkit's
**ultrametricity index** is the mean over all ``R(R−1)(R−2)/6`` triangles of

    K = (d_max − d_mid) / d_min            (K = 0 when d_min = 0)

For a metric the triangle inequality ``d_max ≤ d_mid + d_min`` bounds ``K`` to ``[0, 1]``: ``K = 0`` for an
ultrametric triangle (and for an equilateral one), ``K = 1`` for a degenerate one (a point between the
other two). A triangle with ``d_min = 0`` has ``d_max = d_mid`` in any metric, hence ``K = 0``.

Because high-dimensional random points are nearly equidistant (all triangles close to equilateral, so
``K`` is small without any hierarchy), the index is read against a **shuffled control**: the same
statistic for the matrix whose off-diagonal entries (the ``R(R−1)/2`` distances) are randomly permuted
among the pairs, symmetrically. The shuffle keeps the distribution of distances and destroys which pair
has which; a shuffled matrix need not satisfy the triangle inequality, so its ``K`` may exceed 1. A
hierarchical set of minima has an index well below its control; points without hierarchy (i.i.d.
Gaussian in high dimension) have an index close to it. In a few dimensions the triangle inequality alone
keeps the real index below the control (the shuffle breaks it), so read the gap against that of a
structureless set of the same size and dimension. :func:`ultrametricity_control` averages over
``n_shuffles`` shuffles (seeded).
"""

from __future__ import annotations

import numpy as np

from trajkit.errors import AnalysisError


def _check_distance_matrix(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise AnalysisError(f"ultrametricity: distance matrix has shape {d.shape}, expected square [R, R]")
    if d.shape[0] < 3:
        raise AnalysisError(f"ultrametricity: {d.shape[0]} points make no triangle; need at least 3 runs")
    if not np.all(np.isfinite(d)):
        raise AnalysisError("ultrametricity: distance matrix holds NaN/inf; exclude diverged runs")
    return d


def triangle_violations(d: np.ndarray) -> np.ndarray:
    """``K = (d_max − d_mid)/d_min`` of every triangle ``a < b < c`` (float64 ``[R(R−1)(R−2)/6]``)."""
    d = _check_distance_matrix(d)
    r = d.shape[0]
    out = []
    for a in range(r - 2):
        b, c = np.triu_indices(r - a - 1, k=1)
        b, c = b + a + 1, c + a + 1
        sides = np.sort(np.stack([d[a, b], d[a, c], d[b, c]], axis=1), axis=1)
        lo, mid, hi = sides[:, 0], sides[:, 1], sides[:, 2]
        k = np.zeros_like(lo)
        pos = lo > 0
        k[pos] = (hi[pos] - mid[pos]) / lo[pos]
        out.append(k)
    return np.concatenate(out)


def ultrametricity_index(d: np.ndarray) -> float:
    """Mean of :func:`triangle_violations` over all triangles: 0 if ultrametric, ≤ 1 for a metric."""
    return float(np.mean(triangle_violations(d)))


def shuffle_distances(d: np.ndarray, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """``d`` with its upper-triangle entries randomly permuted among the pairs (symmetric, zero diagonal)."""
    d = np.asarray(d, dtype=np.float64)
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(d.shape[0], k=1)
    vals = rng.permutation(d[iu])
    out = np.zeros_like(d)
    out[iu] = vals
    return out + out.T


def ultrametricity_control(d: np.ndarray, n_shuffles: int = 20,
                           seed: int | np.random.Generator | None = 0) -> tuple[float, float]:
    """``(mean, std)`` of :func:`ultrametricity_index` over ``n_shuffles`` shuffled copies of ``d``."""
    d = _check_distance_matrix(d)
    if n_shuffles < 1:
        raise AnalysisError(f"ultrametricity control: n_shuffles={n_shuffles}; use >= 1")
    rng = np.random.default_rng(seed)
    vals = np.array([ultrametricity_index(shuffle_distances(d, rng)) for _ in range(n_shuffles)])
    return float(vals.mean()), float(vals.std(ddof=1)) if n_shuffles > 1 else 0.0
