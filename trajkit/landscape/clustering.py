"""Hierarchical clustering of minima: distances, overlaps, linkage, cluster labels, P(q).

For ``R`` parameter vectors ``w_a ∈ R^N`` (rows of ``W [R, N]``, usually permutation-aligned):

- distance ``d_ab = |w_a − w_b| / √N`` (:func:`distance_matrix`; computed from differences in float64);
- overlap ``q_ab = w_a·w_b / (|w_a| |w_b|)`` (:func:`overlap_matrix`), and the distance ``1 − q_ab``;
- a linkage ``Z [R−1, 4]`` (scipy's format: merged clusters, merge height, size) for the methods
  ``single``, ``average``, ``complete`` and ``ward`` (:func:`linkage`), its cophenetic correlation
  (Pearson correlation of ``d_ab`` with the merge height at which a and b join; 1 for an exact tree),
  cluster labels at a cut (:func:`cluster_labels`) and the dendrogram's leaf order (:func:`leaf_order`);
- the overlap distribution ``P(q)``: histogram of the off-diagonal ``q_ab`` (:func:`overlap_distribution`).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from trajkit.errors import AnalysisError

METHODS = ("single", "average", "complete", "ward")


def distance_matrix(w: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """``d [R, R]`` float64, ``d_ab = |w_a − w_b|/√N`` over rows of ``w [R, N]``."""
    w = np.asarray(w)
    r, n = w.shape
    sq = np.zeros((r, r))
    for lo in range(0, n, block):
        x = np.asarray(w[:, lo:lo + block], dtype=np.float64)
        for a in range(r):
            diff = x[a + 1:] - x[a]
            sq[a, a + 1:] += np.einsum("ij,ij->i", diff, diff)
    sq = sq + sq.T
    return np.sqrt(sq / max(n, 1))


def overlap_matrix(w: np.ndarray) -> np.ndarray:
    """``q [R, R]`` float64 with ``q_ab = w_a·w_b / (|w_a| |w_b|)`` (diagonal 1)."""
    w = np.asarray(w, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1)
    if np.any(norms == 0):
        zero = np.flatnonzero(norms == 0).tolist()
        raise AnalysisError(f"overlaps: run(s) {zero} have all-zero parameters; q_ab is undefined")
    q = (w @ w.T) / np.outer(norms, norms)
    np.fill_diagonal(q, 1.0)
    return np.clip(q, -1.0, 1.0)


def linkage(d: np.ndarray, method: str = "average") -> np.ndarray:
    """Linkage ``Z [R−1, 4]`` of the square distance matrix ``d`` (scipy.cluster.hierarchy format)."""
    if method not in METHODS:
        raise AnalysisError(f"linkage method {method!r} is not one of {', '.join(METHODS)}")
    d = np.asarray(d, dtype=np.float64)
    if d.shape[0] < 3:
        raise AnalysisError(f"clustering needs at least 3 runs, got {d.shape[0]}; add replicas to the "
                            "ensemble")
    return hierarchy.linkage(squareform(d, checks=False), method=method)


def cophenetic_correlation(z: np.ndarray, d: np.ndarray) -> float:
    """Pearson correlation between ``d_ab`` and the cophenetic (merge) heights of linkage ``z``.

    NaN when either is constant (e.g. all runs at distance 0).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        c, _ = hierarchy.cophenet(z, squareform(np.asarray(d, dtype=np.float64), checks=False))
    return float(c)


def cophenetic_matrix(z: np.ndarray) -> np.ndarray:
    """``[R, R]`` merge height at which each pair joins in ``z`` — an ultrametric."""
    return squareform(hierarchy.cophenet(z))


def cluster_labels(z: np.ndarray, n_clusters: int | None = None, height: float | None = None) -> np.ndarray:
    """int64 ``[R]`` labels (from 0) cutting ``z`` into ``n_clusters`` clusters, or at merge ``height``."""
    if (n_clusters is None) == (height is None):
        raise AnalysisError("cluster labels: give exactly one of n_clusters or height")
    if n_clusters is not None:
        labels = hierarchy.fcluster(z, t=n_clusters, criterion="maxclust")
    else:
        labels = hierarchy.fcluster(z, t=height, criterion="distance")
    return (labels - 1).astype(np.int64)


def leaf_order(z: np.ndarray) -> np.ndarray:
    """int64 ``[R]``: the dendrogram's left-to-right leaf order (to reorder a heat map)."""
    return hierarchy.leaves_list(z).astype(np.int64)


def overlap_distribution(q: np.ndarray, bins: int = 40, lo: float | None = None,
                         hi: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(centres [bins], density [bins])``: normalised histogram ``P(q)`` of the off-diagonal ``q_ab``.

    The range defaults to ``[min q_ab, max q_ab]`` (widened to a width of at least 1e-6).
    """
    q = np.asarray(q, dtype=np.float64)
    vals = q[np.triu_indices(q.shape[0], k=1)]
    lo = float(vals.min()) if lo is None else lo
    hi = float(vals.max()) if hi is None else hi
    if hi - lo < 1e-6:
        lo, hi = lo - 5e-7, hi + 5e-7
    density, edges = np.histogram(vals, bins=bins, range=(lo, hi), density=True)
    return 0.5 * (edges[:-1] + edges[1:]), density
