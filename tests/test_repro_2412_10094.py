"""The 2412.10094 gallery script (examples/repro_2412_10094.py): its ``--quick`` run writes every quantity,
its doc section quotes the committed numbers, and ``--mnist-root`` is refused in one line (chorales study)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repro_doc import Section, decimals, rounded, table_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "repro_2412_10094.py"
DOC = Section("2412.10094")   # its section of docs/reproductions.md
NUMBERS = ROOT / "docs" / "figures" / "repro_2412_10094.json"
REGIMES = {"sub", "simple", "super", "stationary", "unresolved (poor collapse)"}
needs_music21 = pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                                   reason="music21 (the trajkit[music] extra) is not installed")


def _run(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@needs_music21
@pytest.mark.usefixtures("chorale_cache")
def test_quick_run_writes_every_quantity(tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    p = _run("--quick", "--out", str(out), "--figures", str(figs))
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert json.loads((figs / "repro_2412_10094.json").read_text()) == s
    for name in ("loss_tails", "critical_width", "aging"):
        assert (figs / f"repro_2412_10094_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert s["widths"] == [4, 16, 64] and s["depth"] == 1 and len(s["thresholds"]) == 3
    # a uniform guess over the V tokens costs ln V per step and voice; every width learns below it, and the
    # loss at the first recorded step is that of a net at initialisation, near ln V
    for r in s["per_width"]:
        assert math.isfinite(r["beta"]) and r["beta"] > 0, r
        assert 0 < r["final_loss"] < r["first_loss"], r
        assert r["loss_inf"] is None or r["loss_inf"] >= 0
    assert s["per_width"][-1]["final_loss"] < s["per_width"][0]["final_loss"]   # the wide net learns more
    assert len(s["w_c"]) == len(s["w_c_ci"]) == 3
    assert any(v is not None and math.isfinite(v) for v in s["w_c"])
    ag = s["aging"]
    assert ag["widths"] == [4, 32] and ag["waiting_times"] == [15, 41, 111, 300]   # steps/40 … steps/2 of 600
    for obs in ("overlap_normalized", "msd"):
        for w in ("4", "32"):
            m = ag["mu"][obs][w]
            assert math.isfinite(m["mu"]) and m["regime"] in REGIMES, (obs, w, m)
            lo, hi = m["mu_ci"]
            if lo is not None:
                assert lo <= hi


def test_doc_table_matches_the_committed_numbers():
    s = json.loads(NUMBERS.read_text())
    rows = table_rows(DOC.read_text())
    assert rows
    expected = {}
    for r in s["per_width"]:
        expected[f"β, w = {r['width']}"] = rounded(r["beta"], r["beta_ci"], 2)
    for t, v, c in zip(s["thresholds"], s["w_c"], s["w_c_ci"], strict=True):
        if v is not None:
            expected[f"w_c(ℓ = {t})"] = rounded(v, c, 1)
    expected["w_c(ℓ → 0)"] = rounded(s["w_c0"], s["w_c0_ci"], 1)
    for obs, by_w in s["aging"]["mu"].items():
        for w, m in by_w.items():
            expected[f"μ ({obs}), w = {w}"] = rounded(m["mu"], m["mu_ci"], 2)
    seen = set()
    for quantity, this_run, _paper in rows:
        key = quantity.replace("`", "")
        assert key in expected, f"doc row {quantity!r} names no quantity of the numbers file"
        assert decimals(this_run) == expected[key], (quantity, this_run, expected[key])
        seen.add(key)
    assert seen == set(expected), set(expected) - seen


def test_mnist_root_is_refused_in_one_line(tmp_path):
    p = _run("--mnist-root", str(tmp_path), "--dry-run")
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert "--mnist-root does not apply to 2412.10094" in last and "Bach chorales" in last
    assert "Traceback" not in p.stderr


@needs_music21
def test_dry_run_builds_both_configs():
    p = _run("--dry-run")
    assert p.returncode == 0, p.stderr[-2000:]
    cfgs = json.loads(p.stdout)
    assert cfgs["grid"]["data"]["name"] == cfgs["aging"]["data"]["name"] == "bach_chorales"
    assert cfgs["aging"]["dynamics"]["batch_size"] == cfgs["grid"]["data"]["n_train"]   # full batch
