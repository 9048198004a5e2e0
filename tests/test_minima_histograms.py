"""`minima` histograms (the inherent-structure figures): pairwise distances, final losses and weights of an
ensemble of minima with known parameters, against direct numpy computations; a named metric that a run lacks
is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

import trajkit
from trajkit import synthetic
from trajkit.errors import AnalysisError

R, N = 5, 40


@pytest.fixture(scope="module")
def minima(tmp_path_factory):
    rng = np.random.default_rng(3)
    finals = rng.normal(size=(R, N))
    losses = np.array([0.1, 0.2, 0.05, 0.3, 0.15])
    runs = [{"steps": [0, 10], "params": np.stack([np.zeros(N), finals[r]]),
             "metrics": {"train_loss": np.array([1.0, losses[r]])}} for r in range(R)]
    return synthetic.write_ensemble(tmp_path_factory.mktemp("minima") / "ens", runs), finals.astype(np.float32), losses


def test_histograms_against_numpy(minima):
    root, w, losses = minima
    r = trajkit.analyze("minima", [root], align="none", shuffles=3, hist_bins=7)
    iu = np.triu_indices(R, k=1)
    w64 = w.astype(np.float64)
    d = np.sqrt(((w64[:, None, :] - w64[None, :, :]) ** 2).sum(-1) / N)[iu]
    np.testing.assert_allclose(r["distance"][iu], d, rtol=1e-5)
    d = r["distance"][iu]                         # the analysis's own float64 values, binned by numpy
    edges = r["distance_edges"]
    np.testing.assert_allclose(edges, np.linspace(d.min(), d.max(), 8), rtol=1e-12)
    np.testing.assert_allclose(r["distance_hist"], np.histogram(d, bins=edges, density=True)[0], rtol=1e-9)
    np.testing.assert_allclose(r["distance_aligned_hist"], r["distance_hist"])     # align = none
    wh, we = np.histogram(w64.ravel(), bins=7, density=True)
    np.testing.assert_allclose(r["weight_edges"], we, rtol=1e-6)
    np.testing.assert_allclose(r["weight_hist"], wh, rtol=1e-5)
    np.testing.assert_allclose(r["final_loss"], losses, rtol=1e-6)
    lh, le = np.histogram(losses, bins=7, density=True)
    np.testing.assert_allclose(r["final_loss_edges"], le, rtol=1e-6)
    np.testing.assert_allclose(r["final_loss_hist"], lh, rtol=1e-5)
    assert r.scalars["final_loss_metric"] == "train_loss"
    fig = r.plot()
    assert any("final train_loss" in ax.get_xlabel() for ax in fig.axes)


def test_named_metric_must_exist(minima):
    root, _, _ = minima
    with pytest.raises(AnalysisError, match="no snapshot metric 'test_loss'"):
        trajkit.analyze("minima", [root], align="none", shuffles=3, metric="test_loss")
