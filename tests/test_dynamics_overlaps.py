"""`overlaps` against the analytic results for Brownian and frozen parameters, through real archives,
the real entry point (trajkit.analyze) and the core's pair kernels; and its bad inputs."""

import numpy as np
import pytest
from click.testing import CliRunner
from trajkit_dynamics import overlaps as ov

import trajkit
from trajkit import synthetic
from trajkit.errors import TrajkitError

D, EPS, N, R = 1e-3, 1.0, 5000, 4
STEPS = np.unique(np.concatenate([[0, 100], np.rint(np.geomspace(1, 20000, 50))])).astype(np.int64)
POOLED = N * R  # parameters behind each replica-mean value


@pytest.fixture(scope="module")
def brownian(tmp_path_factory):
    return synthetic.brownian_ensemble(tmp_path_factory.mktemp("b") / "ens", STEPS, N, D, R, seed=1)


@pytest.fixture(scope="module")
def result(brownian):
    return trajkit.analyze("overlaps", [brownian], waiting_times=[0, 100], epsilon=EPS)


def _lags(result, k):
    lag = result.coords["step"] - result.coords["tw_step"][k]
    return lag, lag > 0


def test_msd_is_2Dt(result):
    for k in range(2):
        lag, after = _lags(result, k)
        ratio = result["msd"][k][after] / synthetic.brownian_msd(lag[after], D)
        # mean of POOLED = 2e4 scaled chi^2_1 variables: relative std sqrt(2/2e4) = 0.01; 5 sigma
        np.testing.assert_allclose(ratio, 1.0, atol=0.05)
        assert np.all(np.isnan(result["msd"][k][lag < 0]))


def test_self_overlap_is_erf(result):
    lag, after = _lags(result, 1)
    expected = synthetic.brownian_self_overlap(lag[after], D, EPS)
    # binomial mean over 2e4 parameters: std <= 0.5/sqrt(2e4) = 0.0035; 5 sigma
    np.testing.assert_allclose(result["self_overlap"][1][after], expected, atol=0.018)
    assert result["self_overlap"][1][~after & (lag == 0)] == pytest.approx(1.0)


def test_gaussian_moments(result):
    _, after = _lags(result, 0)
    # alpha2 estimator for Gaussians: std ~ sqrt(96/N)/3 = 0.046 per replica, 0.023 for the mean of 4; 5 sigma
    np.testing.assert_allclose(result["alpha2"][0][after], 0.0, atol=0.12)
    ratio = result["d4"][0][after] / result["msd"][0][after] ** 2
    np.testing.assert_allclose(ratio, 3.0, rtol=0.12)          # = 3(1 + alpha2), same noise
    np.testing.assert_allclose(result["participation"][0][after] * N / 3, 1.0, atol=0.12)   # Y = 3/N (1 + alpha2)


def test_overlap_and_sem(result):
    lag, after = _lags(result, 1)
    short = after & (lag <= 100)
    # w starts at 0, so C(tw, tw+t) = <w(tw)^2> = 2 D tw; relative std sqrt((2 + t/tw)/2e4) <= 0.012; 5 sigma
    np.testing.assert_allclose(result["overlap"][1][short], 2 * D * 100, rtol=0.06)
    assert np.all(result["msd_sem"][0][after] > 0)
    assert result.scalars["replicas"] == R and result.scalars["n_selected"] == N


def test_displacement_histogram_centre(result):
    density, edges = result["disp_hist"], result["disp_bins"]
    centres = 0.5 * (edges[1:] + edges[:-1])
    mean = np.sum(density * centres * np.diff(edges))
    sigma = np.sqrt(2 * D * result.scalars["disp_lag"])
    # E[log10|x|] for x ~ N(0, s^2) is log10 s - (gamma + ln 2)/(2 ln 10); binning error < width/2 = 0.05
    expected = np.log10(sigma) - (np.euler_gamma + np.log(2)) / (2 * np.log(10))
    assert mean == pytest.approx(expected, abs=0.05)
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)


def test_independent_replicas_have_zero_overlap(result):
    q = result["replica_overlap"][1:]
    # mean of 6 pairwise normalised overlaps of independent N=5000 vectors: std <= 1/sqrt(5000) = 0.014
    assert np.all(np.abs(q) < 0.07)


def test_lag_mode_msd(brownian):
    r = trajkit.analyze("overlaps", [brownian], mode="lag", epsilon=EPS)
    lags = r.coords["lag"]
    ok = r["n_pairs"] > 0
    assert r["n_pairs"].sum() > lags.size
    # Brownian increments are stationary: msd(lag) = 2 D lag (origin average; noise as above)
    np.testing.assert_allclose(r["msd"][ok] / (2 * D * lags[ok]), 1.0, atol=0.05)


def test_frozen_trajectory(tmp_path):
    w = synthetic.frozen(STEPS[:20], 300, seed=2)
    path = synthetic.write_archive(tmp_path / "f.trajkit", STEPS[:20], w)
    r = trajkit.analyze("overlaps", [path], waiting_times=[0, int(STEPS[10])], epsilon=1e-6)
    after = ~np.isnan(r["msd"])
    assert np.all(r["msd"][after] == 0)
    assert np.all(r["self_overlap"][after] == 1)
    np.testing.assert_allclose(r["overlap_normalized"][after], 1.0, rtol=1e-12)
    assert np.all(np.isnan(r["alpha2"][after]))       # undefined without motion, not a number
    assert "replica_overlap" not in r.arrays


