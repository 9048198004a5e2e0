"""`trajkit info | validate | repair | import`: one end-to-end test per command, plus their bad inputs.

Most tests call the click group in-process (CliRunner); the console script itself is run once, so the
installed entry point is exercised too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from trajkit import schedules
from trajkit.archive import create, open_archive
from trajkit.cli import cli
from trajkit.testing import params_chunk

N = 30


def _archive(path: Path, t: int = 5) -> np.ndarray:
    rows = np.random.default_rng(2).standard_normal((t, N)).astype(np.float32)
    sched = schedules.log(1, 100, 4)
    meta = {"schedule": sched.spec, "dynamics": {"kind": "sgd", "lr": 0.1}, "model": {"class": "MLP"}}
    with create(path, n_params=N, metadata=meta) as w:
        for k in range(t):
            w.append(5 * k, rows[k], metrics={"train_loss": 1.0, "test_acc": 0.5})
        w.add_trace(np.arange(5 * t), {"loss": np.ones(5 * t)})
    return rows


class _Marker:
    """Unpickling this would create a file (proof that code in the pickle ran)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _failed_lines(result) -> str:
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output
    return lines


def test_info_text_and_json(tmp_path):
    path = tmp_path / "run.trajkit"
    _archive(path)
    r = _run("info", "--json", str(path))
    assert r.exit_code == 0
    s = json.loads(r.output)
    chunk_bytes = sum(f.stat().st_size for f in (path / "snapshots/params").rglob("c*") if f.is_file())
    all_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert s["n_params"] == N and s["n_snapshots"] == 5
    assert s["steps"] == {"first": 0, "last": 20}
    assert s["metrics"] == ["test_acc", "train_loss"] and s["trace"] == ["loss"] and s["trace_length"] == 25
    assert s["schedule"] == schedules.log(1, 100, 4).spec
    assert s["model"]["class"] == "MLP" and s["dynamics"]["lr"] == 0.1
    assert s["size_on_disk"] == all_bytes
    assert s["params_bytes_logical"] == 5 * N * 4
    assert s["compression_ratio"] == pytest.approx(5 * N * 4 / chunk_bytes)
    assert s["compression_ratio"] == pytest.approx(1.0)  # uncompressed, one unpadded chunk per row
    assert s["nonfinite"] is False and s["run_id"] == open_archive(path).run_id
    r = _run("info", str(path))
    assert r.exit_code == 0
    assert "snapshots (T)      5" in r.output and "0..20" in r.output and "log(start=1" in r.output
    assert "train_loss" in r.output and "compression ratio" in r.output


def test_validate_many_archives(tmp_path, tree_digest):
    good, bad = tmp_path / "good.trajkit", tmp_path / "bad.trajkit"
    _archive(good)
    _archive(bad)
    with open(params_chunk(bad, 2, 0), "r+b") as f:
        f.truncate(7)
    r = _run("validate", str(good))
    assert r.exit_code == 0 and r.output.strip() == f"ok {good} (5 snapshots x {N} parameters)"
    before = tree_digest(bad)
    r = _run("validate", str(good), str(bad))
    lines = _failed_lines(r)
    assert lines[0].startswith(f"ok {good}")
    assert lines[1].startswith(f"{bad}: snapshots/params row 2 (step 10) chunk c.2.0 is truncated")
    assert len(lines) == 2
    assert tree_digest(bad) == before


