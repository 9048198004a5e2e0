"""Every built-in figure, drawn from small real archives through the real entry points: axis labels on
every axes, a caption saying what was analysed, error bands where a ``_sem`` array exists, legends where
several curves share a panel; and the two flags that replace numbers that are not resolved (τ4 on a χ4
plateau, the aging regime of a poor collapse)."""

from __future__ import annotations

import numpy as np
import pytest

import trajkit
from trajkit import synthetic
from trajkit.analysis import plotting

mpl = pytest.importorskip("matplotlib", reason="figures need matplotlib")
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from trajkit_dynamics import aging, chi4  # noqa: E402

STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 3000, 30))])).astype(np.int64)
N, R, D, EPS = 300, 4, 1e-3, 0.5
TWS = [int(STEPS[0]), int(STEPS[10]), int(STEPS[20])]         # snapshot steps: 0, 10 and 109


@pytest.fixture(scope="module")
def brownian(tmp_path_factory):
    return synthetic.brownian_ensemble(tmp_path_factory.mktemp("b") / "ens", STEPS, N, D, R, seed=1)


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    from trajkit.experiments import run_experiment

    out = tmp_path_factory.mktemp("land") / "ens"
    run_experiment({"model": {"kind": "mlp", "hidden": [8]}, "data": {"name": "digits"},
                    "dynamics": {"kind": "sgd", "lr": 0.1, "batch_size": 64},
                    "run": {"steps": 60, "replicas": 3, "seed": 0}, "snapshots": {"schedule": "log", "n": 4}},
                   out, quiet=True)
    return out


def _caption(fig) -> str:
    texts = [t.get_text() for t in fig.texts if t.get_gid() == plotting.CAPTION_GID]
    assert len(texts) == 1 and texts[0].strip(), "the figure has no caption line"
    return " ".join(texts[0].split())


def _check_figure(fig, band_axes: tuple[int, ...] = ()) -> list:
    """Labels on every visible axes (colorbars aside), a legend where two or more curves are labelled, a
    band (PolyCollection) on each axes in ``band_axes``. Returns the checked axes."""
    axes = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
    assert axes
    for i, ax in enumerate(axes):
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"axes {i} lacks a label"
        labels = [x for x in ax.get_legend_handles_labels()[1] if not x.startswith("_")]
        if len(labels) >= 2:
            assert ax.get_legend() is not None, f"axes {i} has {len(labels)} labelled curves and no legend"
    for i in band_axes:
        assert any(isinstance(c, PolyCollection) for c in axes[i].collections), f"axes {i} has no error band"
    return axes


def test_overlaps_figure(brownian):
    r = trajkit.analyze("overlaps", [brownian], waiting_times=TWS, epsilon=EPS)
    fig = r.plot()
    _check_figure(fig, band_axes=(0, 1, 2, 3))
    text = _caption(fig)
    assert f"N = {N} parameters (select = all)" in text and "ε = 0.5" in text
    assert f"t_w = {TWS[0]}, {TWS[1]}, {TWS[2]} (used)" in text and f"{R} runs" in text
    # origins after step 0 (w(0) = 0 has no direction, so C̃ is NaN there)
    r = trajkit.analyze("overlaps", [brownian], mode="lag", epsilon=EPS, origin_min_step=1)
    lag = _check_figure(r.plot(), (0, 1, 2, 3))
    assert "origins" in lag[0].get_xlabel()


def test_chi4_band_is_mean_plus_minus_sem(brownian):
    r = trajkit.analyze("chi4", [brownian], waiting_times=[0], epsilon=EPS, n_boot=20)
    fig = r.plot()
    (ax,) = _check_figure(fig, band_axes=(0,))
    lag = STEPS.astype(float)
    upper = (r["chi4"][0] + r["chi4_sem"][0])[lag > 0]
    lower = (r["chi4"][0] - r["chi4_sem"][0])[lag > 0]
    band = next(c for c in ax.collections if isinstance(c, PolyCollection))
    y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert y.max() == pytest.approx(np.nanmax(upper)) and y.min() == pytest.approx(np.nanmin(lower))
    assert "χ" in ax.get_ylabel() or "chi" in ax.get_ylabel()
    assert "bootstrap" in _caption(fig)


