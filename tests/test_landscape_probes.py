"""Landscape probes and their statistics against closed forms.

Quadratic bowl ``L = ½ (w − w0)ᵀ H (w − w0)`` (H diagonal): along a uniformly random unit direction u,
``E[uᵀHu] = tr(H)/N`` (each ``u_i²`` has mean 1/N), so the mean rise at radius r is ``½ r² tr(H)/N``; with
per-tensor normalisation ``|d_t| = |w0_t|`` it is ``½ r² Σ_t |w0_t|² tr(H_t)/n_t``. A random walk of unit
steps δ from the bottom of an isotropic bowl ``H = h I`` has increments ``ΔL_k = hδ ξ_k·x_k + ½hδ²`` with
``E[(ξ_k·x_k)²] = kδ²/N``, so the pooled increment variance is ``h² δ⁴ (S−1)/(2N)`` over S steps
(exponent 4). An AR(1) series with coefficient φ has ``C(ℓ) = φ^ℓ`` and 1/e length ``−1/ln φ``.
"""

from __future__ import annotations

import numpy as np
import pytest

from trajkit.errors import AnalysisError
from trajkit.landscape.correlation import correlate
from trajkit.landscape.probes import (
    direction_profiles,
    normalize_directions,
    random_directions,
    random_walks,
)
from trajkit.landscape.rugosity import (
    autocorrelation,
    autocorrelation_length,
    correlation_lag,
    increment_exponent,
    increment_variance,
    rugosity,
    sharpness,
)

N = 400


def _layout(sizes):
    out, off = [], 0
    for i, n in enumerate(sizes):
        out.append({"name": f"t{i}", "shape": [n], "offset": off, "size": n, "role": "weight", "layer": i})
        off += n
    return out


def bowl(h: np.ndarray, w0: np.ndarray, ripple: float = 0.0, k: float = 0.0):
    def loss(W: np.ndarray) -> np.ndarray:
        x = W.astype(np.float64) - w0
        out = 0.5 * (x * x * h).sum(1)
        if ripple:
            out += ripple * (1 - np.cos(k * np.linalg.norm(x, axis=1)))
        return out
    return loss


def test_sharpness_of_a_quadratic_bowl_with_unit_directions():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.5, 3.0, N)
    w0 = rng.standard_normal(N)
    dirs = random_directions(w0, _layout([N]), count=200, normalization="unit", seed=1)
    assert np.allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
    r = 0.7
    t, prof = direction_profiles(bowl(h, w0), w0, dirs, radius=r, points=21, batch=37)
    assert prof.shape == (200, 21) and t[10] == 0
    assert sharpness(t, prof) == pytest.approx(0.5 * r ** 2 * h.sum() / N, rel=0.03)
    # each profile is exactly ½ t² uᵀHu
    uhu = (dirs.astype(np.float64) ** 2 * h).sum(1)
    np.testing.assert_allclose(prof, 0.5 * t[None] ** 2 * uhu[:, None], rtol=1e-4, atol=1e-6)


def test_sharpness_with_per_tensor_normalisation():
    rng = np.random.default_rng(1)
    sizes = [150, 250]
    layout = _layout(sizes)
    h = np.concatenate([np.full(150, 2.0), np.full(250, 0.5)])
    w0 = np.concatenate([0.3 * rng.standard_normal(150), 1.5 * rng.standard_normal(250)])
    dirs = random_directions(w0, layout, count=300, normalization="layer", seed=2)
    for sl in (slice(0, 150), slice(150, 400)):
        np.testing.assert_allclose(np.linalg.norm(dirs[:, sl], axis=1), np.linalg.norm(w0[sl]), rtol=1e-5)
    r = 0.2
    t, prof = direction_profiles(bowl(h, w0), w0, dirs, radius=r, points=5)
    want = 0.5 * r ** 2 * sum(np.sum(w0[sl] ** 2) * h[sl].sum() / h[sl].size
                              for sl in (slice(0, 150), slice(150, 400)))
    assert sharpness(t, prof) == pytest.approx(want, rel=0.03)


def test_filter_normalisation_matches_each_row_norm():
    layout = [{"name": "w", "shape": [4, 5], "offset": 0, "size": 20, "role": "weight", "layer": 0},
              {"name": "b", "shape": [4], "offset": 20, "size": 4, "role": "bias", "layer": 0}]
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(24)
    d = normalize_directions(rng.standard_normal((3, 24)), w0, layout, "filter")
    row_norms = np.linalg.norm(w0[:20].reshape(4, 5), axis=1)
    np.testing.assert_allclose(np.linalg.norm(d[:, :20].reshape(3, 4, 5), axis=2),
                               np.broadcast_to(row_norms, (3, 4)), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d[:, 20:], axis=1), np.linalg.norm(w0[20:]), rtol=1e-5)