def test_epsilon_factor_uses_std_at_tw(brownian):
    r = trajkit.analyze("overlaps", [brownian], waiting_times=[100], epsilon_factor=2.0)
    eps = r["epsilon"]
    # std of w(100) is sqrt(2 D 100) = 0.447 up to sampling (relative std 0.01); eps = std / 2
    np.testing.assert_allclose(eps, np.sqrt(2 * D * 100) / 2, rtol=0.05)


def test_plot_returns_figure(result):
    import matplotlib

    matplotlib.use("Agg")
    fig = result.plot()
    assert fig.axes


# -- bad input: one clear line, nothing written --------------------------------------------------------------

def _digest_all(root, tree_digest):
    return {p.name: tree_digest(p) for p in sorted(root.glob("*.trajkit"))}


def test_waiting_time_not_a_snapshot(brownian, tree_digest):
    before = _digest_all(brownian, tree_digest)
    assert 103 not in STEPS and 104 in STEPS and 100 in STEPS
    with pytest.raises(TrajkitError, match="not a snapshot step; nearest snapshot is step 104") as e:
        trajkit.analyze("overlaps", [brownian], waiting_times=[103], epsilon=EPS)
    assert "\n" not in str(e.value)
    r = trajkit.analyze("overlaps", [brownian], waiting_times=[103], snap="nearest", epsilon=EPS)
    assert list(r.coords["tw_step"]) == [104]
    assert _digest_all(brownian, tree_digest) == before


@pytest.mark.parametrize("params, message", [
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon_factor": 0.0}, "epsilon_factor"),
    ({"select": "nosuch*"}, "matches no parameters"),
])
def test_bad_parameters(brownian, params, message):
    with pytest.raises(TrajkitError, match=message) as e:
        trajkit.analyze("overlaps", [brownian], **params)
    assert "\n" not in str(e.value)


def test_ensemble_with_different_N_layout_or_steps_is_refused(tmp_path):
    synthetic.write_archive(tmp_path / "a.trajkit", STEPS[:5], np.zeros((5, 10)))
    synthetic.write_archive(tmp_path / "b.trajkit", STEPS[:5], np.zeros((5, 11)))
    with pytest.raises(TrajkitError, match="differ in parameter count"):     # pooled only when asked
        trajkit.analyze("overlaps", [tmp_path / "a.trajkit", tmp_path / "b.trajkit"], epsilon=1.0, group_by="none")
    by_n = trajkit.analyze("overlaps", [tmp_path / "a.trajkit", tmp_path / "b.trajkit"], epsilon=1.0)
    assert by_n.coords["group"].tolist() == ["model.n_params=10", "model.n_params=11"]   # two models: two groups
    synthetic.write_archive(tmp_path / "c.trajkit", STEPS[1:6], np.zeros((5, 10)))
    with pytest.raises(TrajkitError, match="differ in snapshot steps"):
        trajkit.analyze("overlaps", [tmp_path / "a.trajkit", tmp_path / "c.trajkit"], epsilon=1.0)
    two = [{"name": n, "shape": [5], "offset": 5 * i, "size": 5, "role": r, "layer": 0}
           for i, (n, r) in enumerate((("w", "weight"), ("b", "bias")))]
    synthetic.write_archive(tmp_path / "d.trajkit", STEPS[:5], np.zeros((5, 10)), layout=two)
    with pytest.raises(TrajkitError, match="differ in parameter layout"):
        trajkit.analyze("overlaps", [tmp_path / "a.trajkit", tmp_path / "d.trajkit"], epsilon=1.0)


def test_nan_params_refused_unless_allow_nan(tmp_path, tree_digest):
    steps = STEPS[:12]
    w = synthetic.brownian(steps, 200, D, seed=4)
    w[7, 3] = np.nan
    with pytest.warns(RuntimeWarning, match="NaN"):
        path = synthetic.write_archive(tmp_path / "nan.trajkit", steps, w)
    before = tree_digest(path)
    with pytest.raises(TrajkitError, match=r"NaN/inf at step .*allow_nan"):
        trajkit.analyze("overlaps", [path], waiting_times=[0], epsilon=EPS)
    r = trajkit.analyze("overlaps", [path], waiting_times=[0, int(steps[2])], epsilon=EPS, allow_nan=True)
    assert r.scalars["masked_steps"] == [int(steps[7])]
    assert np.all(np.isnan(r["msd"][:, 7]))
    assert np.isfinite(r["msd"][0, 6]) and np.isfinite(r["msd"][0, 8])
    assert tree_digest(path) == before


def test_cli_error_is_one_line_and_writes_nothing(brownian, tmp_path):
    from trajkit.cli import cli

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["analyze", "--plugin", "overlaps", "-p", "epsilon=-1", str(brownian),
                                   "--out", str(out)])
    assert res.exit_code != 0
    assert "epsilon" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_two_time_from_sums_formulas():
    sums = {"dot": np.array([6.0]), "norm_a": np.array([4.0]), "norm_b": np.array([9.0]),
            "sq": np.array([2.0]), "quart": np.array([2.0]), "theta": np.array([1.0])}
    got = ov.two_time_from_sums(sums, 2)
    assert got["overlap"][0] == 3.0 and got["overlap_normalized"][0] == 1.0
    assert got["msd"][0] == 1.0 and got["self_overlap"][0] == 0.5 and got["d4"][0] == 1.0
    assert got["participation"][0] == 0.5
    assert got["alpha2"][0] == pytest.approx(2 * 2 / (3 * 4) - 1)
