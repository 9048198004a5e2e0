"""The reference studies' conventions as options of the dynamics analyses, against hand computations:
normalize=noise_D (Δ(tw, tw+t)/D(tw), the collapse of 1803.06969), tau_rule=first_below, tau_estimator=
per_replica, min_tau, the threshold tie, ε from the last snapshot or a given step, the free-diffusion
reference for Langevin runs, `trajkit import --set` grouping, and `aging` μ per group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.special import erf

import trajkit
from trajkit import synthetic
from trajkit.cli import cli
from trajkit.errors import AnalysisError

# -- normalize = noise_D ---------------------------------------------------------------------------------------

LAMBDA, D0 = 300.0, 1e-3
NSTEPS = synthetic.two_time_steps([50, 200, 600], n_lags=12, base=np.rint(np.geomspace(1, 1200, 16)))


def _noise_d(s):
    return D0 * np.exp(-np.asarray(s, float) / LAMBDA)


def _decaying_diffusion(steps, n, replicas, seed):
    """Brownian parameters whose diffusion constant decays as D(s) = D0 e^{−s/λ}: increments between snapshots
    are N(0, 2 ∫ D) exactly, so Δ(tw, tw+t) = 2 D(tw) λ (1 − e^{−t/λ}) and Δ/D(tw) is one curve of t."""
    rng = np.random.default_rng(seed)
    s = np.asarray(steps, float)
    var = 2.0 * D0 * LAMBDA * (np.exp(-s[:-1] / LAMBDA) - np.exp(-s[1:] / LAMBDA))
    inc = rng.standard_normal((replicas, s.size - 1, n)) * np.sqrt(var)[None, :, None]
    return np.concatenate([np.zeros((replicas, 1, n)), np.cumsum(inc, axis=1)], axis=1)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    w = _decaying_diffusion(NSTEPS, 8000, 3, 5)
    runs = [{"steps": NSTEPS, "params": w[r], "metrics": {"noise_D": _noise_d(NSTEPS), "train_loss": 1 + 0 * NSTEPS}}
            for r in range(3)]
    return synthetic.write_ensemble(tmp_path_factory.mktemp("noise") / "ens", runs)


def test_noise_d_collapses_msd(noisy):
    tws = [50, 200, 600]
    r = trajkit.analyze("overlaps", [noisy], waiting_times=tws, normalize="noise_D")
    step = r.coords["step"]
    scaled, raw = r["msd_over_noise_D"], r["msd"]
    np.testing.assert_allclose(r["noise_D"], np.tile(_noise_d(tws), (3, 1)), rtol=1e-6)   # float32 metric
    for k, tw in enumerate(tws):
        lag = (step - tw).astype(float)
        later = lag > 0
        master = 2 * LAMBDA * (1 - np.exp(-lag[later] / LAMBDA))
        np.testing.assert_allclose(scaled[k, later], master, rtol=0.03)          # one curve for every tw
        np.testing.assert_allclose(scaled[k, later], raw[k, later] / _noise_d(tw), rtol=1e-6)
        # the raw curves do not collapse: they are D(tw)·master, and D(50)/D(600) = e^{550/300} ≈ 6.3
        np.testing.assert_allclose(raw[k, later], _noise_d(tw) * master, rtol=0.03)


def test_aging_on_the_rescaled_msd_is_stationary(noisy):
    tws = [50, 200, 600]
    raw = trajkit.analyze("aging", [noisy], waiting_times=tws, max_ratio=0.5, n_boot=0)
    scaled = trajkit.analyze("aging", [noisy], waiting_times=tws, max_ratio=0.5, n_boot=0, normalize="noise_D")
    assert "msd_over_noise_D" in scaled.arrays and scaled.scalars["curve"] == "msd_over_noise_D"
    assert scaled.scalars["mu_collapse_raw"] == pytest.approx(0.0, abs=0.05)
    assert scaled.scalars["collapse_quality"] < 0.01
    assert raw.scalars["collapse_quality"] > 10 * scaled.scalars["collapse_quality"]


def test_noise_d_without_gradient_statistics(tmp_path):
    root = synthetic.brownian_ensemble(tmp_path / "plain", [0, 10, 100, 1000], 50, 1e-3, 2)
    for name in ("overlaps", "aging"):
        with pytest.raises(AnalysisError, match=r"noise_D.*\[metrics\] gradient_stats = true.*Recorder\(\.\.\., "
                                                r"gradient_stats=\.\.\.\)"):
            trajkit.analyze(name, [root], waiting_times=[10, 100], normalize="noise_D", n_boot=0) \
                if name == "aging" else trajkit.analyze(name, [root], waiting_times=[10], normalize="noise_D")
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "overlaps", str(root), "-p", "normalize=noise_D",
                                   "-p", "waiting_times=10", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "gradient_stats = true" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(AnalysisError, match=r"rescales the MSD.*observable=msd"):
        trajkit.analyze("aging", [root], observable="self_overlap", normalize="noise_D", n_boot=0)


# -- τ conventions on hand-made self-overlaps -----------------------------------------------------------------

TAU_STEPS = [0, 1, 2, 4, 8, 16, 32]
N_TAU = 100
#: Q(0, s) = 1 − m/N: the first m parameters have moved by 1 > ε = 0.5 at each later snapshot
MOVED = {"A": [5, 10, 30, 50, 80, 90], "B": [2, 5, 20, 40, 60, 85], "C": [10, 40, 70, 85, 95, 98],
         "D": [20, 50, 80, 90, 96, 99]}
C = float(np.exp(-1.0))


def _replica(moved):
    w = np.zeros((len(TAU_STEPS), N_TAU))
    for j, m in enumerate(moved, start=1):
        w[j, :m] = 1.0
    return w


def _tau_ensemble(root, names, temps=None):
    runs = []
    for i, name in enumerate(names):
        run = {"steps": TAU_STEPS, "params": _replica(MOVED[name])}
        if temps is not None:
            run["coords"] = {"dynamics.temperature": temps[i]}
            run["metadata"] = {"dynamics": {"temperature": temps[i]}}
        runs.append(run)
    return synthetic.write_ensemble(root, runs)


def _interp(t0, t1, q0, q1, c):
    return t0 + (c - q0) * (t1 - t0) / (q1 - q0)


# hand computation: Q at lags 1, 2, 4, 8, 16, 32 is 1 − m/100; for c = 1/e
TAU_A = _interp(8, 16, 0.5, 0.2, C)           # A crosses between lag 8 (0.5) and 16 (0.2)
TAU_B = _interp(16, 32, 0.4, 0.15, C)         # B between 16 (0.4) and 32 (0.15)
TAU_MEAN_AB = _interp(8, 16, 0.55, 0.3, C)    # the mean curve of A and B: 0.55 at 8, 0.3 at 16


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return _tau_ensemble(tmp_path_factory.mktemp("tau") / "ab", ["A", "B"])


def _relax(root, **kw):
    return trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.5, thresholds=[0.9, C], **kw)


def test_interpolate_and_first_below(hand):
    r = _relax(hand)
    assert r["tau"][0, 1] == pytest.approx(TAU_MEAN_AB, rel=1e-12)
    # c = 0.9: the mean curve is 0.965, 0.925, 0.75 — crossed between lags 2 and 4
    assert r["tau"][0, 0] == pytest.approx(_interp(2, 4, 0.925, 0.75, 0.9), rel=1e-12)
    f = _relax(hand, tau_rule="first_below")
    np.testing.assert_array_equal(f["tau"][0], [4.0, 16.0])      # the first snapshot past each level
    np.testing.assert_array_equal(f["tau_flag"][0], [0, 0])


def test_per_replica_mean_and_std(hand):
    r = _relax(hand, tau_estimator="per_replica")
    assert r["tau"][0, 1] == pytest.approx((TAU_A + TAU_B) / 2, rel=1e-12)
    assert r["tau_std"][0, 1] == pytest.approx(np.std([TAU_A, TAU_B], ddof=1), rel=1e-12)
    assert r["tau_resolved"][0, 1] == 2
    # the tie: A is exactly 0.9 = c·Q(tw,tw) at lag 2, which is not "below": interpolation places τ at lag 2,
    # first_below at the next snapshot (lag 4); B (0.98, 0.95, 0.8) crosses between lags 2 and 4
    tie = _relax(hand, tau_estimator="per_replica", tau_rule="first_below")
    assert tie["tau"][0, 0] == pytest.approx((4 + 4) / 2)
    assert r["tau"][0, 0] == pytest.approx((2.0 + _interp(2, 4, 0.95, 0.8, 0.9)) / 2, rel=1e-12)


def test_min_tau(hand):
    r = _relax(hand, tau_estimator="per_replica", min_tau=12.0)   # τ_A = 11.5 < 12 < τ_B = 18.1
    assert r["tau"][0, 1] == pytest.approx(TAU_B, rel=1e-12)
    assert r["tau_resolved"][0, 1] == 1 and np.isnan(r["tau_std"][0, 1])
    m = _relax(hand, min_tau=13.0)                                 # the mean curve's τ = 13.8 stays
    assert m["tau"][0, 1] == pytest.approx(TAU_MEAN_AB, rel=1e-12)
    m = _relax(hand, min_tau=14.0)
    assert np.isnan(m["tau"][0, 1]) and m["tau_flag"][0, 1] == -2


def test_per_replica_slope_on_pooled_values(tmp_path):
    root = _tau_ensemble(tmp_path / "sweep", ["A", "B", "C", "D"], temps=[1.0, 1.0, 2.0, 2.0])
    r = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.5, tau_threshold=C,
                        tau_estimator="per_replica", n_boot=0)
    tau_c = _interp(2, 4, 0.6, 0.3, C)           # C: 0.9, 0.6, 0.3 at lags 1, 2, 4
    tau_d = _interp(2, 4, 0.5, 0.2, C)           # D: 0.8, 0.5, 0.2 at lags 1, 2, 4
    np.testing.assert_allclose(r["tau_T"], [(TAU_A + TAU_B) / 2, (tau_c + tau_d) / 2], rtol=1e-12)
    np.testing.assert_allclose(r["tau_T_std"], [np.std([TAU_A, TAU_B], ddof=1), np.std([tau_c, tau_d], ddof=1)],
                               rtol=1e-12)
    pooled = np.polyfit(np.log([1, 1, 2, 2]), np.log([TAU_A, TAU_B, tau_c, tau_d]), 1)[0]
    assert r.scalars["tau_T_slope"] == pytest.approx(pooled, rel=1e-10)
    mean_curve = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.5, n_boot=0)
    assert mean_curve.scalars["tau_T_slope"] != pytest.approx(pooled, rel=1e-3)   # the two estimators differ
    boot = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.5, tau_estimator="per_replica",
                           n_boot=30)
    lo, hi = boot.scalars["tau_T_slope_ci"]
    assert lo <= pooled + 1e-9 and hi >= pooled - 1e-9


# -- ε from the waiting time, the last snapshot or a given step -------------------------------------------------

@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    return synthetic.brownian_ensemble(tmp_path_factory.mktemp("eps") / "ens", [0, 10, 100, 1000], 500, 1e-3, 3,
                                       seed=4, init_scale=0.1)


def test_epsilon_from_last_and_step(walk):
    archives = trajkit.open_ensemble([walk]).archives
    std = {s: np.array([np.std(np.asarray(a.params[a.row(s), :], np.float64)) for a in archives])
           for s in (10, 100, 1000)}
    per_tw = trajkit.analyze("overlaps", [walk], waiting_times=[10, 100])
    np.testing.assert_allclose(per_tw["epsilon"], np.stack([std[10], std[100]], 1) / 10, rtol=1e-6)
    last = trajkit.analyze("overlaps", [walk], waiting_times=[10, 100], epsilon_from="last", epsilon_factor=5)
    np.testing.assert_allclose(last["epsilon"], np.tile(std[1000][:, None] / 5, (1, 2)), rtol=1e-6)
    at = trajkit.analyze("overlaps", [walk], waiting_times=[10, 100], epsilon_from="step", epsilon_step=100)
    np.testing.assert_allclose(at["epsilon"], np.tile(std[100][:, None] / 10, (1, 2)), rtol=1e-6)
    assert len(set(np.round(std[1000], 9))) == 3          # each replica its own ε
    relax = trajkit.analyze("relaxation", [walk], waiting_times=[10], epsilon_from="last", n_boot=0)
    assert np.isfinite(relax["self_overlap"][0, -1])


def test_epsilon_options_bad_input(walk):
    with pytest.raises(AnalysisError, match="epsilon_from=step needs epsilon_step"):
        trajkit.analyze("overlaps", [walk], epsilon_from="step")
    with pytest.raises(AnalysisError, match="epsilon_step=100 is used only with epsilon_from=step"):
        trajkit.analyze("overlaps", [walk], epsilon_step=100)
    with pytest.raises(AnalysisError, match=r"epsilon_step=55 is not a snapshot step.*10 and 100"):
        trajkit.analyze("overlaps", [walk], epsilon_from="step", epsilon_step=55)
    with pytest.raises(AnalysisError, match=r"epsilon_from.*not allowed"):
        trajkit.analyze("overlaps", [walk], epsilon_from="final")


# -- the free-diffusion reference of Langevin runs ----------------------------------------------------------------

def test_free_diffusion_overlay(tmp_path):
    steps = [0, 1, 3, 10, 30, 100, 300, 1000]
    temp, lr, n_train = 1e-3, 0.1, 100
    root = synthetic.langevin_flat_ensemble(tmp_path / "lang", steps, 4000, [temp], 2, lr=lr, n_train=n_train)
    d = temp * lr / n_train
    r = trajkit.analyze("overlaps", [root], waiting_times=[10], epsilon=0.01)
    assert r.scalars["free_diffusion_D"] == pytest.approx(d)
    lag = np.array(steps, float) - 10
    later = lag > 0
    free = r["self_overlap_free"][0, later]
    np.testing.assert_allclose(free, erf(0.01 / np.sqrt(4 * d * lag[later])), rtol=1e-12)
    np.testing.assert_allclose(r["self_overlap"][0, later], free, atol=0.02)   # a flat loss diffuses freely
    fig = r.plot()
    labels = [ln.get_label() for ax in fig.axes for ln in ax.get_lines()]
    assert any("Q_{\\rm free}" in lab for lab in labels)
    relax = trajkit.analyze("relaxation", [root], waiting_times=[10], epsilon=0.01, n_boot=0)
    np.testing.assert_allclose(relax["self_overlap_free"][0, later], free, rtol=1e-12)
    assert any("Q_{\\rm free}" in ln.get_label() for ax in relax.plot().axes for ln in ax.get_lines())
    plain = synthetic.brownian_ensemble(tmp_path / "plain", steps, 100, 1e-3, 2)
    assert "self_overlap_free" not in trajkit.analyze("overlaps", [plain], waiting_times=[10]).arrays


# -- trajkit import --set ------------------------------------------------------------------------------------

def _checkpoints(d, seed):
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    model = torch.nn.Linear(6, 3)
    for step in (0, 1, 2, 4, 8):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        torch.save(model.state_dict(), d / f"step_{step:04d}.pt")
    return d


def test_import_set_groups_by_temperature(tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    out.mkdir()
    for i, temp in enumerate(["1e-4", "1e-4", "1e-3", "1e-3"]):
        src = _checkpoints(tmp_path / f"ck{i}", i)
        res = runner.invoke(cli, ["import", str(src), "--out", str(out / f"r{i}.trajkit"),
                                  "--set", f"dynamics.temperature={temp}", "--set", 'dynamics.kind="langevin"',
                                  "--set", "dynamics.lr=0.1", "--set", "dataset.n_train=50"])
        assert res.exit_code == 0, res.output
    arch = trajkit.open_archive(out / "r2.trajkit")
    assert arch.metadata["dynamics"] == {"temperature": 1e-3, "kind": "langevin", "lr": 0.1}
    r = trajkit.analyze("relaxation", [out], waiting_times=[0], epsilon=0.02, n_boot=0)
    np.testing.assert_allclose(r.coords["temperature"], [1e-4, 1e-3])
    assert r.scalars["replicas"] == [2, 2]
    np.testing.assert_allclose(r.scalars["free_diffusion_D"], [1e-4 * 0.1 / 50, 1e-3 * 0.1 / 50])
    grouped = trajkit.analyze("overlaps", [out], waiting_times=[0])
    assert list(grouped.coords["group"]) == ["dynamics.temperature=0.0001", "dynamics.temperature=0.001"]


def test_import_set_bad_input(tmp_path):
    src = _checkpoints(tmp_path / "ck", 0)
    for bad, why in ((["--set", "temperature"], "expected KEY=VALUE"),
                     (["--set", "schedule.kind=linear"], "recorded by the import itself")):
        dest = tmp_path / "x.trajkit"
        res = CliRunner().invoke(cli, ["import", str(src), "--out", str(dest), *bad])
        assert res.exit_code != 0 and why in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not dest.exists()


# -- aging: μ per group ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_aging_mu_per_group(tmp_path):
    tws = [100, 300, 1000, 3000]
    steps = synthetic.two_time_steps(tws, n_lags=16, base=np.rint(np.geomspace(1, 30000, 20)))
    runs = []
    for depth, mu, d in ((2, 0.5, 0.05), (3, 1.0, 1.0)):
        w = synthetic.effective_time_process(steps, 600, mu, d, replicas=3, seed=depth)
        runs += [{"steps": steps, "params": w[r], "coords": {"model.depth": depth}} for r in range(3)]
    root = synthetic.write_ensemble(tmp_path / "depths", runs)
    r = trajkit.analyze("aging", [root], waiting_times=tws, max_ratio=0.1, n_boot=15)
    assert list(r.coords["group"]) == ["model.depth=2", "model.depth=3"]
    np.testing.assert_array_equal(r["group.model.depth"], [2, 3])
    for g, mu in enumerate((0.5, 1.0)):
        assert r.scalars["mu_collapse"][g] == pytest.approx(mu, abs=0.05)
        lo, hi = r.scalars["mu_collapse_ci"][g]
        assert lo - 0.03 <= mu <= hi + 0.03
        assert r.group(g).scalars["mu_collapse"] == r.scalars["mu_collapse"][g]
    assert r.scalars["regime"] == ["sub", "simple"]
    assert r["mu"].shape == (2, 3) and r.dims["mu_ci"] == ("group", "estimate", "bound")
    np.testing.assert_allclose(r["mu"][:, 0], r.scalars["mu_collapse"], rtol=1e-12)
    np.testing.assert_allclose(r["mu_ci"][:, 0], r.scalars["mu_collapse_ci"], rtol=1e-12)
    by_key = trajkit.analyze("aging", [root], waiting_times=tws, max_ratio=0.1, n_boot=0, group_by="model.depth")
    np.testing.assert_allclose(by_key.scalars["mu_collapse_raw"], r.scalars["mu_collapse_raw"], rtol=1e-12)
