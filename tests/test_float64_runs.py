"""``run.dtype = "float64"``: training in float64, recorded losslessly in a float64 ``snapshots/params``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import trajkit
from trajkit.archive import create
from trajkit.archive.estimate import METADATA_BYTES
from trajkit.cli import cli
from trajkit.experiments import build_dataset, build_model, losses, run_experiment
from trajkit.experiments.dynamics import Dynamics
from trajkit.experiments.replicas import BatchedReplicas
from trajkit.experiments.runner import _train_data
from trajkit.experiments.training import snapshot_metrics

TINY = ['data.name="teacher"', "data.n_train=40", "data.n_test=12", "data.dim=4", "model.hidden=[6]",
        'loss.name="mse"', 'dynamics.kind="gd"', "dynamics.lr=0.1", "dynamics.weight_decay=0.001",
        "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=10", "run.replicas=2",
        'run.dtype="float64"']


def _via_float32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)


def _reference_rows(arch: trajkit.archive.reader.Archive) -> tuple[dict[int, tuple[np.ndarray, float]], np.ndarray]:
    """Full-batch GD of the archive's model in float64 with ``torch.nn`` and autograd, from its step-0 row:
    ``{step: (params, train loss)}`` at every snapshot step, and the loss of each step 0..29 (the trace)."""
    meta = arch.metadata
    ds = build_dataset(meta["dataset"]["spec"])
    X = torch.as_tensor(ds.X_train, dtype=torch.float64)
    T = losses.targets("mse", torch.as_tensor(ds.y_train), 2).to(torch.float64)
    model = build_model(meta["model"]["spec"]).double()
    params = list(model.parameters())
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(arch.params[0, :])), params)
    dyn = Dynamics.from_config(meta["config"]["dynamics"], ds.n_train)
    out, trace = {}, []
    for t in range(31):
        if t % 10 == 0:
            with torch.no_grad():
                loss = (model(X) - T).square().mean().item()
            out[t] = (torch.nn.utils.parameters_to_vector(params).detach().numpy().copy(), loss)
        value = (model(X) - T).square().mean()
        trace.append(value.item())
        dyn.update(params, list(torch.autograd.grad(value, params)), None, None)
    return out, np.asarray(trace[:30])


@pytest.mark.parametrize("vectorize", [True, False])
def test_float64_run_stores_float64_params_that_follow_a_float64_reference_loop(tmp_path, vectorize):
    s = run_experiment(None, tmp_path / "e", [*TINY, f"run.vectorize={str(vectorize).lower()}"], quiet=True)
    for run in s["runs"]:
        arch = trajkit.open_archive(run["path"])
        assert arch.metadata["dtype"] == "float64" and arch.storage_dtype == "float64"
        assert not (Path(run["path"]) / "params_float64").exists()      # one params array: snapshots/params
        rows = np.asarray(arch.params[:, :])
        assert rows.dtype == np.float64
        np.testing.assert_array_equal(rows[0], _via_float32(rows[0]))       # the float32 default init
        assert not np.array_equal(rows[-1], _via_float32(rows[-1]))         # later rows need float64
        # The engines compute the same arithmetic as the torch.nn loop but with other kernels (batched
        # matmuls / per-replica models, another summation order): equal to float64 rounding, far below
        # float32's 6e-8 relative resolution.
        snaps, trace = _reference_rows(arch)
        np.testing.assert_allclose(arch.trace["loss"], trace, rtol=1e-12)
        for t, (ref, loss) in snaps.items():
            row = arch.row(t)
            np.testing.assert_allclose(rows[row], ref, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(arch.metrics["train_loss"][row], loss, rtol=1e-12)


def test_float64_metrics_evaluated_off_thread_are_the_engine_evaluation_bit_for_bit(tmp_path):
    """The vectorized CPU engine evaluates a float64 run's metrics on the writer thread from the float64
    slot copies: they equal the engine's own evaluation (both replicas batched, as in training) exactly."""
    s = run_experiment(None, tmp_path / "e", TINY, quiet=True)
    archs = [trajkit.open_archive(r["path"]) for r in s["runs"]]
    meta = archs[0].metadata
    data = _train_data(build_dataset(meta["dataset"]["spec"]), "mse", "cpu", torch.float64)
    with torch.device("meta"):
        module = build_model(meta["model"]["spec"])
    for row in range(archs[0].n_snapshots):
        init = torch.from_numpy(np.stack([np.asarray(a.params[row, :]) for a in archs]))
        engine = BatchedReplicas(module, archs[0].layout, init)
        assert engine.evaluates_off_thread
        m = snapshot_metrics(engine.evaluate, data)
        for name in ("train_loss", "test_loss"):
            assert [a.metrics[name][row] for a in archs] == m[name].tolist()


