"""The dynamics against independent computations: torch.optim.SGD, the Langevin formula, its MSD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trajkit
from trajkit.experiments import build_dataset, build_model, run_experiment
from trajkit.experiments.randomness import MinibatchStream, NoiseStream

TINY = ['data.name="teacher"', "data.n_train=64", "data.n_test=32", "data.dim=5", "model.hidden=[6]",
        'loss.name="mse"', "run.steps=20", 'snapshots.schedule="linear"', "snapshots.every=1"]


def record(tmp_path, name, overrides):
    summary = run_experiment(None, tmp_path / name, [*TINY, *overrides], quiet=True)
    assert all(r["status"] == "done" for r in summary["runs"]), summary["runs"]
    return [trajkit.open_archive(r["path"]) for r in summary["runs"]]


def rebuild(arch, row=0):
    model = build_model(arch.metadata["model"]["spec"])
    model.load_state_dict(arch.state_dict(row))
    ds = build_dataset(arch.metadata["dataset"]["spec"])
    return model, ds


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


def test_gd_equals_torch_optim_sgd_full_batch(tmp_path):
    archs = record(tmp_path, "gd", ['dynamics.kind="gd"', "dynamics.lr=0.2", "dynamics.weight_decay=0.01",
                                    "run.replicas=2"])
    for arch in archs:
        model, ds = rebuild(arch)
        X, y = torch.from_numpy(ds.X_train), torch.from_numpy(2.0 * ds.y_train - 1.0).float().unsqueeze(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.2, weight_decay=0.01)
        for t in range(20):
            loss = F.mse_loss(model(X), y)
            assert arch.trace["loss"][t] == pytest.approx(loss.item(), rel=1e-5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            np.testing.assert_allclose(flat(model), arch.params[t + 1, :], rtol=1e-5, atol=1e-6)
        assert arch.metrics["train_loss"][-1] == pytest.approx(F.mse_loss(model(X), y).item(), rel=1e-5)


def test_sgd_momentum_equals_torch_optim_sgd_on_the_same_minibatches(tmp_path):
    (arch,) = record(tmp_path, "sgd", ['dynamics.kind="sgd"', "dynamics.lr=0.1", "dynamics.momentum=0.9",
                                       "dynamics.batch_size=10", 'loss.name="cross_entropy"', "run.seed=5"])
    model, ds = rebuild(arch)
    X, y = torch.from_numpy(ds.X_train), torch.from_numpy(ds.y_train)
    batches = MinibatchStream([5], ds.n_train, 10)   # replica 0 of seed 5 has seed 5
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []
    for t in range(20):
        idx = batches.indices(t)[0]
        seen.append(idx)
        loss = F.cross_entropy(model(X[idx]), y[idx])
        assert arch.trace["loss"][t] == pytest.approx(loss.item(), rel=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(flat(model), arch.params[20, :], rtol=1e-4, atol=1e-6)
    epoch0 = torch.cat(seen[:7]).sort().values               # ceil(64/10) = 7 batches cover each sample once
    np.testing.assert_array_equal(epoch0.numpy(), np.arange(64))
    assert arch.epochs[7] == pytest.approx(1.0)


def test_langevin_follows_its_stated_update(tmp_path):
    T, lr, wd = 0.05, 0.1, 0.02
    (arch,) = record(tmp_path, "lang", ['dynamics.kind="langevin"', f"dynamics.lr={lr}", f"dynamics.temperature={T}",
                                        f"dynamics.weight_decay={wd}", "run.seed=2"])
    model, ds = rebuild(arch)
    P = ds.n_train
    X, y = torch.from_numpy(ds.X_train), torch.from_numpy(2.0 * ds.y_train - 1.0).float().unsqueeze(1)
    noise = NoiseStream([2], arch.n_params)
    params = list(model.parameters())
    for t in range(20):
        grads = torch.autograd.grad(F.mse_loss(model(X), y), params)
        xi = noise.draw(t)[0]
        with torch.no_grad():
            off = 0
            for p, g in zip(params, grads, strict=True):
                n = p.numel()
                p -= lr * (g + wd * p)
                p += math.sqrt(2 * T * lr / P) * xi[off:off + n].view_as(p)
                off += n
        np.testing.assert_allclose(flat(model), arch.params[t + 1, :], rtol=1e-5, atol=1e-6)
    assert arch.metadata["dynamics"]["noise_convention"].startswith("w <- w - lr*(grad + wd*w) + sqrt(2*T*lr/P)")


def test_langevin_at_zero_temperature_is_gd_bit_for_bit(tmp_path):
    (lang,) = record(tmp_path, "lang", ['dynamics.kind="langevin"', "dynamics.temperature=0.0", "dynamics.lr=0.3"])
    (gd,) = record(tmp_path, "gd", ['dynamics.kind="gd"', "dynamics.lr=0.3"])
    np.testing.assert_array_equal(lang.params[:, :], gd.params[:, :])
    np.testing.assert_array_equal(lang.trace["loss"], gd.trace["loss"])


def test_langevin_msd_is_2_T_lr_over_P_per_step_when_noise_dominates(tmp_path):
    """Δ(t) = (1/N) Σ_i (w_i(t0+t) − w_i(t0))² = 2 T η t / P when the drift η∇L is negligible.

    Each (replica, origin) estimate averages N squared Gaussian displacements: relative standard error
    sqrt(2/N); with R replicas and non-overlapping origins at lag 1 far more samples enter. The
    tolerance is 4 sqrt(2/(N R)) ≈ 6 % (N = 1201, R = 8), above the drift bias here (< 0.1 %).
    """
    T, lr, P = 10.0, 1e-3, 100
    archs = record(tmp_path, "msd", ['dynamics.kind="langevin"', f"dynamics.lr={lr}", f"dynamics.temperature={T}",
                                     f"data.n_train={P}", "data.dim=10", "model.hidden=[100]", "run.replicas=8",
                                     "run.steps=30"])
    w = np.stack([a.params[:, :] for a in archs]).astype(np.float64)      # [R, T, N]
    R, _, N = w.shape
    sigma2 = 2 * T * lr / P
    tol = 4 * math.sqrt(2 / (N * R))
    for lag in (1, 2, 5, 10):
        msd = np.mean((w[:, lag:] - w[:, :-lag]) ** 2)
        assert msd / (sigma2 * lag) == pytest.approx(1.0, abs=tol), lag


def test_same_seed_reproduces_archive_bit_for_bit(tmp_path):
    over = ['dynamics.kind="langevin"', "dynamics.temperature=0.01", "run.replicas=2", "dynamics.lr=0.1"]
    a, b = record(tmp_path, "a", over), record(tmp_path, "b", over)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])
        np.testing.assert_array_equal(x.trace["loss"], y.trace["loss"])
        np.testing.assert_array_equal(x.metrics["test_loss"], y.metrics["test_loss"])
    assert not np.array_equal(a[0].params[-1, :], a[1].params[-1, :])   # replicas differ


@pytest.mark.parametrize("model", [["model.hidden=[6, 5]"], ['model.kind="cnn"', 'data.name="digits"',
                                                             "data.n_train=96", "data.n_test=40", "model.channels=[3]"],
                                   ['model.kind="rnn"', 'data.name="digits"', "data.n_train=96", "data.n_test=40",
                                    "model.width=5", "model.depth=2"]])
def test_batched_replicas_equal_one_at_a_time_and_solo_runs(tmp_path, model):
    over = [*model, 'dynamics.kind="sgd"', "dynamics.lr=0.05", "dynamics.batch_size=16", "dynamics.momentum=0.5",
            "run.replicas=3", "run.seed=4", "run.steps=12", "snapshots.every=3", 'loss.name="cross_entropy"']
    batched = record(tmp_path, "batched", over)
    sequential = record(tmp_path, "seq", [*over, "run.vectorize=false"])
    (solo,) = record(tmp_path, "solo", [*over, "run.replicas=1", "run.seed=6"])   # replica 2 of seed 4
    for b, s in zip(batched, sequential, strict=True):
        np.testing.assert_allclose(b.params[:, :], s.params[:, :], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.trace["loss"], s.trace["loss"], rtol=1e-5)
    np.testing.assert_allclose(batched[2].params[:, :], solo.params[:, :], rtol=1e-4, atol=1e-5)
    assert batched[2].metadata["seed"] == solo.metadata["seed"] == 6
