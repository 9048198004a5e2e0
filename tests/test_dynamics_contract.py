"""Every dynamics plugin registers through the entry point, meets the analysis contract, and its result
saves, validates, loads back and plots (trajkit.testing.check_analysis) — on small synthetic ensembles."""

import matplotlib
import numpy as np
import pytest
from trajkit_dynamics.aging import Aging
from trajkit_dynamics.chi4 import Chi4
from trajkit_dynamics.loss import LossDynamics
from trajkit_dynamics.overlaps import Overlaps
from trajkit_dynamics.relaxation import Relaxation

import trajkit
from trajkit import synthetic
from trajkit.testing import check_analysis

matplotlib.use("Agg")
STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 3000, 30))])).astype(np.int64)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("c") / "sweep"
    runs = []
    for temp in (1e-3, 1e-2):
        for r in range(3):
            w = synthetic.langevin_flat(STEPS, 300, temp, 0.1, 100, seed=int(temp * 1e4) + r)
            runs.append({"steps": STEPS, "params": w, "replica": r, "coords": {"dynamics.temperature": temp},
                         "metadata": {"dynamics": {"kind": "langevin", "lr": 0.1, "temperature": temp},
                                      "dataset": {"n_train": 100}},
                         "metrics": {"train_loss": synthetic.loss_curve(STEPS, 0.05, 1.0, 0.5)}})
    return synthetic.write_ensemble(root, runs, sweep={"dynamics.temperature": [1e-3, 1e-2]})


def test_entry_point_registers_all_five():
    names = {a["name"]: a for a in trajkit.list_analyses()}
    for name in ("overlaps", "relaxation", "aging", "chi4", "loss"):
        assert names[name]["plugin"] == "dynamics"


@pytest.mark.parametrize("cls, params", [
    (Overlaps, {"n_waiting_times": 3, "epsilon": 0.01}),
    (Overlaps, {"mode": "lag", "epsilon_factor": 5.0, "origin_min_step": 1}),
    (Relaxation, {"waiting_times": [0], "epsilon": 0.01, "n_boot": 10}),
    (Aging, {"n_waiting_times": 3, "n_boot": 10}),
    (Chi4, {"n_waiting_times": 3, "epsilon": 0.01, "n_boot": 10}),
    (Chi4, {"mode": "lag", "epsilon": 0.01, "n_boot": 10}),
    (LossDynamics, {"n_boot": 10}),
    (LossDynamics, {"group_by": "dynamics.temperature", "n_boot": 0}),
], ids=["overlaps", "overlaps-lag", "relaxation", "aging", "chi4", "chi4-lag", "loss", "loss-groups"])
def test_contract(cls, params, sweep, tmp_path):
    result = check_analysis(cls, data=[sweep], params=params, tmp_path=tmp_path)
    assert result is not None


def test_plugins_document_their_keys():
    import trajkit_dynamics.aging as a
    import trajkit_dynamics.chi4 as c
    import trajkit_dynamics.loss as lo
    import trajkit_dynamics.overlaps as o
    import trajkit_dynamics.relaxation as r

    for module, keys in ((o, ["overlap_normalized", "self_overlap", "participation", "alpha2", "disp_hist",
                              "replica_overlap"]),
                         (r, ["tau_T_slope", "tau_T_slope_ci", "tts_exponent", "tts_exponent_ci"]),
                         (a, ["mu_collapse", "mu_h_ci", "mu_tau", "regime"]),
                         (c, ["chi4_sem", "chi4_peak", "tau4"]),
                         (lo, ["loss_inf", "beta", "t_learn", "w_c"])):
        for key in keys:
            assert f"``{key}" in module.__doc__, (module.__name__, key)
