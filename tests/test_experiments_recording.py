"""``trajkit record`` writes what a user's training loop writes through ``trajkit.Recorder``.

The runner's archive of replica r is compared with an archive recorded by a plain loop — the same model,
initial parameters, full-batch updates and evaluation, one ``rec.step`` per optimiser step — written by
the Recorder: bit for bit for the sequential engine (ordinary modules, the same floating-point
operations), to float tolerance for the batched one (batched GEMMs; its snapshot metrics are evaluated on
the writer thread from the slot copy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trajkit
from trajkit.experiments import build_dataset, build_model, losses, run_experiment
from trajkit.experiments.dynamics import Dynamics

TINY = ['data.name="teacher"', "data.n_train=40", "data.n_test=12", "data.dim=4", "model.hidden=[6]",
        'loss.name="mse"', 'dynamics.kind="gd"', "dynamics.lr=0.05", "dynamics.weight_decay=0.001",
        "run.steps=40", 'snapshots.schedule="log"', "snapshots.start=1", "snapshots.n=12", "run.replicas=2"]


def _plain_loop(path, arch) -> trajkit.Archive:
    """Record ``arch``'s run again: a plain loop, the Recorder, the same seeded start (``arch``'s row 0)."""
    meta = arch.metadata
    ds = build_dataset(meta["dataset"]["spec"])
    loss = meta["loss"]["name"]
    X, Xt = torch.as_tensor(ds.X_train), torch.as_tensor(ds.X_test)
    T = losses.targets(loss, torch.as_tensor(ds.y_train), ds.n_classes)
    Tt = losses.targets(loss, torch.as_tensor(ds.y_test), ds.n_classes)
    model = build_model(meta["model"]["spec"])
    params = list(model.parameters())
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(arch.params[0, :])), params)
    dyn = Dynamics.from_config(meta["config"]["dynamics"], ds.n_train)
    steps = meta["config"]["run"]["steps"]

    @torch.no_grad()
    def evaluate(m):
        return {"train_loss": losses.per_sample(loss, m(X), T).sum() / X.shape[0],
                "test_loss": losses.per_sample(loss, m(Xt), Tt).sum() / Xt.shape[0]}

    schedule = trajkit.schedules.explicit([int(s) for s in arch.steps])
    with trajkit.Recorder(path, model, schedule=schedule, evaluate=evaluate) as rec:
        for t in range(steps):
            value = losses.per_sample(loss, model(X), T).sum() / X.shape[0]   # L(w(t)) on the full batch
            grads = list(torch.autograd.grad(value, params))
            rec.step(t, loss=value.detach(), epoch=float(t), lr=dyn.lr)      # the model holds w(t)
            dyn.update(params, grads, None, None)
        rec.snapshot(steps, epoch=float(steps))
    return trajkit.open_archive(path)


@pytest.mark.parametrize("vectorize", [False, True], ids=["sequential-bitwise", "batched"])
def test_runner_archive_equals_a_recorder_loop_archive(tmp_path, vectorize):
    s = run_experiment(None, tmp_path / "ens", [*TINY, f"run.vectorize={str(vectorize).lower()}"], quiet=True)
    for r in s["runs"]:
        arch = trajkit.open_archive(r["path"])
        assert arch.n_snapshots == 12 and arch.metadata["status"] == "done"
        mine = _plain_loop(tmp_path / f"loop{r['replica']}.trajkit", arch)
        np.testing.assert_array_equal(mine.steps, arch.steps)
        np.testing.assert_array_equal(mine.epochs, arch.epochs)
        np.testing.assert_array_equal(mine.trace["step"], arch.trace["step"])
        np.testing.assert_array_equal(mine.trace["step"], np.arange(40))
        np.testing.assert_array_equal(mine.trace["lr"], arch.trace["lr"])
        pairs = [(mine.params[:, :], arch.params[:, :]), (mine.trace["loss"], arch.trace["loss"]),
                 *((mine.metrics[m], arch.metrics[m]) for m in ("train_loss", "test_loss"))]
        for a, b in pairs:
            if vectorize:
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)
        assert not np.array_equal(arch.params[0, :], arch.params[-1, :])   # it trained
