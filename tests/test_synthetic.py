"""trajkit.synthetic: the generators sample the stated processes and write real archives."""

import json

import numpy as np
import pytest
from scipy.special import erf

from trajkit import open_archive, synthetic
from trajkit.errors import TrajkitError


def test_brownian_increments_have_variance_2D_dt():
    steps = [0, 1, 10, 1000]
    w = synthetic.brownian(steps, 50_000, diffusion=0.25, seed=3)
    assert w.shape == (4, 50_000)
    for a, b in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        var = np.var(w[b] - w[a])
        # sample variance of N = 5e4 Gaussians: relative std sqrt(2/N) = 0.0063; 5 sigma = 3.2 %
        assert var == pytest.approx(2 * 0.25 * (steps[b] - steps[a]), rel=0.032)
    # increments over disjoint intervals are independent: correlation ~ 1/sqrt(N) = 0.0045, 5 sigma
    assert abs(np.corrcoef(w[1] - w[0], w[3] - w[2])[0, 1]) < 0.023


def test_replicas_are_independent_and_reproducible():
    a = synthetic.brownian([0, 5], 1000, 1.0, replicas=3, seed=7)
    b = synthetic.brownian([0, 5], 1000, 1.0, replicas=3, seed=7)
    assert a.shape == (3, 2, 1000)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


def test_frozen_never_moves():
    w = synthetic.frozen([0, 3, 99], 100, seed=1)
    assert np.all(w == w[0])


def test_ornstein_uhlenbeck_is_stationary_with_exponential_correlation():
    d, k = 0.5, 0.01
    steps = [0, 50, 100, 300]
    w = synthetic.ornstein_uhlenbeck(steps, 100_000, d, k, seed=2)
    for row in w:  # stationary variance D/k = 50; relative std sqrt(2/N) = 0.0045, 5 sigma
        assert np.var(row) == pytest.approx(d / k, rel=0.023)
    for a, b in [(0, 1), (1, 3)]:
        corr = np.mean(w[a] * w[b]) / (d / k)
        # correlation estimate: std ~ sqrt((1 + rho^2)/N) <= 0.0045; 5 sigma
        assert corr == pytest.approx(np.exp(-k * (steps[b] - steps[a])), abs=0.023)


def test_effective_time_process_depends_on_delta_s_only():
    assert synthetic.effective_time(np.e, 1.0) == pytest.approx(1.0)
    assert synthetic.effective_time(4.0, 0.5) == pytest.approx(4.0)
    steps = [10, 20, 100, 200]
    w = synthetic.effective_time_process(steps, 50_000, mu=1.0, diffusion=1.0, seed=4)
    # s(20) - s(10) = s(200) - s(100) = ln 2: both MSDs are 2 ln 2 (relative std 0.0063, 5 sigma)
    assert np.mean((w[1] - w[0]) ** 2) == pytest.approx(2 * np.log(2), rel=0.032)
    assert np.mean((w[3] - w[2]) ** 2) == pytest.approx(2 * np.log(2), rel=0.032)
    with pytest.raises(TrajkitError, match="steps must be > 0"):
        synthetic.effective_time_process([0, 1], 10, mu=1.0, diffusion=1.0)


def test_langevin_flat_has_D_equal_T_eta_over_P():
    w = synthetic.langevin_flat([0, 100], 50_000, temperature=2.0, lr=0.1, n_train=10, seed=5)
    # D = 2 * 0.1 / 10 = 0.02, msd(100) = 4; relative std 0.0063, 5 sigma
    assert np.mean((w[1] - w[0]) ** 2) == pytest.approx(4.0, rel=0.032)
    z = synthetic.langevin_flat([0, 100], 10, temperature=0.0, lr=0.1, n_train=10)
    assert np.all(z[0] == z[1])


def test_closed_forms():
    assert synthetic.brownian_tau(0.9, 1.0, 1.0) == pytest.approx(0.18481, rel=1e-4)
    assert synthetic.brownian_tau(np.exp(-1), 1.0, 1.0) == pytest.approx(2.18154, rel=1e-5)
    assert synthetic.brownian_self_overlap(synthetic.TAU90_FACTOR, 1.0, 1.0) == pytest.approx(0.9)
    assert synthetic.brownian_self_overlap(0.0, 1.0, 1.0) == 1.0
    # a homogeneous ensemble has only the finite-N binomial part: (1 - 1/R) p (1 - p)
    p = erf(1 / np.sqrt(4 * 2.0))
    assert synthetic.chi4_heterogeneous(2.0, [1.0] * 4, 1.0, 100) == pytest.approx(0.75 * p * (1 - p))
    loss = synthetic.loss_curve([0, 1, 100], 0.1, 2.0, 0.5)
    np.testing.assert_allclose(loss, [2.1, 2.1, 0.1 + 2.0 / 10])


def test_write_archive_round_trip(tmp_path):
    steps = [0, 2, 8]
    w = synthetic.brownian(steps, 37, 0.1, seed=0)
    path = synthetic.write_archive(tmp_path / "a.trajkit", steps, w, metadata={"dynamics.temperature": 0.5},
                                   metrics={"train_loss": [3.0, 2.0, 1.0]})
    arch = open_archive(path)
    np.testing.assert_array_equal(arch.steps, steps)
    np.testing.assert_array_equal(arch.params[:, :], w.astype(np.float32))
    np.testing.assert_array_equal(arch.metrics["train_loss"], [3.0, 2.0, 1.0])
    assert arch.metadata["dynamics"]["temperature"] == 0.5
    assert arch.metadata["schedule"] == {"kind": "explicit", "steps": steps}


def test_write_ensemble_follows_the_shared_format(tmp_path):
    root = synthetic.langevin_flat_ensemble(tmp_path / "ens", [0, 1, 4], 10, [0.1, 1.0], replicas=2)
    doc = json.loads((root / "ensemble.json").read_text())
    assert doc["format"] == "trajkit-ensemble" and doc["version"] == 1
    assert doc["sweep"] == {"dynamics.temperature": [0.1, 1.0]}
    assert [r["replica"] for r in doc["runs"]] == [0, 1, 0, 1]
    for run in doc["runs"]:
        arch = open_archive(root / run["path"])
        assert arch.run_id == run["run_id"]
        assert arch.metadata["ensemble"]["id"] == doc["id"]
        assert arch.metadata["ensemble"]["coords"] == run["coords"]          # dotted keys kept verbatim
        assert arch.metadata["dynamics"]["temperature"] == run["coords"]["dynamics.temperature"]
        assert arch.metadata["dataset"]["n_train"] == 100


def test_bad_input_is_refused():
    with pytest.raises(TrajkitError, match="strictly increasing"):
        synthetic.brownian([0, 5, 5], 10, 1.0)
    with pytest.raises(TrajkitError, match="diffusion must be > 0"):
        synthetic.brownian([0, 5], 10, 0.0)
    with pytest.raises(TrajkitError, match="replicas"):
        synthetic.brownian([0, 5], 10, 1.0, replicas=0)
