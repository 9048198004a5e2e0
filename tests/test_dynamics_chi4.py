"""`chi4`: a heterogeneous ensemble (each replica diffusing with its own D) against the closed form, through
real archives and the real entry point; bootstrap errors; bad input."""

import numpy as np
import pytest
from trajkit_dynamics import chi4 as c4

import trajkit
from trajkit import synthetic
from trajkit.errors import TrajkitError

D0, EPS, N = 1e-3, 1.0, 10_000
DIFFUSIONS = D0 * np.geomspace(0.25, 4.0, 16)
STEPS = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, 1e5, 40))])).astype(np.int64)


@pytest.fixture(scope="module")
def hetero(tmp_path_factory):
    return synthetic.heterogeneous_ensemble(tmp_path_factory.mktemp("h") / "ens", STEPS, N, DIFFUSIONS, seed=9)


@pytest.fixture(scope="module")
def result(hetero):
    return trajkit.analyze("chi4", [hetero], waiting_times=[0], epsilon=EPS, n_boot=100)


def test_chi4_matches_closed_form(result):
    lag = STEPS[1:].astype(float)
    expected = synthetic.chi4_heterogeneous(lag, DIFFUSIONS, EPS, N)
    got = result["chi4"][0][1:]
    big = expected > 0.1 * expected.max()
    # chi4 = N var_r(p_r + eta_r): the cross term 2N cov(p, eta) has relative std 2 sqrt(p(1-p) / (N var(p) R))
    # ~ 1-2 % per point here (N = 1e4, R = 16, var(p) >= 0.01 where chi4 is >= 10 % of its peak); the largest
    # of the ~25 correlated points deviated by 3-5 % over three seeds; tolerance 10 %
    np.testing.assert_allclose(got[big], expected[big], rtol=0.10)
    assert np.all(np.isnan(result["chi4"][0][:0]))


def test_peak_and_tau4(result):
    fine = np.geomspace(1, 1e5, 4000)
    expected = synthetic.chi4_heterogeneous(fine, DIFFUSIONS, EPS, N)
    assert result.scalars["chi4_peak"] == pytest.approx(expected.max(), rel=0.10)
    # the peak is broad (flat to 1 % over ±20 % in t) and sampled at 9 points per decade
    assert result.scalars["tau4"] == pytest.approx(fine[np.argmax(expected)], rel=0.35)
    assert result["chi4_peak"].shape == (1,) and result["tau4"].shape == (1,)
    assert 0 < result.scalars["chi4_peak_sem"] < 0.5 * result.scalars["chi4_peak"]


def test_bootstrap_errors_are_finite(result):
    sem = result["chi4_sem"][0][1:]
    assert np.all(np.isfinite(sem)) and np.all(sem >= 0)
    assert np.nanmax(sem) > 0


def test_homogeneous_ensemble_has_binomial_chi4(tmp_path):
    w = synthetic.brownian(STEPS[:30], 4000, D0, replicas=8, seed=3)
    root = synthetic.write_ensemble(tmp_path / "h", [{"steps": STEPS[:30], "params": x} for x in w])
    r = trajkit.analyze("chi4", [root], waiting_times=[0], epsilon=EPS, n_boot=20)
    lag = STEPS[1:30].astype(float)
    expected = synthetic.chi4_heterogeneous(lag, [D0] * 8, EPS, 4000)   # (1 - 1/R) p (1 - p)
    big = expected > 0.05
    # a variance from 8 samples: relative std sqrt(2/7) = 0.53 per point; compare the mean over the points
    assert np.mean(r["chi4"][0][1:30][big]) == pytest.approx(np.mean(expected[big]), rel=0.5)


def test_lag_mode_pools_replicas_and_origins(hetero):
    r = trajkit.analyze("chi4", [hetero], mode="lag", epsilon=EPS, n_boot=20)
    ok = r["n_samples"] >= 2
    assert np.all(r["n_samples"][ok] >= len(DIFFUSIONS))
    assert np.all(np.isfinite(r["chi4"][ok])) and np.all(r["chi4"][ok] >= 0)
    assert np.isfinite(r.scalars["chi4_peak"])


def test_one_replica_is_refused(tmp_path, tree_digest):
    path = synthetic.write_archive(tmp_path / "one.trajkit", STEPS[:10], synthetic.brownian(STEPS[:10], 50, D0))
    before = tree_digest(path)
    with pytest.raises(TrajkitError, match="at least 2 replicas") as e:
        trajkit.analyze("chi4", [path], epsilon=EPS)
    assert "\n" not in str(e.value)
    assert tree_digest(path) == before


def test_chi4_function_is_population_variance():
    q = np.array([[0.2, 0.5], [0.4, 0.5]])
    np.testing.assert_allclose(c4.chi4(q, 100), [100 * 0.01, 0.0])
    peak, tau = c4.chi4_peak(np.array([1.0, 10.0, 100.0]), np.array([1.0, 3.0, 1.0]))
    assert peak == pytest.approx(3.0) and tau == pytest.approx(10.0)