def test_float64_run_info_validate_and_dry_run_estimate(tmp_path):
    out = tmp_path / "e"
    dry = run_experiment(None, out, TINY, quiet=True, dry_run=True)["runs"][0]
    run_experiment(None, out, TINY, quiet=True)
    path = Path(dry["path"])
    runner = CliRunner()
    info = runner.invoke(cli, ["info", "--json", str(path)])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["dtype"] == "float64"
    text = runner.invoke(cli, ["info", str(path)])
    assert text.exit_code == 0 and "float64, all parameters" in text.output
    v = runner.invoke(cli, ["validate", str(path)])
    assert v.exit_code == 0, v.output
    files = [f for f in path.rglob("*") if f.is_file()]
    meta = sum(f.stat().st_size for f in files if f.name == "zarr.json" or f.name.startswith(".trajkit"))
    data = sum(f.stat().st_size for f in files) - meta
    overhead = METADATA_BYTES[0] + METADATA_BYTES[1] * len(trajkit.open_archive(path).layout)
    assert dry["estimated_bytes"] - overhead == data and 0 < meta <= overhead
    n = trajkit.open_archive(path).n_params
    assert data >= 4 * n * 8     # 4 snapshots of float64 rows


def test_float64_run_resumes_to_the_uninterrupted_result(tmp_path):
    over = [*TINY, 'dynamics.kind="langevin"', "dynamics.temperature=0.01"]
    ref = run_experiment(None, tmp_path / "ref", over, quiet=True)
    out = tmp_path / "ens"
    run_experiment(None, out, over, quiet=True)
    doc = json.loads((out / "ensemble.json").read_text())
    for r in doc["runs"]:      # interrupted after the snapshot of step 20 (its trace up to step 20)
        path = out / r["path"]
        with create(path, n_params=trajkit.open_archive(path).n_params, resume="allow") as w:
            w.truncate(21)
            w.update_metadata({"status": "running"})
        r["status"] = "pending"
    (out / "ensemble.json").write_text(json.dumps(doc))
    assert trajkit.open_archive(out / doc["runs"][0]["path"]).steps[-1] == 20
    run_experiment(None, out, over, quiet=True)
    for a, b in zip(ref["runs"], doc["runs"], strict=True):
        x, y = trajkit.open_archive(a["path"]), trajkit.open_archive(out / b["path"])
        assert y.storage_dtype == "float64" and y.metadata["status"] == "done"
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])        # resumed from exact float64 rows
        np.testing.assert_array_equal(x.trace["loss"], y.trace["loss"])


def test_float64_stages_chain_exactly_from_float64_rows(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[data]\nname = "teacher"\nn_train = 30\nn_test = 10\ndim = 3\n[model]\nhidden = [4]\n'
                   '[loss]\nname = "mse"\n[dynamics]\nkind = "gd"\nlr = 0.1\n[run]\nsteps = 7\ndtype = "float64"\n'
                   '[snapshots]\nschedule = "linear"\nevery = 7\n[[stages]]\nname = "gd"\n[[stages]]\n'
                   'name = "langevin"\nsteps = 5\n[stages.dynamics]\nkind = "langevin"\ntemperature = 0.01\n')
    s = run_experiment(cfg, tmp_path / "out", quiet=True)
    gd, lang = (trajkit.open_archive(next(r["path"] for r in s["runs"] if r["stage"] == st))
                for st in ("gd", "langevin"))
    assert gd.storage_dtype == lang.storage_dtype == "float64"
    parent = np.asarray(gd.params[gd.row(7), :])
    assert parent.dtype == np.float64 and not np.array_equal(parent, _via_float32(parent))
    np.testing.assert_array_equal(lang.params[0, :], parent)     # exact, not via float32
    end = np.asarray(lang.params[lang.row(5), :])
    assert np.isfinite(end).all() and not np.array_equal(end, parent)
