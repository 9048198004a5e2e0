"""The 2405.13098 reproduction (examples/repro_2405_13098.py): the smoke run at --quick size (every quantity
present, finite, with the signs and ranges the physics requires even at that size), the doc section's table
against the committed numbers, and the --mnist-root configs (valid without files; planned on a tiny IDX set)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import re
import string
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trajkit_dynamics.aging import POOR_COLLAPSE

from trajkit.experiments import load_config

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repro_doc import Section

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "repro_2405_13098.py"
DOC = Section("2405.13098")   # its section of docs/reproductions.md
NUMBERS = ROOT / "docs" / "figures" / "repro_2405_13098.json"
REGIMES = ("stationary", "simple", "sub", "super", "undetermined", POOR_COLLAPSE)


def _module():
    spec = importlib.util.spec_from_file_location("repro_2405_13098", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                         os.environ.get("PYTHONPATH", "")])}


def _finite(v):
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "out"
    figs = out.parent / "figs"
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--figures", str(figs)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), out, figs, res.stdout


def test_quick_run_holds_every_quantity(quick):
    s, out, figs, stdout = quick
    for conv in ("paper", "default"):
        r = s[f"relaxation_{conv}"]
        for k in ("tts_exponent", "tau_T_slope"):
            assert _finite(r[k]), (conv, k)
            lo, hi = r[f"{k}_ci"]
            assert _finite(lo) and _finite(hi) and lo <= hi
        # Q decays: a negative power of t/τe at the highest T, and a relaxation time at every T
        assert -2.0 < r["tts_exponent"] < 0
        assert all(_finite(t) and t > 0 for t in r["tau_e_by_T"].values())
        assert set(r["tau_e_by_T"]) == {str(t) for t in s["temperatures"]}
    assert s["relaxation_paper"]["tau_rule"] == "first_below" and s["relaxation_paper"]["min_tau"] == 4.0
    assert s["relaxation_paper"]["tau_estimator"] == "per_replica"
    assert s["relaxation_default"]["tau_rule"] == "interpolate"
    # per_replica τ: the first_below rule places τ at a snapshot, at or past the interpolated crossing
    # of each replica; min_tau = 4 steps
    assert all(v >= 4 for v in s["relaxation_paper"]["tau_e_by_T"].values())
    ag = s["aging_coldest"]
    assert ag["regime"] in REGIMES
    if ag["regime"] != "stationary":        # μ measured: finite, with an interval around it
        assert _finite(ag["mu_collapse"]) and ag["mu_collapse_ci"][0] <= ag["mu_collapse_ci"][1]
    assert _finite(s["epsilon"]) and s["epsilon"] > 0
    # polishing by full-batch GD does not raise the training loss (λ = 1e-4 is small)
    fl = s["final_train_loss"]
    assert fl["polish_slow"]["geomean"] <= fl["sgd"]["geomean"] * 1.01
    ph = s["phase"]
    geo = np.array(ph["loss_geomean"], dtype=float)
    assert geo.shape == (len(ph["n_over_p"]), len(ph["weight_decay"])) and np.all(np.isfinite(geo))
    assert np.all(np.array(ph["replicas"]) == 2)
    # the wider net fits better at small λ (jamming side), and the largest λ sits near the trivial 1/2
    assert ph["loss_overparam_small_lambda"] < ph["loss_underparam_small_lambda"]
    assert abs(ph["loss_largest_lambda"]["min"] - 0.5) < 0.05 and ph["loss_largest_lambda"]["max"] <= 0.5 + 1e-6
    assert _finite(ph["lambda_midlevel"]) and 1e-5 < ph["lambda_midlevel"] < 1.0
    assert ph["trivial_bracket_largest_np"] == [1e-5, 1.0]      # λ = 1 trivial, λ = 1e-5 not
    assert _finite(ph["jamming_np"]) and ph["n_over_p"][0] < ph["jamming_np"] < ph["n_over_p"][-1]
    c4 = s["chi4_coldest"]
    assert len(c4["chi4_peak"]) == len(s["waiting_times"]) and all(v > 0 for v in c4["chi4_peak"])
    assert 0.5 < s["aging_coldest"]["msd_exponent"] < 2.5     # the MSD grows: between sub-diffusion and drift
    # N/P = (12·width + 1)/P
    np.testing.assert_allclose(ph["n_over_p"], [(12 * w + 1) / 60 for w in (1, 16)])
    # the printed table and the json's
    assert len(s["table"]) == len(_module().TABLE)
    assert "quantity" in stdout and all(r["quantity"] in stdout for r in s["table"])
    names = sorted(p.name for p in figs.iterdir())
    assert "repro_2405_13098.json" in names and sum(n.endswith(".png") for n in names) == 7
    assert all((out / n.removeprefix("repro_2405_13098_")).is_file() for n in names if n.endswith(".png"))


_NUM = re.compile(r"[−-]?\d+(?:\.\d+)?(?:e[−+-]?\d+)?")


def _close(text: str, value: float) -> bool:
    """``value`` printed as ``text`` (to its rounding)."""
    text = text.replace("−", "-")
    mant, _, exp = text.partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    scale = 10.0 ** int(exp) if exp else 1.0
    return abs(value / scale - float(mant)) <= 0.5 * 10.0 ** -decimals + 1e-9


def test_doc_table_matches_the_committed_numbers():
    numbers = json.loads(NUMBERS.read_text())
    assert numbers["quick"] is False
    by_quantity = {r["quantity"]: r for r in numbers["table"]}
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| quantity"))
    rows = [line for line in lines[start + 2:] if line.startswith("|")]
    rows = rows[:next((i for i, r in enumerate(rows) if not r.strip()), len(rows))]
    assert {r.split("|")[1].strip() for r in rows} == set(by_quantity)
    mod = _module()
    for row in rows:
        quantity, cell = (c.strip() for c in row.split("|")[1:3])
        fields = [f for _, f, _, _ in string.Formatter().parse(by_quantity[quantity]["template"]) if f]
        values = [mod.lookup(numbers, f) for f in fields]
        texts = _NUM.findall(re.sub(r"τ4|χ4|μ", "", cell))
        numeric = [v for v in values if v is not None and not isinstance(v, str)]
        assert len(texts) == len(numeric), (quantity, cell)
        for t, v in zip(texts, numeric, strict=True):
            assert _close(t, float(v)), (quantity, t, v)
        for v in values:
            if isinstance(v, str) or v is None:       # a word (the aging regime), or not measured
                assert ("n/a" if v is None else v) in cell, (quantity, v)


def test_mnist_root_gives_valid_configs(tmp_path):
    mod = _module()
    cfgs = mod.load_configs(mnist_root=str(tmp_path))
    for cfg in cfgs.values():
        resolved = load_config(cfg)                       # the schema and every stage, no files read
        assert resolved["data"]["name"] == "mnist" and resolved["data"]["preprocess"] == "binary_pca"
        assert resolved["data"]["n_components"] == 10 and resolved["data"]["root"] == str(tmp_path)
        assert [st["name"] for st in resolved["stages"]][:3] == ["sgd", "polish", "polish_slow"]
    # the same P as the digits runs
    assert cfgs["protocol"]["data"]["n_train"] == 1437 and cfgs["phase"]["data"]["n_train"] == 200
    # planned (the dataset built from IDX files, binary PCA) on a tiny random IDX set of the needed size
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (1437, 28, 28)), rng.integers(0, 10, 1437),
              rng.integers(0, 256, (2000, 28, 28)), rng.integers(0, 10, 2000)]
    for name, a in zip(["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte"], arrays, strict=True):
        head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(head + a.astype(np.uint8).tobytes()))
    res = subprocess.run([sys.executable, str(SCRIPT), "--mnist-root", str(tmp_path), "--dry-run",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "protocol: 28 runs" in res.stdout and "phase: 378 runs" in res.stdout and "data mnist" in res.stdout
