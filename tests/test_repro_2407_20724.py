"""The 2407.20724 gallery reproduction (examples/repro_2407_20724.py): a --quick run, the doc's numbers
against the committed summary, and the --mnist-root config."""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repro_doc import Section

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "repro_2407_20724.py"
DOC = Section("2407.20724")   # its section of docs/reproductions.md
NUMBERS = ROOT / "docs" / "figures" / "repro_2407_20724.json"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def _finite(x) -> bool:
    return all(math.isfinite(v) for v in np.ravel(np.asarray(x, dtype=float)))


def test_quick_run(tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    res = _run("--quick", "--out", str(out), "--figures", str(figs))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "quantity" in res.stdout and "| paper" in res.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["batch_sizes"] == ["B16", "B512"]
    for tag in s["batch_sizes"]:
        n = s[tag]
        assert n["n_runs"] == 4
        for k, v in n.items():
            assert _finite(list(v.values()) if isinstance(v, dict) else v), (tag, k, v)
        g = n["gaussian"]  # i.i.d. points: an index of a metric in [0, 1]
        # an ultrametricity index of a metric lies in [0, 1]; the shuffled control is positive
        assert 0.0 <= n["ultrametricity"] <= 1.0
        assert n["ultrametricity_control"] > 0.0 and n["ultrametricity_control_std"] >= 0.0
        assert -1.0 <= n["cophenetic"] <= 1.0
        assert 0.0 <= g["ultrametricity"] <= 1.0 and g["ultrametricity_control"] > 0.0
        assert 0.0 <= n["reference"]["ultrametricity"] <= 1.0
        # weight matching lowers the straight-line barriers and the distances (permutation symmetry)
        assert n["mean_barrier_train_aligned"] < n["mean_barrier_train"]
        assert n["mean_barrier_test_aligned"] < n["mean_barrier_test"]
        assert n["mean_distance_aligned"] < n["mean_distance"]
        assert 0.0 < n["mean_q_aligned"] < 1.0
        # at a minimum the loss rises along random directions; walk increments grow with the step size
        assert n["mean_sharpness"] > 0.0 and n["mean_rugosity"] >= 1.0
        assert n["mean_increment_exponent"] > 0.0 and n["mean_correlation_length"] > 0.0
        assert n["test_accuracy"] > 0.5 and n["train_loss"] < math.log(10)
        for k in ("spearman_sharpness_gap", "spearman_rugosity_gap"):
            lo, hi = n[f"{k}_ci"]
            assert -1.0 <= n[k] <= 1.0 and -1.0 <= lo <= hi <= 1.0
    p = s["pooled"]
    assert p["n_runs"] == 8
    for k in ("spearman_sharpness_gap", "spearman_rugosity_gap", "spearman_sharpness_gap_acc"):
        lo, hi = p[f"{k}_ci"]
        assert -1.0 <= p[k] <= 1.0 and -1.0 <= lo <= hi <= 1.0
    for k in ("sharpness", "rugosity", "gap", "gap_accuracy"):
        lo, hi = p[f"diff_{k}_ci"]
        assert lo <= p[f"diff_{k}"] <= hi
    assert s["table"] and all(set(r) == {"quantity", "this run", "paper"} for r in s["table"])
    names = {f.name for f in figs.iterdir()}
    assert "repro_2407_20724.json" in names and "repro_2407_20724_overview.png" in names
    expected = ["overview", "minima_B16", "interpolation_B16", "rugosity_B16", "rugosity_B512"]
    for name in expected:
        assert (figs / f"repro_2407_20724_{name}.png").stat().st_size < 120_000, name
    assert len(names) == len(expected) + 1


def _ratio(d: dict) -> float:
    return d["ultrametricity"] / d["ultrametricity_control"]


def _keys(*keys: str):
    return lambda b: [v for k in keys for v in np.ravel(b[k])]


#: the summary values behind each doc table row (quantity after "B16: " / "B512: " / "both batch sizes: ").
ROW_VALUES = {
    "final train loss / test accuracy": _keys("train_loss", "test_accuracy"),
    "generalisation gap test − train loss (mean ± sd over runs)": _keys("gap", "gap_std"),
    "random-walk increment exponent γ (Var ΔL ∝ δ^γ)": _keys("mean_increment_exponent"),
    "random-walk correlation length (smallest δ)": _keys("mean_correlation_length"),
    "train-loss barrier, raw → aligned": _keys("mean_barrier_train", "mean_barrier_train_aligned"),
    "test-loss barrier, raw → aligned": _keys("mean_barrier_test", "mean_barrier_test_aligned"),
    "mean distance raw → aligned": _keys("mean_distance", "mean_distance_aligned"),
    "cophenetic correlation (average linkage)": _keys("cophenetic"),
    "ultrametricity index (shuffled control ± sd)": _keys("ultrametricity", "ultrametricity_control",
                                                          "ultrametricity_control_std"),
    "K / control, pairwise alignment; all aligned to run 0; i.i.d. Gaussian points":
        lambda b: [_ratio(b), _ratio(b["reference"]), _ratio(b["gaussian"])],
    "cophenetic correlation of i.i.d. Gaussian points (same R, N)": lambda b: [b["gaussian"]["cophenetic"]],
    "mean sharpness / rugosity": _keys("mean_sharpness", "mean_rugosity"),
    "Spearman ρ(sharpness, gap) [95 % bootstrap]": _keys("spearman_sharpness_gap", "spearman_sharpness_gap_ci"),
    "Spearman ρ(sharpness, gap)": _keys("spearman_sharpness_gap", "spearman_sharpness_gap_ci"),
    "Spearman ρ(rugosity, gap)": _keys("spearman_rugosity_gap", "spearman_rugosity_gap_ci"),
    "small − large batch, mean sharpness [95 % bootstrap]": _keys("diff_sharpness", "diff_sharpness_ci"),
    "small − large batch, mean gap": _keys("diff_gap", "diff_gap_ci"),
    "Spearman ρ(sharpness, train − test accuracy)": _keys("spearman_sharpness_gap_acc",
                                                         "spearman_sharpness_gap_acc_ci"),
}


def _doc_rows() -> list[tuple[str, str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and ":" in cells[0] and not set(cells[0]) <= set("-: "):
            rows.append((cells[0], cells[1]))
    return rows


@pytest.mark.skipif(not NUMBERS.exists(), reason="docs/figures/repro_2407_20724.json not committed yet")
def test_doc_table_matches_committed_numbers():
    s = json.loads(NUMBERS.read_text())
    rows = _doc_rows()
    assert len(rows) >= 20, "the doc section's results table is missing"
    for quantity, cell in rows:
        where, _, what = quantity.partition(": ")
        block = s["pooled"] if where == "both batch sizes" else s[where]
        values = ROW_VALUES[what](block)
        printed = re.findall(r"-?\d+\.\d+", cell)
        assert len(printed) == len(values), (quantity, cell, values)
        for text, v in zip(printed, values, strict=True):
            nd = len(text.split(".")[1])
            assert float(text) == pytest.approx(round(v, nd), abs=0.51 * 10 ** -nd), (quantity, text, v)


def _idx(a: np.ndarray) -> bytes:
    """IDX per the format's definition: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 dimensions."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def test_mnist_root_builds_a_valid_config(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import repro_2407_20724 as repro
    finally:
        sys.path.pop(0)
    from trajkit.experiments import load_config

    args = repro.argparse.Namespace(quick=False, mnist_root=str(tmp_path))
    cfg = load_config(repro.CONFIG, repro.overrides(args))
    assert cfg["data"]["name"] == "mnist" and Path(cfg["data"]["root"]) == tmp_path.resolve()
    assert cfg["data"]["preprocess"] == "standardize" and cfg["data"]["n_train"] == 10000
    assert cfg["model"]["hidden"] == [32] and cfg["sweep"]["dynamics.batch_size"] == [16, 512]
    # a tiny IDX set: the dry run plans every run of the quick MNIST config on it
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (1000, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, 1000),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (500, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, 500)}
    for name, a in files.items():
        (tmp_path / name).write_bytes(_idx(a))
    res = _run("--quick", "--dry-run", "--mnist-root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    plan = json.loads(res.stdout)
    assert plan["dry_run"] and plan["n_runs"] == 8
    missing = _run("--quick", "--dry-run", "--mnist-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "data.root" in missing.stderr
