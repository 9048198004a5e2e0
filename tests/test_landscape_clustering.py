"""Clustering of minima: a known three-level tree comes back as that tree with a small ultrametricity
index; points without hierarchy have an index close to the shuffled control; hand-built ultrametric and
metric matrices give the analytic index values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from trajkit.errors import AnalysisError
from trajkit.landscape.clustering import (
    cluster_labels,
    cophenetic_correlation,
    cophenetic_matrix,
    distance_matrix,
    leaf_order,
    linkage,
    overlap_distribution,
    overlap_matrix,
)
from trajkit.landscape.ultrametric import (
    shuffle_distances,
    triangle_violations,
    ultrametricity_control,
    ultrametricity_index,
)


def tree_points(dim: int = 3000, branches: int = 3, scales=(10.0, 3.0, 1.0), seed: int = 0):
    """27 leaves of a three-level tree: w = c1 + c2 + c3 with per-coordinate std scales[level]."""
    rng = np.random.default_rng(seed)
    pts, top, mid = [], [], []
    for i in range(branches):
        c1 = scales[0] * rng.standard_normal(dim)
        for j in range(branches):
            c2 = scales[1] * rng.standard_normal(dim)
            for _ in range(branches):
                pts.append(c1 + c2 + scales[2] * rng.standard_normal(dim))
                top.append(i)
                mid.append(i * branches + j)
    order = rng.permutation(len(pts))  # the input order must not matter
    return np.array(pts)[order], np.array(top)[order], np.array(mid)[order]


@pytest.mark.parametrize("method", ["single", "average", "complete", "ward"])
def test_three_level_tree_is_recovered(method):
    w, top, mid = tree_points()
    d = distance_matrix(w)
    z = linkage(d, method)
    assert z.shape == (26, 4)
    assert adjusted_rand_score(top, cluster_labels(z, n_clusters=3)) == 1.0
    assert adjusted_rand_score(mid, cluster_labels(z, n_clusters=9)) == 1.0
    if method != "ward":  # ward's merge heights are not distances
        assert cophenetic_correlation(z, d) > 0.99
    assert sorted(leaf_order(z).tolist()) == list(range(27))


def test_tree_is_ultrametric_and_unstructured_points_match_their_control():
    w, _, _ = tree_points()
    d = distance_matrix(w)
    index = ultrametricity_index(d)
    control, control_std = ultrametricity_control(d, n_shuffles=20, seed=1)
    assert index < 0.05
    assert control > 5 * index
    assert control_std >= 0
    rng = np.random.default_rng(2)
    flat = rng.standard_normal((27, 200))
    d0 = distance_matrix(flat)
    i0 = ultrametricity_index(d0)
    c0, _ = ultrametricity_control(d0, n_shuffles=20, seed=3)
    assert i0 == pytest.approx(c0, rel=0.2)


def test_distance_and_overlap_matrices_against_direct_formulas():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 1000)).astype(np.float32) + 3.0
    d = distance_matrix(w, block=64)
    for a in range(5):
        for b in range(5):
            want = np.linalg.norm(w[a].astype(np.float64) - w[b]) / np.sqrt(1000)
            assert d[a, b] == pytest.approx(want, rel=1e-12, abs=1e-15)
    q = overlap_matrix(w)
    w64 = w.astype(np.float64)
    assert q[1, 3] == pytest.approx(w64[1] @ w64[3] / np.linalg.norm(w64[1]) / np.linalg.norm(w64[3]))
    assert np.allclose(np.diag(q), 1.0)
    centres, density = overlap_distribution(q, bins=10)
    assert np.sum(density * np.diff(centres).mean()) == pytest.approx(1.0)


def test_hand_built_matrices_give_analytic_indices():
    # a tree's cophenetic matrix is exactly ultrametric: index 0
    w, _, _ = tree_points(dim=50, seed=4)
    z = linkage(distance_matrix(w), "average")
    assert ultrametricity_index(cophenetic_matrix(z)) == pytest.approx(0.0, abs=1e-12)
    # collinear points 0, 1, 3: sides 1, 2, 3 -> K = (3 - 2)/1 = 1 (the metric maximum)
    x = np.array([0.0, 1.0, 3.0])
    assert triangle_violations(np.abs(x[:, None] - x[None, :])).tolist() == [1.0]
    # a right triangle 3-4-5: K = (5 - 4)/3
    p = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    dd = np.linalg.norm(p[:, None] - p[None], axis=2)
    assert ultrametricity_index(dd) == pytest.approx(1 / 3)
    # coincident points: d_min = 0 gives K = 0
    dd = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [2.0, 2.0, 0.0]])
    assert ultrametricity_index(dd) == 0.0


def test_shuffle_keeps_the_distances():
    w, _, _ = tree_points(dim=20)
    d = distance_matrix(w)
    s = shuffle_distances(d, seed=0)
    iu = np.triu_indices(27, 1)
    assert np.allclose(np.sort(s[iu]), np.sort(d[iu]))
    assert np.allclose(s, s.T) and np.all(np.diag(s) == 0)
    assert not np.allclose(s, d)


def test_bad_inputs():
    d = np.zeros((2, 2))
    with pytest.raises(AnalysisError, match="at least 3"):
        linkage(d)
    with pytest.raises(AnalysisError, match="at least 3 runs"):
        ultrametricity_index(d)
    with pytest.raises(AnalysisError, match="not one of"):
        linkage(np.ones((3, 3)) - np.eye(3), "centroid")
    with pytest.raises(AnalysisError, match="all-zero"):
        overlap_matrix(np.zeros((3, 4)))
