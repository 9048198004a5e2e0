"""Gradient statistics and train_energy against closed forms on a quadratic loss.

A linear model ``f(x) = w·x + c`` with the mse loss ``ℓ_i = (f(x_i) − y_i)²`` has per-sample gradients
``g_i = 2 (f(x_i) − y_i) [x_i, 1]``, known in closed form from the recorded parameters. For a minibatch of b
samples drawn without replacement from the P samples, ``g_b`` = mean of its b gradients has
``E g_b = ḡ`` and ``E|g_b − ḡ|² = (σ²/b)·(P − b)/(P − 1)`` with ``σ² = (1/P) Σ_i |g_i − ḡ|²`` (the finite-population
correction); over K independent minibatches the recorded ``grad_var = (1/K)Σ|g_k|² − |ḡ_K|²`` has expectation
``(K − 1)/K`` times that, and ``grad_mean_norm2 = |ḡ_K|²`` has expectation ``|ḡ|² + E|g_b − ḡ|²/K``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trajkit
from trajkit.errors import TrajkitError
from trajkit.experiments import build_dataset, run_experiment
from trajkit.experiments.randomness import gradient_sample_indices
from trajkit.record.gradient_stats import GradientStats

LR, WD, B = 0.05, 0.01, 8
BASE = ['data.name="teacher"', "data.n_train=40", "data.n_test=10", "data.dim=4", "model.hidden=[]",
        'loss.name="mse"', 'dynamics.kind="sgd"', f"dynamics.lr={LR}", f"dynamics.weight_decay={WD}",
        f"dynamics.batch_size={B}", "run.steps=10", 'snapshots.schedule="explicit"', "snapshots.steps=[0, 10]",
        "metrics.gradient_stats=true"]


def _per_sample_gradients(arch, row):
    """``[P, N]`` float64: g_i = 2 (w·x_i + c − y_i) [x_i, 1] at snapshot ``row`` (layout: weight, bias)."""
    ds = build_dataset(arch.metadata["dataset"]["spec"])
    w = np.asarray(arch.params[row, :], dtype=np.float64)
    X = ds.X_train.astype(np.float64)
    y = np.where(ds.y_train == 1, 1.0, -1.0)
    r = X @ w[:4] + w[4] - y
    return 2 * r[:, None] * np.hstack([X, np.ones((len(X), 1))]), X, y, w


def _estimator(G):
    mean = G.mean(axis=0)
    return mean @ mean, (G * G).sum(axis=1).mean() - mean @ mean


@pytest.mark.parametrize("vectorize", [True, False])
def test_recorded_statistics_equal_the_estimator_on_the_documented_minibatches(tmp_path, vectorize):
    K, b = 6, 3
    s = run_experiment(None, tmp_path / "e", [*BASE, f"metrics.gradient_batches={K}",
                                              f"metrics.gradient_batch_size={b}", "run.replicas=2",
                                              f"run.vectorize={str(vectorize).lower()}"], quiet=True)
    for run in s["runs"]:
        arch = trajkit.open_archive(run["path"])
        m = arch.metrics
        for row, step in enumerate(arch.steps):
            g, X, y, w = _per_sample_gradients(arch, row)
            idx = gradient_sample_indices(arch.metadata["seed"], int(step), 40, K, b).numpy()
            mean2, var = _estimator(np.stack([g[i].mean(axis=0) for i in idx]))
            np.testing.assert_allclose(m["grad_mean_norm2"][row], mean2, rtol=2e-5)
            np.testing.assert_allclose(m["grad_var"][row], var, rtol=2e-5)
            np.testing.assert_allclose(m["noise_D"][row], LR ** 2 * var / (2 * B), rtol=2e-5)
            loss = np.mean((X @ w[:4] + w[4] - y) ** 2)
            np.testing.assert_allclose(m["train_energy"][row], loss + WD / 2 * (w @ w), rtol=1e-5)
            np.testing.assert_allclose(m["train_energy"][row] - m["train_loss"][row], WD / 2 * (w @ w), rtol=1e-6)


def test_statistics_match_the_sampling_without_replacement_closed_form(tmp_path):
    K, b, P = 3000, 5, 40
    s = run_experiment(None, tmp_path / "e", [*BASE, f"metrics.gradient_batches={K}",
                                              f"metrics.gradient_batch_size={b}", "run.steps=1",
                                              "snapshots.steps=[0]"], quiet=True)
    arch = trajkit.open_archive(s["runs"][0]["path"])
    g, *_ = _per_sample_gradients(arch, 0)
    gbar = g.mean(axis=0)
    sigma2 = ((g - gbar) ** 2).sum(axis=1).mean()
    var_b = sigma2 / b * (P - b) / (P - 1)
    # relative standard errors of about 1 % (grad_var) and 2-3 % (grad_mean_norm2) over run.seed = 0..2; the
    # finite-population factor (P - b)/(P - 1) = 0.897 is well outside the tolerance, so it is tested
    np.testing.assert_allclose(arch.metrics["grad_var"][0], (K - 1) / K * var_b, rtol=0.04)
    np.testing.assert_allclose(arch.metrics["grad_mean_norm2"][0], gbar @ gbar + var_b / K, rtol=0.08)
    assert abs(arch.metrics["grad_var"][0] - sigma2 / b) > 0.06 * sigma2 / b


def test_recorder_gradient_stats_in_a_user_loop(tmp_path):
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.standard_normal((30, 3)), dtype=torch.float32)
    y = torch.as_tensor(rng.standard_normal(30), dtype=torch.float32)
    model = torch.nn.Linear(3, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=2, shuffle=False)

    def loss(m, batch):
        xb, yb = batch
        return ((m(xb).squeeze(-1) - yb) ** 2).mean()

    stats = GradientStats(loss, loader, batches=5, lr=0.1, batch_size=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with trajkit.Recorder(tmp_path / "run.trajkit", model, schedule=trajkit.schedules.explicit([0, 3]),
                          gradient_stats=stats) as rec:
        for t in range(4):
            rec.step(t)
            opt.zero_grad()
            loss(model, (X, y)).backward()
            opt.step()
    arch = trajkit.open_archive(tmp_path / "run.trajkit")
    for row in range(2):
        w = np.asarray(arch.params[row, :], dtype=np.float64)
        Xn, yn = X.numpy().astype(np.float64), y.numpy().astype(np.float64)
        g = 2 * (Xn @ w[:3] + w[3] - yn)[:, None] * np.hstack([Xn, np.ones((30, 1))])
        mean2, var = _estimator(np.stack([g[2 * k:2 * k + 2].mean(axis=0) for k in range(5)]))  # first 5 batches
        np.testing.assert_allclose(arch.metrics["grad_mean_norm2"][row], mean2, rtol=2e-5)
        np.testing.assert_allclose(arch.metrics["grad_var"][row], var, rtol=2e-5)
        np.testing.assert_allclose(arch.metrics["noise_D"][row], 0.01 * var / 20, rtol=2e-5)


def test_bad_gradient_stats_arguments(tmp_path):
    with pytest.raises(TrajkitError, match="batches=1 must be an integer >= 2"):
        GradientStats(lambda m, b: m(b).sum(), [], batches=1)
    with pytest.raises(TrajkitError, match="give both lr and batch_size"):
        GradientStats(lambda m, b: m(b).sum(), [], lr=0.1)
    with pytest.raises(TrajkitError, match=r"metrics\.gradient_batches = 1 is out of range"):
        run_experiment(None, tmp_path / "e", [*BASE, "metrics.gradient_batches=1"], quiet=True)
    assert not (tmp_path / "e").exists()
