"""`phase_diagram`: a sweep in two keys whose final losses are known — the geometric mean per cell against a
direct computation (zeros clipped at the floor), the arithmetic mean and spread, the [n_x, n_y] array and
its coordinates, the cuts' transition points on losses with a known step, the bootstrap interval, the plot
and the bad inputs (one swept key, too few replicas for the bootstrap); ``stage`` on a real staged run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from trajkit_dynamics.phase_diagram import geometric_mean, transition_point

import trajkit
from trajkit import synthetic
from trajkit.analysis import load_result
from trajkit.cli import cli
from trajkit.errors import AnalysisError

WIDTHS = [4.0, 8.0, 16.0, 32.0]
DECAYS = [1e-4, 1e-3, 1e-2]
STEPS = [0, 10, 20]
R = 3


def _loss(width: float, decay: float, r: int) -> float:
    """Known final losses: a step in width between 8 and 16 (0.1 below, exactly 0 above) at small λ; at the
    largest λ every replica sits at the trivial loss 0.5; replicas differ by a known factor."""
    if decay >= 1e-2:
        return 0.5 * (1.0 + 0.01 * r)
    return 0.1 * (1.0 + 0.1 * r) if width < 12 else 0.0


def _sweep(root, widths=WIDTHS, decays=DECAYS, replicas=R, loss=_loss):
    runs = []
    for w in widths:
        for lam in decays:
            for r in range(replicas):
                final = loss(w, lam, r)
                runs.append({"steps": STEPS, "params": np.full((3, 2), float(r)),
                             "coords": {"model.width": w, "dynamics.weight_decay": lam},
                             "metrics": {"train_loss": np.array([1.0, 0.5 * (1 + final), final])}})
    return synthetic.write_ensemble(root, runs, sweep={"model.width": list(widths),
                                                       "dynamics.weight_decay": list(decays)})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("pd") / "sweep")


def test_geometric_mean_against_direct_computation():
    v = np.array([1e-2, 4e-2, 0.0])
    floor = 1e-8
    assert geometric_mean(v, floor) == pytest.approx((1e-2 * 4e-2 * 1e-8) ** (1 / 3), rel=1e-12)
    assert geometric_mean(np.array([2.0, 8.0]), 1e-10) == pytest.approx(4.0, rel=1e-12)


def test_grid_means_and_coordinates(sweep):
    r = trajkit.analyze("phase_diagram", [sweep], floor=1e-8, n_boot=0)
    sc = r.scalars
    assert (sc["x_key"], sc["y_key"]) == ("model.width", "dynamics.weight_decay")
    np.testing.assert_array_equal(r.coords["x"], WIDTHS)
    np.testing.assert_allclose(r.coords["y"], DECAYS)
    geo = r["loss_geomean"]
    assert geo.shape == (len(WIDTHS), len(DECAYS)) and r.dims["loss_geomean"] == ("x", "y")
    for i, w in enumerate(WIDTHS):
        for j, lam in enumerate(DECAYS):
            v = np.array([_loss(w, lam, k) for k in range(R)])
            clipped = np.maximum(v, 1e-8)
            assert geo[i, j] == pytest.approx(np.prod(clipped) ** (1 / R), rel=1e-9)
            assert r["loss_mean"][i, j] == pytest.approx(v.mean(), rel=1e-9, abs=1e-15)
            assert r["loss_std"][i, j] == pytest.approx(v.std(ddof=1), rel=1e-9, abs=1e-15)
            assert r["loss_log10_std"][i, j] == pytest.approx(np.log10(clipped).std(ddof=1), rel=1e-9, abs=1e-12)
            assert r["n_clipped"][i, j] == np.sum(v < 1e-8)
    assert np.all(r["replicas"] == R) and sc["n_cells"] == 12 and sc["n_runs"] == 36


def test_transition_at_a_known_step(sweep):
    r = trajkit.analyze("phase_diagram", [sweep], floor=1e-8, n_boot=50)
    # along width at small λ: plateaus log10 ≈ -1 (geometric mean of 0.1·(1, 1.1, 1.2)) and -8; the
    # mid-level falls between widths 8 and 16, interpolated in (ln w, log10 L) by hand:
    top = np.log10(geometric_mean(np.array([0.1, 0.11, 0.12]), 1e-8))
    mid = 0.5 * (top + (-8.0))
    expect = np.exp(np.log(8) + (mid - top) * (np.log(16) - np.log(8)) / (-8.0 - top))
    assert r["x_transition"][0] == pytest.approx(expect, rel=1e-9)
    assert r["x_transition"][1] == pytest.approx(expect, rel=1e-9)
    assert np.isnan(r["x_transition"][2])                       # λ = 1e-2: 0.5 everywhere, no contrast
    assert r["x_contrast"][2] < 0.01
    # a step with exactly two plateaus: every resample sees the same crossing (replica factors move the top
    # plateau by < 0.04 decades of 7.x), so the interval is narrow and holds the estimate
    lo, hi = r["x_transition_ci"][0]
    assert lo <= r["x_transition"][0] <= hi and 8 < lo and hi < 16
    # along λ at the widths that fit (zero loss): from 1e-8 up to 0.5 between λ = 1e-3 and 1e-2
    geo_top = np.log10(geometric_mean(np.array([0.5, 0.505, 0.51]), 1e-8))
    mid_y = 0.5 * (geo_top - 8.0)
    expect_y = np.exp(np.log(1e-3) + (mid_y + 8.0) * (np.log(1e-2) - np.log(1e-3)) / (geo_top + 8.0))
    np.testing.assert_allclose(r["y_transition"][2:], expect_y, rtol=1e-9)


def test_transition_of_a_smooth_sigmoid():
    """log10 L = −3 − 2 tanh(ln(u/u0)): on a grid symmetric about u0 the mid-level crossing is exactly u0."""
    u0 = 10.0
    u = u0 * np.exp(np.array([-3.0, -1.5, -0.5, 0.5, 1.5, 3.0]))
    loss = 10.0 ** (-3.0 - 2.0 * np.tanh(np.log(u / u0)))
    t, contrast = transition_point(u, loss)
    assert t == pytest.approx(u0, rel=1e-12)
    assert contrast == pytest.approx(4.0 * np.tanh(3.0), rel=1e-12)
    assert np.isnan(transition_point(u, loss, min_contrast=5.0)[0])


def test_plot_and_cli(sweep, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "phase_diagram", str(sweep), "-p", "n_boot=20",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = load_result(out)
    assert back["loss_geomean"].shape == (4, 3)
    assert (out / "phase_diagram.png").stat().st_size > 0
    fig = back.plot()
    axes = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(axes) == 3 and all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    norm = axes[0].collections[0].norm                     # the map is on a log colour scale
    assert type(norm).__name__ == "LogNorm" and norm.vmin == pytest.approx(np.nanmin(back["loss_geomean"]))


def test_one_swept_key_is_refused(tmp_path):
    root = _sweep(tmp_path / "one", decays=[1e-4])
    with pytest.raises(AnalysisError, match=r"swept in two config keys.*model.width"):
        trajkit.analyze("phase_diagram", [root], n_boot=0)
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "phase_diagram", str(root), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "two config keys" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_bootstrap_needs_two_replicas_per_cell(tmp_path):
    root = _sweep(tmp_path / "single", replicas=1)
    with pytest.raises(AnalysisError, match=r"2 or more replicas in every cell.*n_boot=0"):
        trajkit.analyze("phase_diagram", [root])
    r = trajkit.analyze("phase_diagram", [root], n_boot=0)
    assert np.all(np.isnan(r["x_transition_ci"]))


def test_axis_keys_must_exist(sweep):
    with pytest.raises(AnalysisError, match=r"no metadata key or sweep coordinate 'model.depth'"):
        trajkit.analyze("phase_diagram", [sweep], x_key="model.depth", y_key="model.width", n_boot=0)


def test_runs_without_ensemble_coords(tmp_path):
    """Runs whose sweep keys are plain metadata (as `trajkit import --set` attaches), of different sizes N."""
    d = tmp_path / "runs"
    d.mkdir()
    for i, (w, lam) in enumerate([(4, 1e-4), (4, 1e-2), (16, 1e-4), (16, 1e-2)]):
        for r in range(2):
            synthetic.write_archive(d / f"r{i}{r}.trajkit", STEPS, np.zeros((3, w)),
                                    metadata={"model": {"width": w}, "dynamics": {"weight_decay": lam}},
                                    metrics={"train_loss": np.array([1.0, 0.5, _loss(w, lam, r)])})
    res = trajkit.analyze("phase_diagram", [d], floor=1e-8, n_boot=0)
    # the first varying key that tells the widths apart is the parameter count N (= width here)
    assert {res.scalars["x_key"], res.scalars["y_key"]} == {"model.n_params", "dynamics.weight_decay"}
    assert res["loss_geomean"].shape == (2, 2) and np.all(res["replicas"] == 2)
    by_width = trajkit.analyze("phase_diagram", [d], x_key="model.width", floor=1e-8, n_boot=0)
    assert by_width.scalars["y_key"] == "dynamics.weight_decay"
    np.testing.assert_array_equal(by_width.coords["x"], [4, 16])
    expect = [[geometric_mean(np.array([_loss(w, lam, r) for r in range(2)]), 1e-8) for lam in (1e-4, 1e-2)]
              for w in (4, 16)]
    np.testing.assert_allclose(by_width["loss_geomean"], expect, rtol=1e-9)


def test_x_per_key_gives_n_over_p(tmp_path):
    d = tmp_path / "np"
    d.mkdir()
    for i, (n, p, lam) in enumerate([(8, 4, 1e-4), (8, 16, 1e-4), (8, 4, 1e-2), (8, 16, 1e-2)]):
        synthetic.write_archive(d / f"r{i}.trajkit", STEPS, np.zeros((3, n)),
                                metadata={"dataset": {"n_train": p}, "dynamics": {"weight_decay": lam}},
                                metrics={"train_loss": np.array([1.0, 0.5, 0.1 * (i + 1)])})
    r = trajkit.analyze("phase_diagram", [d], x_key="model.n_params", x_per_key="dataset.n_train",
                        y_key="dynamics.weight_decay", n_boot=0)
    np.testing.assert_allclose(r.coords["x"], [0.5, 2.0])                      # N/P = 8/16, 8/4
    np.testing.assert_allclose(r["loss_geomean"], [[0.2, 0.4], [0.1, 0.3]], rtol=1e-9)
    assert r.scalars["x_key"] == "model.n_params/dataset.n_train"


STAGED = """\
[model]
kind = "mlp"
[data]
name = "pca_parity"
components = 4
n_train = 40
n_test = 20
[loss]
name = "quadratic_hinge"
[dynamics]
kind = "sgd"
lr = 0.05
batch_size = 20
[run]
steps = 20
replicas = 2
[snapshots]
schedule = "log"
n = 4
[sweep]
"model.hidden" = [[1], [8]]
"dynamics.weight_decay" = [1e-3, 1.0]