def test_ripple_raises_rugosity_not_sharpness():
    rng = np.random.default_rng(4)
    h = rng.uniform(1.0, 3.0, N)
    w0 = rng.standard_normal(N)
    dirs = random_directions(w0, _layout([N]), count=50, normalization="unit", seed=5)
    r, eps = 1.0, 0.01
    t, smooth = direction_profiles(bowl(h, w0), w0, dirs, radius=r, points=401)
    _, rough = direction_profiles(bowl(h, w0, ripple=eps, k=2 * np.pi * 40.3), w0, dirs, radius=r, points=401)
    s0, s1 = sharpness(t, smooth), sharpness(t, rough)
    assert s0 == pytest.approx(0.5 * h.sum() / N, rel=0.05)
    assert abs(s1 - s0) <= 2 * eps  # the ripple's amplitude bounds its effect on the rise
    assert abs(s1 - s0) / s0 < 0.03
    rho0, rho1 = rugosity(t, smooth), rugosity(t, rough)
    assert 1.0 < rho0 < 1.1  # a parabola is nearly straight from its bottom
    assert rho1 > 1.3 * rho0


def test_rugosity_of_a_straight_profile_is_one():
    t = np.linspace(-1, 1, 11)
    assert rugosity(t, np.abs(t)[None, :] * 3.0) == pytest.approx(1.0)


def test_random_walk_increment_variance_in_an_isotropic_bowl():
    n, h, steps = 300, 2.0, 60
    w0 = np.random.default_rng(6).standard_normal(n)
    deltas = [0.05, 0.1, 0.2]
    walks = random_walks(bowl(np.full(n, h), w0), w0, _layout([n]), deltas, walks=12, steps=steps,
                         normalization="unit", seed=7, batch=25)
    assert walks.shape == (3, 12, steps + 1)
    np.testing.assert_allclose(walks[:, :, 0], 0.0, atol=1e-10)  # L(w0), w0 stored as float32
    v = increment_variance(walks)
    want = h ** 2 * np.array(deltas) ** 4 * (steps - 1) / (2 * n)
    np.testing.assert_allclose(v, want, rtol=0.15)
    assert increment_exponent(np.array(deltas), v) == pytest.approx(4.0, abs=0.2)


def test_random_walks_are_seeded_and_independent_of_batching():
    n = 50
    w0 = np.ones(n)
    f = bowl(np.ones(n), np.zeros(n))
    a = random_walks(f, w0, _layout([n]), [0.1], walks=2, steps=10, seed=3, batch=3)
    b = random_walks(f, w0, _layout([n]), [0.1], walks=2, steps=10, seed=3, batch=64)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_autocorrelation_length_of_an_ar1_series():
    phi, delta = 0.9, 0.5
    rng = np.random.default_rng(8)
    x = np.zeros((1, 4, 20000))
    noise = rng.standard_normal(x.shape)
    for k in range(1, x.shape[-1]):
        x[..., k] = phi * x[..., k - 1] + noise[..., k]
    c = autocorrelation(x[0, 0])
    assert c[0] == pytest.approx(1.0)
    assert c[1] == pytest.approx(phi, abs=0.02)
    assert autocorrelation_length([delta], x)[0] == pytest.approx(-delta / np.log(phi), rel=0.1)
    assert correlation_lag(np.array([1.0, 0.5, 0.2])) == pytest.approx(1 + (0.5 - np.exp(-1)) / 0.3)
    assert np.isnan(correlation_lag(np.ones(5)))


def test_planted_monotone_relation_gives_spearman_one():
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 3, 24)
    y = np.exp(2 * x)  # monotone, far from linear
    c = correlate(x, y, n_boot=500, seed=1)
    assert c["spearman"] == pytest.approx(1.0)
    assert c["spearman_ci"][0] == pytest.approx(1.0)
    assert c["pearson"] < 0.95
    assert c["pearson_ci"][0] <= c["pearson"] <= c["pearson_ci"][1]
    assert c["n"] == 24
    z = correlate(x, rng.standard_normal(24), n_boot=500, seed=1)
    assert z["spearman_ci"][0] < 0 < z["spearman_ci"][1]
    assert correlate(x, -y, n_boot=100)["spearman"] == pytest.approx(-1.0)
    few = correlate([1.0, 2.0], [1.0, 2.0])
    assert np.isnan(few["spearman"])


def test_bad_probe_inputs():
    w0 = np.ones(10)
    f = bowl(np.ones(10), w0)
    d = random_directions(w0, _layout([10]), 2, "unit")
    for radius in (0.0, -1.0):
        with pytest.raises(AnalysisError, match="radius"):
            direction_profiles(f, w0, d, radius=radius, points=5)
    with pytest.raises(AnalysisError, match="odd"):
        direction_profiles(f, w0, d, radius=1.0, points=4)
    with pytest.raises(AnalysisError, match="normalization"):
        random_directions(w0, _layout([10]), 2, "global")
    with pytest.raises(AnalysisError, match="deltas"):
        random_walks(f, w0, _layout([10]), [0.0], walks=1, steps=5)
    with pytest.raises(AnalysisError, match="one loss per row"):
        direction_profiles(lambda W: np.zeros(1), w0, d, radius=1.0, points=3)
