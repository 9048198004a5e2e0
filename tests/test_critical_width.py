"""The ``critical_width`` analysis: per-depth w_c(ℓ) from loss families with a known critical width, and its
bad inputs (a single width, thresholds no run reaches)."""

import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit import synthetic
from trajkit.cli import cli
from trajkit.errors import TrajkitError

STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 1e6, 100))])).astype(np.int64)
TRUE_WC = {1: 10.0, 2: 6.0}       # the critical width of each depth
AMP = 1000.0
WIDTHS = [4, 8, 12, 14, 16, 20, 24, 32]


def _family(widths, depths=(1, 2), replicas=1, noise=0.01):
    """Runs whose train loss crosses ℓ at t_learn(ℓ) = AMP / (ℓ (w − w_c(d))) (× noise), with a floor 0.5
    below w_c: L(t) = AMP / ((w − w_c) t) is a pure power law, so log-log interpolation is exact."""
    runs = []
    t = np.maximum(STEPS, 1).astype(float)
    for d in depths:
        for w in widths:
            for r in range(replicas):
                rng = np.random.default_rng([d, w, r])
                wiggle = np.exp(noise * rng.standard_normal(STEPS.size))
                wc = TRUE_WC[d]
                curve = (AMP / ((w - wc) * t) if w > wc else 0.5 + t ** -0.5) * wiggle
                runs.append({"steps": STEPS, "params": rng.standard_normal((STEPS.size, 4)),
                             "metrics": {"train_loss": curve},
                             "coords": {"model.depth": d, "model.width": w},
                             "metadata": {"config": {"model": {"depth": d, "width": w}}}})
    return runs


def test_known_critical_width_per_depth_inside_its_interval(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _family(WIDTHS),
                                    sweep={"model.depth": [1, 2], "model.width": WIDTHS})
    r = trajkit.analyze("critical_width", [root], thresholds=[0.1, 0.03, 0.01])
    assert r.coords["depth"].tolist() == ["1", "2"]
    np.testing.assert_array_equal(r.coords["width"], WIDTHS)
    for i, d in enumerate((1, 2)):
        below = r.coords["width"] <= TRUE_WC[d]
        assert not r["reached"][i][below].any()            # the floor 0.5: below w_c no threshold is reached
        for c in range(3):
            lo, hi = r["w_c_ci"][i, c]
            assert lo <= TRUE_WC[d] <= hi
            assert r["w_c"][i, c] == pytest.approx(TRUE_WC[d], abs=0.5)
        assert r["w_c0"][i] == pytest.approx(TRUE_WC[d], abs=0.5)
        # floor: L∞ = 0.5 below w_c (0.5 + t^-1/2), 0 above (a pure power law with β = 1)
        assert r["loss_inf"][i][below] == pytest.approx(0.5, rel=0.02)
        assert r["beta"][i][~below] == pytest.approx(1.0, abs=0.02)
    assert r.scalars["unreached_thresholds"] == []
    # t_learn itself is the law A/(ℓ (w − w_c)) up to the 1 % noise
    j = int(np.searchsorted(r.coords["width"], 20))
    np.testing.assert_allclose(r["t_learn"][0, j], AMP / (np.array([0.1, 0.03, 0.01]) * (20 - 10)), rtol=0.05)


def test_single_width_sweep_says_no_fit(tmp_path, tree_digest):
    root = synthetic.write_ensemble(tmp_path / "ens", _family([16], depths=(1,)),
                                    sweep={"model.width": [16]})
    before = tree_digest(root)
    with pytest.raises(TrajkitError, match=r"single width \(config.model.width = 16\): no w_c fit is possible") as e:
        trajkit.analyze("critical_width", [root])
    assert "\n" not in str(e.value)
    assert tree_digest(root) == before
    out = tmp_path / "res"
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "critical_width", str(root), "--out", str(out)])
    assert res.exit_code == 1 and "no w_c fit is possible" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_thresholds_never_reached_are_reported_not_fitted(tmp_path):
    root = synthetic.write_ensemble(tmp_path / "ens", _family([4, 12, 16, 24, 32], depths=(1,)))
    lowest = AMP / ((32 - 10) * 1e6)                   # the lowest loss any run reaches (up to 1 % noise)
    with pytest.warns(UserWarning, match=r"\[1e-09\] are reached by no run"):
        r = trajkit.analyze("critical_width", [root], thresholds=[0.1, 1e-9])
    assert r.scalars["unreached_thresholds"] == [1e-9]
    assert np.isfinite(r["w_c"][0, 0]) and np.isnan(r["w_c"][0, 1])
    assert not r["reached"][..., 1].any()
    with pytest.raises(TrajkitError, match=r"no run reaches any threshold 1e-09, 1e-10") as e:
        trajkit.analyze("critical_width", [root], thresholds=[1e-9, 1e-10])
    assert f"{lowest:.2g}"[:3] in str(e.value) and "\n" not in str(e.value)