[[stages]]
name = "sgd"

[[stages]]
name = "polish_slow"
steps = 10
[stages.dynamics]
kind = "gd"
lr = 0.005
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A real (tiny) SGD → GD protocol swept in width × λ: OUT/sgd and OUT/polish_slow."""
    from trajkit.experiments import run_experiment

    root = tmp_path_factory.mktemp("staged")
    (root / "protocol.toml").write_text(STAGED)
    out = root / "out"
    run_experiment(root / "protocol.toml", out, quiet=True)
    return out


def _final_losses(stage_dir):
    """``{(n_params, λ): [final train_loss of each replica]}`` read straight from the stage's archives."""
    cells = {}
    for a in trajkit.open_ensemble([stage_dir], check=False).archives:
        key = (float(a.metadata["model"]["n_params"]), float(a.metadata["dynamics"]["weight_decay"]))
        cells.setdefault(key, []).append(float(a.metrics["train_loss"][-1]))
    return cells


def test_stage_selects_a_stage_of_a_protocol_output(staged):
    for stage in ("polish_slow", "sgd"):
        r = trajkit.analyze("phase_diagram", staged, stage=stage, x_key="model.n_params",
                            y_key="dynamics.weight_decay", n_boot=0)
        cells = _final_losses(staged / stage)
        assert r.scalars["n_runs"] == 8 and r.scalars["n_cells"] == len(cells) == 4
        assert all(Path(p).parent.name == stage for p in r.provenance["inputs"])
        for (n, lam), v in cells.items():
            i, j = list(r.coords["x"]).index(n), list(r.coords["y"]).index(lam)
            assert r["loss_geomean"][i, j] == pytest.approx(geometric_mean(np.array(v), 1e-10), rel=1e-9)
    # the stage's own directory gives the same diagram; so does a glob of every stage with stage= given
    kw = {"x_key": "model.n_params", "y_key": "dynamics.weight_decay", "n_boot": 0}
    whole = trajkit.analyze("phase_diagram", staged, stage="polish_slow", **kw)
    direct = trajkit.analyze("phase_diagram", staged / "polish_slow", **kw)
    glob = trajkit.analyze("phase_diagram", str(staged / "*"), stage="polish_slow", **kw)
    np.testing.assert_array_equal(whole["loss_geomean"], direct["loss_geomean"])
    np.testing.assert_array_equal(whole["loss_geomean"], glob["loss_geomean"])
    assert glob.scalars["n_runs"] == 8
    # polishing changed the losses: the two stages are different diagrams
    sgd = trajkit.analyze("phase_diagram", staged, stage="sgd", **kw)
    assert not np.allclose(sgd["loss_geomean"], whole["loss_geomean"])


