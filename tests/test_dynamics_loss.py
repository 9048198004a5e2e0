"""Loss dynamics: power-law fit, learning times, critical width — against curves built from known laws."""

import numpy as np
import pytest
from trajkit_dynamics import loss as L

import trajkit
from trajkit import synthetic
from trajkit.errors import TrajkitError

STEPS = np.unique(np.rint(np.geomspace(1, 1e5, 80)).astype(int))


def test_power_law_recovers_beta_and_floor_noise_free():
    curve = synthetic.loss_curve(STEPS, 0.05, 3.0, 0.7)
    fit = L.fit_power_law(STEPS, curve)
    # noise-free data: only the optimiser's tolerance separates the fit from the truth
    assert fit["beta"] == pytest.approx(0.7, rel=1e-4)
    assert fit["loss_inf"] == pytest.approx(0.05, rel=1e-4)
    assert fit["amplitude"] == pytest.approx(3.0, rel=1e-4)


def test_power_law_with_noise_truth_inside_intervals():
    curve = synthetic.loss_curve(STEPS, 0.2, 5.0, 0.5, noise=0.01, seed=11)
    fit = L.fit_power_law(STEPS, curve)
    # 1 % multiplicative noise on 80 points: the covariance intervals (95 %) must cover the truth
    assert fit["beta_ci"][0] <= 0.5 <= fit["beta_ci"][1]
    assert fit["loss_inf_ci"][0] <= 0.2 <= fit["loss_inf_ci"][1]
    assert fit["beta_ci"][1] - fit["beta_ci"][0] < 0.1


def test_pure_power_law_has_zero_floor():
    fit = L.fit_power_law(STEPS, synthetic.loss_curve(STEPS, 0.0, 1.0, 1.2))
    assert fit["loss_inf"] == pytest.approx(0.0, abs=1e-6)
    assert fit["beta"] == pytest.approx(1.2, rel=1e-4)


def test_learning_times_exact_and_unreached():
    t = np.array([1, 10, 100, 1000], dtype=float)
    loss = 1.0 / t            # L = 1/t: log-log interpolation between snapshots is exact
    tl, reached = L.learning_times(t, loss, [0.5, 0.02, 1e-4, 2.0])
    np.testing.assert_allclose(tl[:2], [2.0, 50.0], rtol=1e-12)
    assert np.isnan(tl[2]) and not reached[2]
    assert tl[3] == 1.0 and reached[3]


def test_critical_width_recovered_within_interval():
    rng = np.random.default_rng(5)
    widths = np.array([12, 14, 16, 20, 24, 32, 48], dtype=float)
    w_c, amp = 10.0, 5000.0
    t_learn = amp / (widths - w_c) * np.exp(0.02 * rng.standard_normal(widths.size))
    fit = L.fit_critical_width(widths, t_learn)
    # 2 % noise on t_learn: the 95 % delta-method interval must cover w_c
    assert fit["w_c_ci"][0] <= w_c <= fit["w_c_ci"][1]
    assert fit["w_c"] == pytest.approx(w_c, abs=1.0)
    exact = L.fit_critical_width(widths, amp / (widths - w_c))
    assert exact["w_c"] == pytest.approx(w_c, rel=1e-9)
    assert exact["amplitude"] == pytest.approx(amp, rel=1e-9)


def test_extrapolation_to_zero_threshold():
    ell = np.array([0.05, 0.1, 0.2, 0.4])
    w0, ci = L.extrapolate_to_zero(ell, 8.0 + 10 * ell)
    assert ci[0] == pytest.approx(8.0) and ci[1] == pytest.approx(8.0)
    assert w0 == pytest.approx(8.0)
    value, _ = L.extrapolate_to_zero(ell[:1], [1.0])
    assert np.isnan(value)


# -- through archives and the `loss` plugin ------------------------------------------------------------------

LOSS_STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 1e6, 100))])).astype(np.int64)


def _runs(curves, meta=None, n=8):
    rng = np.random.default_rng(0)
    return [{"steps": LOSS_STEPS, "params": rng.standard_normal((LOSS_STEPS.size, n)),
             "metrics": {"train_loss": c}, "metadata": meta or {}} for c in curves]


def test_loss_plugin_power_law(tmp_path):
    root = synthetic.loss_curve_ensemble(tmp_path / "ens", LOSS_STEPS, 0.1, 2.0, 0.6, replicas=4, noise=0.01)
    r = trajkit.analyze("loss", [root], n_boot=50, thresholds=[0.2, 0.03, 0.01])
    assert r.scalars["groups"] == 1
    # 4 replicas x 1 % noise: bootstrap intervals over replicas must cover the truth, and be informative
    for name, truth in (("beta", 0.6), ("loss_inf", 0.1)):
        lo, hi = r.scalars[f"{name}_ci"]
        assert lo <= truth <= hi and hi - lo < 0.2 * truth
    assert r["t_learn"].shape == (1, 3)
    assert r["reached"][0].tolist() == [True, False, False]       # floor 0.1: 0.03 and 0.01 never reached


def test_loss_plugin_critical_width(tmp_path):
    w_c, amp = 10.0, 1000.0
    runs = []
    for width in (6, 12, 14, 16, 20, 24, 32):
        for seed in range(2):
            noise = np.exp(0.01 * np.random.default_rng(seed + width).standard_normal(LOSS_STEPS.size))
            t = np.maximum(LOSS_STEPS, 1).astype(float)
            curve = (amp / ((width - w_c) * t) if width > w_c else 0.5 + t**-0.5) * noise
            runs += _runs([curve], {"model": {"width": width}, "dataset": {"n_train": 100}}, n=width)
    root = synthetic.write_ensemble(tmp_path / "ens", runs)
    r = trajkit.analyze("loss", [root], group_by="model.width", thresholds=[0.1, 0.03, 0.01], n_boot=0)
    np.testing.assert_array_equal(r["width"], [6, 12, 14, 16, 20, 24, 32])
    assert not r["reached"][0].any()                               # below w_c: never reached, left out of the fit
    # t_learn(l) = amp / (l (w - w_c)) exactly (up to 1 % noise): w_c inside each interval, and at l -> 0
    for i in range(3):
        lo, hi = r["w_c_ci"][i]
        assert lo <= w_c <= hi
        assert r["w_c"][i] == pytest.approx(w_c, abs=0.5)
    assert r.scalars["w_c0"] == pytest.approx(w_c, abs=0.5)
    np.testing.assert_allclose(r["n_over_p"], r["width"] / 100)
    assert r["final_loss"][0] == pytest.approx(0.5, abs=0.01)


def test_loss_plugin_missing_metric(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _runs([np.ones(LOSS_STEPS.size)]))
    with pytest.raises(TrajkitError, match="no snapshot metric 'test_loss'") as e:
        trajkit.analyze("loss", [root], metric="test_loss")
    assert "\n" not in str(e.value)
