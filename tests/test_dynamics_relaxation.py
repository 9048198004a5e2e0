"""`relaxation`: τ90 and τe of Brownian parameters, unresolved times, the flat-loss Langevin τ(T) slope −1
and the time–temperature-superposition exponent, through real archives and the real entry point."""

import numpy as np
import pytest
from trajkit_dynamics import relaxation as rx

import trajkit
from trajkit import synthetic
from trajkit.errors import TrajkitError

D, EPS, N, R = 1e-3, 1.0, 5000, 4
STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 20000, 120))])).astype(np.int64)


@pytest.fixture(scope="module")
def brownian(tmp_path_factory):
    return synthetic.brownian_ensemble(tmp_path_factory.mktemp("b") / "ens", STEPS, N, D, R, seed=3)


def test_tau90_and_tau_e_of_brownian(brownian):
    r = trajkit.analyze("relaxation", [brownian], waiting_times=[0], epsilon=EPS)
    tau, flag = r["tau"][0], r["tau_flag"][0]
    assert list(flag) == [0, 0]
    # Q is a mean over N*R = 2e4 parameters: dQ <= 0.0034 and |dQ/dln t| = 0.17 at both levels, so ln tau has
    # std <= 0.02; 5 sigma = 10 % (tau90: 0.0021/0.17 -> 6 %)
    assert tau[0] == pytest.approx(0.18481 * EPS**2 / D, rel=0.06)
    assert tau[1] == pytest.approx(2.18154 * EPS**2 / D, rel=0.10)


def test_unresolved_times_are_flagged_not_numbers(tmp_path):
    steps = STEPS[:40]
    frozen = synthetic.write_archive(tmp_path / "f.trajkit", steps, synthetic.frozen(steps, 100))
    r = trajkit.analyze("relaxation", [frozen], waiting_times=[0], epsilon=0.1)
    assert np.all(np.isnan(r["tau"])) and np.all(r["tau_flag"] == rx.TOO_SLOW)
    fast = synthetic.write_archive(tmp_path / "b.trajkit", steps, synthetic.brownian(steps, 2000, 1.0))
    r = trajkit.analyze("relaxation", [fast], waiting_times=[0], epsilon=0.01)
    assert np.all(np.isnan(r["tau"])) and np.all(r["tau_flag"] == rx.TOO_FAST)


def test_relaxation_time_interpolates_linearly():
    lags = np.array([1.0, 2.0, 4.0])
    tau, flag = rx.relaxation_time(lags, np.array([1.0, 0.8, 0.4]), 0.6)
    assert flag == rx.RESOLVED and tau == pytest.approx(3.0)


TEMPS = [0.0, 1e-3, 3e-3, 1e-2, 3e-2]
LANGEVIN_STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 1e4, 80))])).astype(np.int64)
LR, P, EPS_L = 0.1, 100, 0.01


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return synthetic.langevin_flat_ensemble(tmp_path_factory.mktemp("s") / "sweep", LANGEVIN_STEPS, 2000, TEMPS,
                                            replicas=3, lr=LR, n_train=P, seed=5)


def test_flat_loss_langevin_tau_T_slope_is_minus_one(sweep):
    r = trajkit.analyze("relaxation", [sweep], waiting_times=[0], epsilon=EPS_L, n_boot=100)
    lo, hi = r.scalars["tau_T_slope_ci"]
    # D = T lr / P exactly, so tau_e = 2.18 eps^2 / D ∝ 1/T; the bootstrap interval over replicas must cover -1
    assert lo <= -1.0 <= hi
    assert r.scalars["tau_T_slope"] == pytest.approx(-1.0, abs=0.05)
    assert r.scalars["tau_T0"] is None            # T = 0 is frozen: tau unresolved, reported as such
    assert r["tau_T_flag"][0] == rx.TOO_SLOW
    np.testing.assert_array_equal(r.coords["temperature"], TEMPS)
    hot = TEMPS[-1] * LR / P
    assert r["tau_T"][-1] == pytest.approx(synthetic.brownian_tau(np.exp(-1), hot, EPS_L), rel=0.1)


def test_tts_exponent_matches_diffusion(sweep):
    r = trajkit.analyze("relaxation", [sweep], waiting_times=[0], epsilon=EPS_L, n_boot=100)
    # the analytic curve Q = erf(eps / sqrt(4 D t)) sampled at the same lags, fitted the same way
    d = TEMPS[-1] * LR / P
    tau_e = synthetic.brownian_tau(np.exp(-1), d, EPS_L)
    lag = LANGEVIN_STEPS[1:].astype(float)
    expected, _, _ = rx.window_slope(lag / tau_e, synthetic.brownian_self_overlap(lag, d, EPS_L), (1, 1000))
    assert -0.5 < expected < -0.45              # approaches the asymptotic t^-1/2 from above
    lo, hi = r.scalars["tts_exponent_ci"]
    assert lo - 0.01 <= expected <= hi + 0.01   # interval over 3 replicas, plus the tau_e interpolation error
    assert r.scalars["tts_exponent"] == pytest.approx(expected, abs=0.03)
    # collapse: at t/tau_e = 1 every temperature has Q = 1/e by construction
    for g in range(1, len(TEMPS)):
        x, q = r["tts_x"][g], r["tts_q"][g]
        ok = np.isfinite(x)
        assert np.interp(1.0, x[ok], q[ok]) == pytest.approx(np.exp(-1), abs=0.01)


def test_temperature_grouping_needs_two_temperatures(tmp_path):
    one = synthetic.langevin_flat_ensemble(tmp_path / "one", LANGEVIN_STEPS[:20], 50, [1e-3], replicas=2)
    with pytest.raises(TrajkitError, match="two or more groups") as e:
        trajkit.analyze("relaxation", [one], group_by="dynamics.temperature", epsilon=EPS_L)
    assert "\n" not in str(e.value)
    r = trajkit.analyze("relaxation", [one], waiting_times=[0], epsilon=EPS_L)    # auto: no grouping
    assert "tau_T" not in r.arrays


def test_log_log_slope_interval():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    slope, _, ci = rx.log_log_slope(x, 3 * x**-1.0)
    assert slope == pytest.approx(-1.0) and ci[0] == pytest.approx(-1.0) and ci[1] == pytest.approx(-1.0)


@pytest.mark.parametrize("params, message", [({"t_range": 5.0}, "t_range"), ({"tts_window": [10, 1]}, "tts_window"),
                                             ({"thresholds": [0.5, 1.5]}, "thresholds"), ({"epsilon": 0}, "epsilon")])
def test_bad_parameters_rejected_before_reading(params, message, tmp_path):
    # the path does not exist: parameters are validated before any data is opened
    with pytest.raises(TrajkitError, match=message):
        trajkit.analyze("relaxation", [tmp_path / "missing.trajkit"], **params)
