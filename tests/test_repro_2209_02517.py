"""The 2209.02517 gallery script (examples/repro_2209_02517.py): its ``--quick`` run writes every quantity,
its doc section quotes the committed numbers, and ``--mnist-root`` builds a valid MNIST config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from trajkit.experiments import load_config

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repro_doc import Section, decimals, rounded, table_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "repro_2209_02517.py"
DOC = Section("2209.02517")   # its section of docs/reproductions.md
NUMBERS = ROOT / "docs" / "figures" / "repro_2209_02517.json"
REGIMES = {"sub", "simple", "super", "stationary", "unresolved (poor collapse)"}


def _run(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _mlp_count(w, depth, d_in, k):
    """Parameters of an MLP with ``depth`` hidden ReLU layers of width w and biases, by hand."""
    return d_in * w + (depth - 1) * w * w + k * w + depth * w + k


def test_quick_run_writes_every_quantity(tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    p = _run("--quick", "--out", str(out), "--figures", str(figs))
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert json.loads((figs / "repro_2209_02517.json").read_text()) == s
    for name in ("collapse", "mu_depth"):
        assert (figs / f"repro_2209_02517_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    pts = s["points"]
    assert {(r["n_params_target"], r["depth"]) for r in pts} == {(150, 1), (150, 2), (10000, 1), (10000, 2)}
    widths = np.arange(1, 2000)
    for r in pts:
        # the width is the one whose parameter count (counted here by hand: 20 inputs, 2 classes) is closest
        counts = _mlp_count(widths, r["depth"], 20, 2)
        assert r["width"] == widths[np.argmin(np.abs(counts - r["n_params_target"]))]
        assert r["n_params"] == _mlp_count(r["width"], r["depth"], 20, 2)
        assert r["n_train"] == 1000
        assert r["regime_class"] == ("under" if r["n_params"] < r["n_train"] else "over")
        assert r["regime"] in REGIMES
        assert math.isfinite(r["mu_collapse_raw"]) and math.isfinite(r["collapse_quality"])
        if r["mu_collapse"] is not None:
            lo, hi = r["mu_collapse_ci"]
            assert lo <= hi
        # SGD learns: the training cross-entropy falls below a uniform guess over the 2 classes, ln 2
        assert 0 < r["final_loss"] < math.log(2)
        assert math.isfinite(r["beta"])
        # the weights keep moving away from where they were at the first waiting time
        first, last = r["msd_first_tw"]
        assert 0 < first < last
    tws = s["waiting_times"]
    assert tws == sorted(tws) and len(tws) == 5 and tws[-1] < s["steps"] / 2   # ≈ steps/5, snapped


def test_doc_table_matches_the_committed_numbers():
    s = json.loads(NUMBERS.read_text())
    expected = {}
    for r in s["points"]:
        mu = r["mu_collapse"] if r["mu_collapse"] is not None else r["mu_collapse_raw"]
        expected[f"μ_collapse, N = {r['n_params']}, depth {r['depth']}"] = rounded(mu, r["mu_collapse_ci"])
        expected[f"μ_τ, N = {r['n_params']}, depth {r['depth']}"] = rounded(r["mu_tau"], r["mu_tau_ci"]) \
            if r["mu_tau"] is not None else []
    for c, sp in s["depth_spread"].items():
        for est, name in (("mu_collapse", "μ_collapse"), ("mu_tau", "μ_τ")):
            if sp[est] is not None:
                expected[f"spread of {name} over depth, {c}"] = [round(sp[est], 2)]
    seen = set()
    for quantity, this_run, _paper in table_rows(DOC.read_text()):
        key = quantity.replace("`", "")
        assert key in expected, f"doc row {quantity!r} names no quantity of the numbers file"
        assert decimals(this_run) == expected[key], (quantity, this_run, expected[key])
        seen.add(key)
    assert seen == set(expected), set(expected) - seen


def test_mnist_root_builds_a_valid_config(tmp_path):
    p = _run("--mnist-root", str(tmp_path), "--dry-run")
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = json.loads(p.stdout)
    assert cfg["data"]["name"] == "mnist" and Path(cfg["data"]["root"]) == tmp_path.resolve()
    assert cfg["sweep"]["model.n_params"][0] < cfg["data"]["n_train"] < cfg["sweep"]["model.n_params"][1]
    # the loader accepts it as it stands (every key known, every value in range)
    again = load_config(cfg)
    assert again["data"] == cfg["data"] and again["sweep"] == cfg["sweep"]