def test_stage_errors_name_the_stages(staged, tmp_path):
    kw = {"x_key": "model.n_params", "y_key": "dynamics.weight_decay", "n_boot": 0}
    with pytest.raises(AnalysisError, match=r"stage='polish'.*no such stage.*polish_slow, sgd"):
        trajkit.analyze("phase_diagram", staged, stage="polish", **kw)
    with pytest.raises(AnalysisError, match=r"\[\[stages\]\] protocol \(stages polish_slow, sgd\).*stage=NAME"):
        trajkit.analyze("phase_diagram", staged, **kw)
    with pytest.raises(AnalysisError, match=r"2 stages of a protocol \(polish_slow, sgd\); pass stage=NAME"):
        trajkit.analyze("phase_diagram", str(staged / "*"), **kw)
    with pytest.raises(AnalysisError, match=r"stage='sgd': none of the 8 runs.*the stages there are polish_slow"):
        trajkit.analyze("phase_diagram", staged / "polish_slow", stage="sgd", **kw)
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "phase_diagram", str(staged), "-p", "stage=nope",
                                   "-p", "n_boot=0", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "stages are polish_slow, sgd" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "phase_diagram", str(staged), "-p", "stage=polish_slow",
                                   "-p", "n_boot=0", "-p", "x_key=model.n_params", "-p",
                                   "y_key=dynamics.weight_decay", "--out", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output
    assert load_result(tmp_path / "ok")["loss_geomean"].shape == (2, 2)
