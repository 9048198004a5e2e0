"""Planning and running an experiment through the library API leave the caller's global RNGs alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajkit.experiments import plan_experiment, run_experiment

TINY = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
        'loss.name="quadratic_hinge"', "run.steps=12", 'snapshots.schedule="linear"', "snapshots.every=4",
        "run.replicas=2"]


def _states():
    return torch.random.get_rng_state().clone(), np.random.get_state()  # noqa: NPY002


def _assert_unchanged(before):
    torch_state, np_state = before
    assert torch.equal(torch.random.get_rng_state(), torch_state), "the global torch RNG was touched"
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:], \
        "the global numpy RNG was touched"


def test_planning_and_dry_run_leave_the_global_rngs_alone(tmp_path):
    torch.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002
    before = _states()
    plan_experiment(None, tmp_path / "a", [*TINY, 'model.kind="cnn"', 'data.name="digits"', "data.n_train=64",
                                           'loss.name="cross_entropy"'])
    plan_experiment(None, tmp_path / "b", [*TINY, 'model.kind="rnn"'])
    run_experiment(None, tmp_path / "c", TINY, quiet=True, dry_run=True)
    _assert_unchanged(before)


@pytest.mark.parametrize("extra", [
    ['dynamics.kind="langevin"', "dynamics.temperature=0.01"],
    ['dynamics.kind="sgd"', "dynamics.batch_size=8", "dynamics.momentum=0.9", "run.vectorize=false"],
], ids=["langevin-batched", "sgd-sequential"])
def test_running_leaves_the_global_rngs_alone(tmp_path, extra):
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    before = _states()
    summary = run_experiment(None, tmp_path / "out", [*TINY, *extra], quiet=True)
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    _assert_unchanged(before)