def test_aging_and_relaxation_figures(brownian):
    r = trajkit.analyze("aging", [brownian], waiting_times=[*TWS[1:], int(STEPS[25])], n_boot=10, epsilon=EPS)
    fig = r.plot()
    _check_figure(fig, band_axes=(0, 1))
    assert "collapse" in _caption(fig) and "regime" in fig.axes[1].get_title()
    r = trajkit.analyze("relaxation", [brownian], waiting_times=TWS[::2], epsilon=EPS)
    _check_figure(r.plot(), band_axes=(0,))


def test_relaxation_sweep_states_the_fit_window(tmp_path):
    steps = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 3000, 40))])).astype(np.int64)
    root = synthetic.langevin_flat_ensemble(tmp_path / "s", steps, 300, [1e-3, 1e-2, 3e-2], replicas=2,
                                            lr=0.1, n_train=100, seed=2)
    r = trajkit.analyze("relaxation", [root], waiting_times=[0], epsilon=0.01, n_boot=10, tts_window=[1.0, 100.0])
    lo, hi = r.scalars["tts_fit_range"]
    assert 1.0 <= lo < hi <= 100.0 and r.scalars["tts_fit_window"] == [1.0, 100.0]
    assert r.scalars["tts_fit_points"] >= 2
    fig = r.plot()
    ax1, _ = _check_figure(fig)
    assert "1 ≤ $t/\\tau_e$ ≤ 100" in ax1.get_title()
    assert "T ∈ {0.001, 0.01, 0.03} (one entry per value)" in _caption(fig)


def test_loss_and_critical_width_figures(tmp_path):
    lsteps = np.unique(np.rint(np.geomspace(1, 1e5, 40))).astype(np.int64)
    root = synthetic.loss_curve_ensemble(tmp_path / "l", lsteps, 0.1, 2.0, 0.6, replicas=2, noise=0.01)
    r = trajkit.analyze("loss", [root], n_boot=10, thresholds=[0.5, 0.2], window=[10, 1e5])
    assert r.scalars["fit_window"] == [float(lsteps[lsteps >= 10][0]), float(lsteps[-1])]
    fig = r.plot()
    ax1, _ = _check_figure(fig)
    lo, hi = r.scalars["fit_window"]
    assert f"fitted on {plotting.fmt(lo)} ≤ t ≤ {plotting.fmt(hi)}" in ax1.get_title()
    runs = []
    t = np.maximum(lsteps, 1).astype(float)
    for d, wc in ((1, 10.0), (2, 6.0)):
        for w in (12, 16, 24):
            runs.append({"steps": lsteps, "params": np.zeros((lsteps.size, 2)),
                         "metrics": {"train_loss": 1000.0 / ((w - wc) * t)},
                         "metadata": {"config": {"model": {"depth": d, "width": w}}}})
    root = synthetic.write_ensemble(tmp_path / "cw", runs)
    r = trajkit.analyze("critical_width", [root], thresholds=[0.1, 0.01])
    fig = r.plot()
    _, ax2 = _check_figure(fig)
    assert "$w_c(0)$" in ax2.get_title() and _caption(fig)


def test_landscape_figures(landscape):
    for name, kw in (("minima", {"shuffles": 3}), ("interpolation", {"points": 3, "pairs": "consecutive"}),
                     ("rugosity", {"directions": 2, "points": 3, "walk_steps": 3, "walks": 1, "n_boot": 10})):
        fig = trajkit.analyze(name, [landscape], **kw).plot()
        _check_figure(fig, band_axes=(0, 1) if name == "interpolation" else ())
        text = _caption(fig)
        assert "3 runs" in text and "at step 60" in text and "T =" not in text     # SGD: no temperature


def test_plot_into_a_subfigure(brownian):
    """Grouped results draw each group into a SubFigure: plot() uses only what a SubFigure supports."""
    r = trajkit.analyze("chi4", [brownian], waiting_times=TWS[::2], epsilon=EPS, n_boot=10)
    fig = Figure(figsize=(12, 5), layout="constrained")
    left, right = fig.subfigures(1, 2)
    for sub in (left, right):
        r.analysis().plot(r, sub)
        assert any(t.get_gid() == plotting.CAPTION_GID for t in sub.texts)
    assert len(fig.axes) == 2


# -- unresolved quantities are flagged, not printed as numbers ------------------------------------------------

