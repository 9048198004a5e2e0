"""The 1803.06969 reproduction (examples/repro_1803_06969.py): its measurements against closed forms, its
``--quick`` run end to end (the recorded MSD and D(t_w) recomputed from the archives), the doc section's table
against the committed numbers, and the ``--mnist-root`` config."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trajkit
from trajkit.analysis.result import load_result
from trajkit.experiments import load_config

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repro_doc import Section

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "repro_1803_06969.py"
DOC = Section("1803.06969")   # its section of docs/reproductions.md
NUMBERS = ROOT / "docs" / "figures" / "repro_1803_06969.json"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("repro_1803_06969", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the measurements on closed forms ---------------------------------------------------------------------------


def test_measurements_of_pure_noise_diffusion(ex):
    """Brownian motion with a constant D (summed over N parameters): Δ = 2Dt/N at every t_w. Every curve is the
    same (spread 0 raw and rescaled), α = α_D = 1 and both diffusion ratios are 1; D flat in t_w."""
    steps = np.asarray(ex.schedule_steps(8000, n_base=30, n_lags=10))
    tws = np.asarray(ex.waiting_times(8000))
    n, d = 500, 3e-3
    lag = steps[None, :] - tws[:, None]
    msd = np.where(lag > 0, 2 * d * np.maximum(lag, 0) / n, np.nan)
    m = ex.measure(tws, steps, msd, np.full(tws.size, d), np.full(steps.size, d), n)
    for key in ("spread_raw", "spread_noise_D", "spread_short_raw", "spread_short_noise_D", "D_slope"):
        assert m[key] == pytest.approx(0.0, abs=1e-9), key
    for key in ("alpha_short", "alpha_late", "alpha_noise_clock", "ratio_short", "ratio_late"):
        assert m[key] == pytest.approx(1.0, rel=1e-9), key
    assert math.isnan(m["radial_late"])                                  # no overlaps given


def test_radial_share_of_a_pure_dilation(ex):
    """w(s) = (1 + a s) w0: all the displacement is a change of norm (share 1); a rotation at fixed norm has 0."""
    steps = np.asarray(ex.schedule_steps(2000, n_base=20, n_lags=6))
    tws = np.asarray(ex.waiting_times(2000))
    a, c0 = 1e-3, 0.7
    grow = 1 + a * steps.astype(float)
    overlap = np.stack([(1 + a * tw) * grow * c0 for tw in tws])
    msd = np.stack([(a * (steps - tw)) ** 2 * c0 for tw in tws]).astype(float)
    share = ex.radial_share(tws, steps, msd, overlap)
    later = steps > tws[-1]
    np.testing.assert_allclose(share[later], 1.0, rtol=1e-9)
    theta = 1e-3 * (steps - tws[-1])                                     # rotation by θ at |w|²/N = c0
    rot_overlap = np.tile(c0 * np.cos(theta), (tws.size, 1))
    rot_msd = np.tile(2 * c0 * (1 - np.cos(theta)), (tws.size, 1))
    np.testing.assert_allclose(ex.radial_share(tws, steps, rot_msd, rot_overlap)[later], 0.0, atol=1e-9)


def test_measurements_of_decaying_noise(ex):
    """D(s) = D0 (s/s0)^−γ: D(t_w) has slope −γ, Δ = (2/N)∫D: the ratio to ∫D is 1 and α_D = 1 whatever the clock,
    and curves that differ by constant factors a_k have a mean log-spread of std(ln a_k) exactly."""
    steps = np.asarray(ex.schedule_steps(20000, n_base=40, n_lags=12)).astype(float)
    tws = np.asarray(ex.waiting_times(20000))
    n, gamma = 100, 0.7
    D = 1e-2 * np.maximum(steps, 1) ** -gamma
    integral = ex.cumulative_noise(steps, D)
    rows = np.flatnonzero(np.isin(steps, tws))
    msd = np.stack([np.where(steps > tw, 2 * (integral - integral[r]) / n, np.nan)
                    for tw, r in zip(tws, rows, strict=True)])
    m = ex.measure(tws, steps, msd, D[rows], D, n)
    assert m["D_slope"] == pytest.approx(-gamma, rel=1e-9)
    assert m["ratio_late"] == pytest.approx(1.0, rel=1e-9) and m["alpha_noise_clock"] == pytest.approx(1.0, rel=1e-9)
    a = np.array([1.0, 2.0, 4.0, 0.5, 3.0])
    grid = ex.lag_grid(tws, steps.astype(np.int64))
    base = np.where(steps[None, :] > tws[:, None], np.abs(steps[None, :] - tws[:, None]) ** 0.6, np.nan)
    assert ex.mean_log_spread(tws, steps, a[:, None] * base, grid) == pytest.approx(np.std(np.log(a)), rel=1e-9)


def test_noise_factor_conventions(ex):
    # b = 1: the documented noise_D up to (P − B)/(P − 1) and K/(K − 1); b = B: K/(K − 1) · B
    assert ex.sgd_noise_factor(32, 1, 32, 1437) == pytest.approx(32 / 31 * 1405 / 1436)
    assert ex.sgd_noise_factor(64, 32, 32, 1437) == pytest.approx(64 / 63 * 32)


def test_the_config_holds_the_schedule_of_the_script(ex):
    cfg = load_config(ROOT / "examples" / "repro_1803_06969.toml")
    assert cfg["snapshots"]["schedule"] == "explicit"
    assert cfg["snapshots"]["steps"] == ex.schedule_steps(cfg["run"]["steps"])
    assert set(ex.waiting_times(cfg["run"]["steps"])) <= set(cfg["snapshots"]["steps"])
    assert cfg["metrics"]["gradient_stats"] and cfg["metrics"]["gradient_batch_size"] == cfg["dynamics"]["batch_size"]


# -- the quick run ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro1803")
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out / "run"), "--figures",
                          str(out / "figs")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_quick_run_writes_every_quantity(quick, ex):
    out, stdout = quick
    s = json.loads((out / "run" / "summary.json").read_text())
    assert s == json.loads((out / "figs" / "repro_1803_06969.json").read_text())
    for name in ("repro_1803_06969_msd.png", "repro_1803_06969_noise.png", "repro_1803_06969_aging_width4.png"):
        assert (out / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "quantity" in stdout and "paper" in stdout
    small, large = s["nets"]
    assert small["n_over_p"] < 1 < large["n_over_p"]                 # under- and over-parametrised
    for net in s["nets"]:
        for _, key, ci, _ in ex.ROWS:
            v = ex.lookup(net, key)
            # the `aging` analysis reports NaN for μ_τ when τ is unresolved and for intervals of a stationary
            # regime (a 600-step run barely ages); every other number is a measurement that must be finite
            aging = key.startswith("aging_") and key != "aging_raw.mu_collapse_raw"
            assert _finite(v) or (aging and isinstance(v, float) and math.isnan(v)), (net["label"], key, v)
            if ci is not None:
                lo, hi = ex.lookup(net, ci)
                if ci.startswith("aging_") and not (_finite(lo) and _finite(hi)):
                    assert math.isnan(lo) and math.isnan(hi), (net["label"], ci)
                else:
                    assert _finite(lo) and _finite(hi) and lo <= hi, (net["label"], ci)
        for k in ("spread_raw", "spread_noise_D", "spread_short_raw", "spread_short_noise_D"):
            assert net[k] >= 0
        assert all(d > 0 for d in net["D_tw"])                          # the noise strength is a variance
        assert net["alpha_short"] > 0.5 and net["alpha_late"] > 0.5     # the MSD grows with the lag
        assert net["ratio_short"] > 0 and net["ratio_late"] > 0
        assert -0.5 <= net["aging_raw"]["mu_collapse_raw"] <= 2.5
        assert isinstance(net["aging_raw"]["regime"], str)


def test_quick_run_curves_equal_a_recomputation_from_the_archives(quick, ex):
    """Δ(t_w, t_w + t) and D(t_w) of the saved results recomputed with numpy from the recorded parameters."""
    out, _ = quick
    s = json.loads((out / "run" / "summary.json").read_text())
    ens = trajkit.open_ensemble([out / "run" / "ensemble"], check=False)
    for net, (_, group) in zip(s["nets"], sorted(ens.groups("model.n_params").items()), strict=True):
        steps = np.asarray(group.steps)
        rows = [int(np.flatnonzero(steps == tw)[0]) for tw in net["tw_steps"]]
        msd = []
        for arch in group.archives:
            w = np.asarray(arch.params[:, :], dtype=np.float64)
            msd.append(np.stack([np.mean((w - w[r]) ** 2, axis=1) for r in rows]))
            assert arch.n_params == net["n_params"]
        msd = np.mean(msd, axis=0)
        saved = load_result(out / "run" / f"overlaps_{net['label']}")
        later = steps[None, :] > np.asarray(net["tw_steps"])[:, None]
        np.testing.assert_allclose(np.asarray(saved["msd"])[later], msd[later], rtol=1e-5)
        d = np.mean([np.asarray(a.metrics["noise_D"])[rows] for a in group.archives], axis=0)
        np.testing.assert_allclose(net["D_tw"], net["noise_factor"] * d, rtol=1e-6)


# -- the doc section against the committed numbers -------------------------------------------------------------


NUM = re.compile(r"−?-?\d+\.\d+")


def _doc_table_rows():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4:
            rows[cells[0]] = cells[1:-1]
    return rows


@pytest.mark.skipif(not NUMBERS.exists(), reason="docs/figures/repro_1803_06969.json not committed yet")
def test_doc_table_numbers_equal_the_committed_json(ex):
    s = json.loads(NUMBERS.read_text())
    rows = _doc_table_rows()
    checked = 0
    for label, key, ci, _ in ex.ROWS:
        assert label in rows, f"doc table lacks the row {label!r}"
        for net, cell in zip(s["nets"], rows[label], strict=True):
            expected = [ex.lookup(net, key)] + (list(ex.lookup(net, ci)) if ci else [])
            expected = [e for e in expected if _finite(e)]
            found = [float(x.replace("−", "-")) for x in NUM.findall(cell)]
            assert len(found) == len(expected), (label, cell, expected)
            for f, e, text in zip(found, expected, NUM.findall(cell), strict=True):
                d = len(text.split(".")[1])
                assert abs(f - e) <= 0.5 * 10 ** -d + 1e-12, (label, cell, e)
                checked += 1
    assert checked >= 2 * len(ex.ROWS)
    for net, cell in zip(s["nets"], rows["regime of Δ (`aging`)"], strict=True):
        assert cell == net["aging_raw"]["regime"]


# -- MNIST --------------------------------------------------------------------------------------------------------


def _idx(a):
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def test_mnist_root_builds_a_valid_config(tmp_path, ex):
    root = tmp_path / "mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 60), "t10k-images-idx3-ubyte":
              rng.integers(0, 256, (20, 28, 28)), "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20)}
    for name, a in arrays.items():
        (root / (name + ".gz")).write_bytes(gzip.compress(_idx(a)))
    args = type("A", (), {"quick": False, "mnist_root": str(root), "set": []})()
    cfg = load_config(EXAMPLE.with_suffix(".toml"), ex.overrides(args))     # the full-size MNIST config
    assert cfg["data"]["name"] == "mnist" and cfg["data"]["root"] == str(root.resolve())
    assert cfg["data"]["preprocess"] == "none" and cfg["data"]["n_train"] == 10000
    # the dry run reads the (tiny) files: the subsample is shrunk to fit them
    res = subprocess.run([sys.executable, str(EXAMPLE), "--dry-run", "--mnist-root", str(root), "--out",
                          str(tmp_path / "o"), "--set", "data.n_train=50", "--set", "data.n_test=10"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    listed = json.loads(res.stdout)
    assert listed["data"]["name"] == "mnist" and len(listed["runs"]) == 2 * cfg["run"]["replicas"]
    assert not (tmp_path / "o" / "ensemble").exists() or not list((tmp_path / "o" / "ensemble").glob("*.trajkit"))
    bad = subprocess.run([sys.executable, str(EXAMPLE), "--dry-run", "--mnist-root", str(tmp_path / "none"),
                          "--out", str(tmp_path / "o2")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no such directory" in (bad.stderr + bad.stdout)
