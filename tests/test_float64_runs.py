"""``run.dtype = "float64"``: training in float64, each snapshot's exact parameters kept (params_float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trajkit
from trajkit.experiments import build_dataset, build_model, losses, run_experiment
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.float64_params import read_float64_params

TINY = ['data.name="teacher"', "data.n_train=40", "data.n_test=12", "data.dim=4", "model.hidden=[6]",
        'loss.name="mse"', 'dynamics.kind="gd"', "dynamics.lr=0.1", "dynamics.weight_decay=0.001",
        "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=10", "run.replicas=2",
        'run.dtype="float64"']


@pytest.mark.parametrize("vectorize", [True, False])
def test_float64_run_follows_a_float64_reference_loop(tmp_path, vectorize):
    s = run_experiment(None, tmp_path / "e", [*TINY, f"run.vectorize={str(vectorize).lower()}"], quiet=True)
    for run in s["runs"]:
        arch = trajkit.open_archive(run["path"])
        meta = arch.metadata
        assert meta["dtype"] == "float64" and meta["params_float64"] == "params_float64"
        ds = build_dataset(meta["dataset"]["spec"])
        X = torch.as_tensor(ds.X_train, dtype=torch.float64)
        T = losses.targets("mse", torch.as_tensor(ds.y_train), 2).to(torch.float64)
        model = build_model(meta["model"]["spec"]).double()
        params = list(model.parameters())
        exact0 = read_float64_params(run["path"], 0)
        np.testing.assert_array_equal(exact0, np.asarray(arch.params[0, :], dtype=np.float64))  # a float32 init
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.from_numpy(exact0), params)
        dyn = Dynamics.from_config(meta["config"]["dynamics"], ds.n_train)
        for t in range(31):
            if t % 10 == 0:
                ref = torch.nn.utils.parameters_to_vector(params).detach().numpy()
                got = read_float64_params(run["path"], t)
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
                row = arch.row(t)
                np.testing.assert_array_equal(np.asarray(arch.params[row, :]), got.astype(np.float32))
                if t:
                    assert not np.array_equal(got, got.astype(np.float32).astype(np.float64))   # needs float64
                loss = (model(X) - T).square().mean().item()
                np.testing.assert_allclose(arch.metrics["train_loss"][row], loss, rtol=1e-12)
            value = (model(X) - T).square().mean()
            grads = list(torch.autograd.grad(value, params))
            dyn.update(params, grads, None, None)


def test_float64_stages_chain_and_langevin_noise_exactly(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[data]\nname = "teacher"\nn_train = 30\nn_test = 10\ndim = 3\n[model]\nhidden = [4]\n'
                   '[loss]\nname = "mse"\n[dynamics]\nkind = "gd"\nlr = 0.1\n[run]\nsteps = 7\ndtype = "float64"\n'
                   '[snapshots]\nschedule = "linear"\nevery = 7\n[[stages]]\nname = "gd"\n[[stages]]\n'
                   'name = "langevin"\nsteps = 5\n[stages.dynamics]\nkind = "langevin"\ntemperature = 0.01\n')
    s = run_experiment(cfg, tmp_path / "out", quiet=True)
    gd, lang = (next(r["path"] for r in s["runs"] if r["stage"] == st) for st in ("gd", "langevin"))
    parent = read_float64_params(gd, 7)
    np.testing.assert_array_equal(read_float64_params(lang, 0), parent)     # exact, not via float32
    assert not np.array_equal(parent, parent.astype(np.float32).astype(np.float64))
    end = read_float64_params(lang, 5)
    assert np.isfinite(end).all() and not np.array_equal(end, parent)