def test_peak_resolved_rule():
    t = np.geomspace(1, 1e4, 40)
    bump = np.exp(-(np.log(t) - np.log(100.0)) ** 2)
    assert chi4.peak_resolved(t, bump)
    assert not chi4.peak_resolved(t, 1 - np.exp(-t / 100))                     # still rising at the end
    assert not chi4.peak_resolved(t, np.minimum(t / 100, 1.0) + 1e-3 * np.sin(t))   # a plateau
    assert not chi4.peak_resolved(t, np.exp(-t))                               # decays from the first lag


def test_chi4_plateau_flags_tau4_unresolved(tmp_path):
    """Half the replicas frozen, half decorrelated within a few steps: Q is 1 or ~0 per replica, so
    χ4 = N var(Q) rises to ≈ N/4 and stays there — a plateau, not a peak."""
    w = [synthetic.frozen(STEPS, N, seed=i) for i in range(3)]
    w += [synthetic.brownian(STEPS, N, 10.0, seed=10 + i) for i in range(3)]
    root = synthetic.write_ensemble(tmp_path / "p", [{"steps": STEPS, "params": x} for x in w])
    r = trajkit.analyze("chi4", [root], waiting_times=[0], epsilon=0.1, n_boot=20)
    plateau = r["chi4"][0][STEPS > 10]
    assert np.allclose(plateau, N / 4, rtol=0.1)                               # N p(1 − p), p = 1/2
    assert r.scalars["tau4_resolved"] is False and not r["tau4_resolved"][0]
    assert np.isnan(r.scalars["tau4"]) and np.isnan(r["tau4"][0]) and np.isnan(r.scalars["tau4_sem"])
    title = r.plot().axes[0].get_title()
    assert "unresolved" in title and "steps" not in title


def _two_speed(tmp_path, tws, switch=1000, d1=1e-4, d2=1e-1):
    """Brownian parameters whose diffusion constant jumps from d1 to d2 at step ``switch``: curves before
    the jump have a kink at lag switch − t_w that no rescaling t/t_w^μ lines up with the straight ones."""
    steps = synthetic.two_time_steps(list(tws), n_lags=20, base=np.rint(np.geomspace(1, 30000, 40)))
    var = np.where(steps < switch, 2 * d1 * steps, 2 * d1 * switch + 2 * d2 * (steps - switch))
    runs = []
    for r in range(3):
        rng = np.random.default_rng(r)
        inc = rng.standard_normal((steps.size, 400)) * np.sqrt(np.diff(var, prepend=0.0))[:, None]
        runs.append({"steps": steps, "params": np.cumsum(inc, axis=0)})
    return steps, synthetic.write_ensemble(tmp_path / "two", runs)


def test_poor_collapse_flags_the_regime(tmp_path):
    tws = [100, 300, 3000, 10000]
    _, root = _two_speed(tmp_path, tws)
    r = trajkit.analyze("aging", [root], waiting_times=tws, observable="msd", n_boot=10)
    sc = r.scalars
    assert sc["collapse_quality"] > sc["collapse_threshold"] == aging.COLLAPSE_MAX_SPREAD
    assert sc["regime"] == aging.POOR_COLLAPSE
    assert np.isnan(sc["mu_collapse"]) and np.isfinite(sc["mu_collapse_raw"])
    title = r.plot().axes[1].get_title()
    assert "poor collapse" in title and f"S = {plotting.fmt(sc['collapse_quality'], 2)}" in title


def test_good_collapse_passes_the_quality_gate():
    """Noise-free effective-time curves collapse at μ = 0.5: S ≪ the threshold, the regime is a number."""
    tws = np.array([100, 300, 1000, 3000])
    steps = synthetic.two_time_steps(list(tws), n_lags=20, base=np.rint(np.geomspace(1, 30000, 40)))
    values = np.full((1, tws.size, steps.size), np.nan)
    for k, tw in enumerate(tws):
        after = steps >= tw
        values[0, k, after] = 2 * (synthetic.effective_time(steps[after], 0.5)
                                   - synthetic.effective_time(np.array([tw]), 0.5))
    out = aging.estimate_mu(tws, steps, values, observable="msd", n_boot=0, max_ratio=0.1)
    assert out["collapse_quality"] < 1e-3 and out["regime"] == "sub"
    assert out["mu_collapse"] == pytest.approx(0.5, abs=0.02)
    assert aging.classify_regime(0.5, (0.4, 0.6), 0.5, (0.4, 0.6), collapse_spread_value=0.2) == aging.POOR_COLLAPSE