def test_repair_says_what_was_dropped(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _archive(path)
    (params_chunk(path, 3, 0)).unlink()
    r = _run("repair", str(path))
    assert r.exit_code == 0
    assert "dropped 2 snapshot row(s) 3..4 (steps 15, 20)" in r.output
    assert _run("validate", str(path)).exit_code == 0
    np.testing.assert_array_equal(open_archive(path).params[:, :], rows[:3])


def test_import_command(tmp_path):
    d = tmp_path / "ckpts"
    d.mkdir()
    sds = {}
    for step in (50, 100, 150):
        torch.manual_seed(step)
        m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        sds[step] = m.state_dict()
        torch.save(sds[step], d / f"iter{step:06d}.pt")
    out = tmp_path / "run.trajkit"
    r = _run("import", str(d), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "imported 3 checkpoints (steps 50..150" in r.output and "1.num_batches_tracked" in r.output
    a = open_archive(out)
    expected = np.stack([torch.cat([v.reshape(-1) for v in sds[s].values() if v.is_floating_point()]).numpy()
                         for s in (50, 100, 150)])
    np.testing.assert_array_equal(a.params[:, :], expected)
    r = _run("import", str(d), "--out", str(tmp_path / "p.trajkit"), "--pattern", r"iter0*(1\d\d)\.pt")
    assert r.exit_code == 0
    np.testing.assert_array_equal(open_archive(tmp_path / "p.trajkit").steps, [100, 150])


def test_cli_bad_inputs_one_line_nonzero_exit(tmp_path, tree_digest):
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    for args in (("info", str(tmp_path / "missing.trajkit")), ("info", str(plain)), ("repair", str(plain))):
        lines = _failed_lines(_run(*args))
        assert len(lines) == 1 and lines[0].startswith("trajkit: error: ")
    lines = _failed_lines(_run("validate", str(plain)))
    assert lines == [f"{plain}: is a file, not a trajkit archive (expected a NAME.trajkit directory or a "
                     "zip of one)"]
    assert plain.read_text() == "x"
    path = tmp_path / "new.trajkit"
    _archive(path)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["trajkit"]["format_version"] = 2
    (path / "zarr.json").write_text(json.dumps(doc))
    before = tree_digest(path)
    for cmd in ("info", "validate", "repair"):
        lines = _failed_lines(_run(cmd, str(path)))
        assert len(lines) == 1 and "newer than this trajkit reads" in lines[0]
    assert tree_digest(path) == before
    doc["attributes"]["trajkit"]["format_version"] = 1
    del doc["attributes"]["trajkit"]["run_id"]
    doc["attributes"]["trajkit"]["model"]["n_params"] = "thirty"
    (path / "zarr.json").write_text(json.dumps(doc))
    before = tree_digest(path)
    lines = _failed_lines(_run("info", str(path)))
    assert len(lines) == 1 and "invalid metadata at /: 'run_id'" in lines[0] and "/model/n_params" in lines[0]
    lines = _failed_lines(_run("validate", str(path)))
    assert [ln.split(" is invalid")[0] for ln in lines] == [f"{path}: metadata /",
                                                            f"{path}: metadata /model/n_params"]
    assert len(_failed_lines(_run("repair", str(path)))) == 1
    assert tree_digest(path) == before
    d = tmp_path / "evil"
    d.mkdir()
    torch.save({"w": torch.zeros(2), "x": _Marker(str(tmp_path / "MARKER"))}, d / "s1.pt")
    lines = _failed_lines(_run("import", str(d), "--out", str(tmp_path / "o.trajkit")))
    assert len(lines) == 1 and "refused it" in lines[0]
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "o.trajkit").exists()
    d = tmp_path / "mixed"
    d.mkdir()
    torch.save({"w": torch.zeros(2)}, d / "s1.pt")
    torch.save({"w": torch.zeros(3)}, d / "s2.pt")
    lines = _failed_lines(_run("import", str(d), "--out", str(tmp_path / "o.trajkit")))
    assert len(lines) == 1 and "s2.pt: tensor 'w' has shape [3]" in lines[0]
    assert not (tmp_path / "o.trajkit").exists()


def test_console_script_entry_point(tmp_path):
    path = tmp_path / "run.trajkit"
    _archive(path)
    with open(params_chunk(path, 4, 0), "r+b") as f:
        f.truncate(1)
    exe = Path(sys.executable).with_name("trajkit")
    if not exe.exists():
        pytest.skip("the trajkit console script is not installed next to this Python (pip install -e .)")
    r = subprocess.run([str(exe), "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "row 4 (step 20)" in r.stdout and r.stderr == ""
    r = subprocess.run([str(exe), "repair", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "steps 20" in r.stdout
    r = subprocess.run([str(exe), "validate", str(tmp_path / "nope")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
