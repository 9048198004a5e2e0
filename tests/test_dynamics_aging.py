"""`aging`: a stationary process run in effective time s(t) = t^(1−μ)/(1−μ) returns μ by all three
estimates (collapse, h-form, τ(tw)); Ornstein–Uhlenbeck and Brownian motion are reported as stationary."""

import numpy as np
import pytest
from trajkit_dynamics import aging

import trajkit
from trajkit import synthetic
from trajkit.errors import TrajkitError

TWS = [100, 300, 1000, 3000, 10000]
# short lags after every waiting time (t ≪ tw is where t/tw^μ scaling holds) plus a log-spaced backbone
STEPS = synthetic.two_time_steps(TWS, n_lags=30, base=np.rint(np.geomspace(1, 30000, 40)))
N, R = 2000, 8


def _ensemble(root, w):
    return synthetic.write_ensemble(root, [{"steps": STEPS, "params": w[r]} for r in range(w.shape[0])])


@pytest.fixture(scope="module", params=[0.5, 1.0], ids=["mu0.5", "mu1"])
def effective(request, tmp_path_factory):
    mu = request.param
    d = 0.05 if mu == 0.5 else 1.0
    w = synthetic.effective_time_process(STEPS, N, mu, d, replicas=R, seed=7)
    return mu, _ensemble(tmp_path_factory.mktemp("eff") / "ens", w)


def _check_truth_inside(scalars, truth):
    for name in ("mu_collapse", "mu_h", "mu_tau"):
        lo, hi = scalars[f"{name}_ci"]
        # 95 % bootstrap interval over 8 replicas; half-width ~0.005-0.02 here. The widening by 0.01 allows the
        # deterministic O(t/tw) bias of the t/tw^μ scaling inside max_ratio = 0.1 (Δs is linear in t only
        # to first order, and τ = s_c·tw^μ + s_c²/4 for μ = 0.5), which the bootstrap does not see.
        assert lo - 0.01 <= truth <= hi + 0.01, (name, scalars[name], (lo, hi))
        assert scalars[name] == pytest.approx(truth, abs=0.03)


def test_effective_time_msd(effective):
    mu, root = effective
    r = trajkit.analyze("aging", [root], waiting_times=TWS, observable="msd", max_ratio=0.1, n_boot=60)
    _check_truth_inside(r.scalars, mu)
    assert r.scalars["regime"] == ("simple" if mu == 1.0 else "sub")
    assert r["msd"].shape == (len(TWS), STEPS.size)


def test_effective_time_self_overlap(effective):
    mu, root = effective
    r = trajkit.analyze("aging", [root], waiting_times=TWS, observable="self_overlap", epsilon=0.3 if mu == 1 else 0.4,
                        threshold=0.9, max_ratio=0.1, n_boot=60)
    _check_truth_inside(r.scalars, mu)
    assert np.all(np.isfinite(r["tau"]))


@pytest.mark.parametrize("process", ["ou", "brownian"])
def test_stationary_processes_report_no_mu(process, tmp_path):
    steps = synthetic.two_time_steps(TWS[:4], n_lags=20, base=np.rint(np.geomspace(1, 10000, 30)))
    if process == "ou":
        w = synthetic.ornstein_uhlenbeck(steps, N, 1e-3, 1e-2, replicas=4, seed=2)
    else:
        w = synthetic.brownian(steps, N, 1e-3, replicas=4, seed=2)
    root = synthetic.write_ensemble(tmp_path / "ens", [{"steps": steps, "params": w[i]} for i in range(4)])
    r = trajkit.analyze("aging", [root], waiting_times=TWS[:4], observable="msd", n_boot=40)
    assert r.scalars["regime"] == "stationary"
    for name in ("mu_collapse", "mu_h", "mu_tau"):
        assert r.scalars[name] is None or np.isnan(r.scalars[name])      # no fake exponent
    # the raw fits sit at 0 (every scaling variable is the lag itself at μ = 0)
    assert abs(r.scalars["mu_collapse_raw"]) < 0.05


def test_bootstrap_needs_two_replicas(tmp_path):
    w = synthetic.effective_time_process(STEPS, 200, 1.0, 1.0, seed=1)
    path = synthetic.write_archive(tmp_path / "one.trajkit", STEPS, w)
    with pytest.raises(TrajkitError, match="at least 2 replicas") as e:
        trajkit.analyze("aging", [path], waiting_times=TWS)
    assert "\n" not in str(e.value)
    r = trajkit.analyze("aging", [path], waiting_times=TWS, n_boot=0, max_ratio=0.1)
    assert r.scalars["mu_collapse"] == pytest.approx(1.0, abs=0.1)
    assert r.scalars["mu_collapse_ci"] == [None, None] or np.all(np.isnan(r.scalars["mu_collapse_ci"]))


def test_regime_rule():
    assert aging.classify_regime(0.02, (-0.01, 0.05), 0.01, (-0.02, 0.03)) == "stationary"
    assert aging.classify_regime(0.98, (0.95, 1.01), 1.0, (0.9, 1.1)) == "simple"
    assert aging.classify_regime(0.6, (0.55, 0.65), 0.6, (0.5, 0.7)) == "sub"
    assert aging.classify_regime(1.4, (1.3, 1.5), 1.4, (1.3, 1.5)) == "super"
    assert aging.classify_regime(float("nan"), (0, 0), 0.0, (0, 0)) == "undetermined"


def test_h_variable_limits():
    lags = np.array([1.0, 10.0])
    np.testing.assert_allclose(aging.ln_h_variable(100.0, lags, 1.0), np.log(np.log1p(lags / 100)))
    np.testing.assert_allclose(aging.ln_h_variable(100.0, lags, 0.0), np.log(lags), atol=1e-12)
    s = synthetic.effective_time(np.array([110.0, 100.0]), 0.5)
    assert np.exp(aging.ln_h_variable(100.0, np.array([10.0]), 0.5))[0] == pytest.approx(s[0] - s[1])
