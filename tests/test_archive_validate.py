"""validate() and repair(): each kind of damage is found, named, and repaired without losing good rows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trajkit.archive import create, open_archive
from trajkit.archive.repair import repair
from trajkit.archive.validate import nonfinite_rows, validate
from trajkit.errors import ArchiveError, LockedError
from trajkit.testing import params_chunk

N = 24


def _rows(t: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((t, n)).astype(np.float32)


def _archive(path: Path, t: int = 6, **kw) -> np.ndarray:
    rows = _rows(t)
    with create(path, n_params=N, **kw) as w:
        for k in range(t):
            w.append(10 * k, rows[k], metrics={"loss": float(k)})
        w.add_trace(np.arange(10 * t), {"lr": np.full(10 * t, 0.5)})
    return rows


def test_valid_archive_has_no_problems(tmp_path):
    _archive(tmp_path / "a.trajkit")
    assert validate(tmp_path / "a.trajkit") == []


def test_torn_chunk_is_named_and_repair_keeps_rows_before_it(tmp_path, tree_digest):
    path = tmp_path / "a.trajkit"
    rows = _archive(path)
    chunk = params_chunk(path, 3, 0)
    with open(chunk, "r+b") as f:
        f.truncate(N * 4 // 2)  # a torn write: half the row reached the disk
    before = tree_digest(path)
    problems = validate(path)
    assert len(problems) == 1
    p = problems[0]
    assert (p.kind, p.array, p.row, p.step) == ("chunk", "snapshots/params", 3, 30)
    assert "snapshots/params row 3 (step 30)" in p.message and "truncated" in p.message
    assert "trajkit repair" in p.message and "\n" not in p.message and p.message.startswith(str(path))
    assert tree_digest(path) == before  # validate never writes
    with pytest.raises(ArchiveError, match=r"row 3 chunk c\.3\.0 is truncated"):
        open_archive(path).params[:, :]
    report = repair(path)
    assert (report.committed_before, report.committed_after, report.rows_dropped) == (6, 3, 3)
    assert report.dropped_steps == [30, 40, 50]
    assert report.trace_rows_dropped == 0
    assert str(params_chunk(path, 3, 0).relative_to(path)) in report.files_removed
    assert any("dropped 3 snapshot row(s)" in line for line in report.lines())
    assert validate(path) == []
    a = open_archive(path)
    assert a.params[:, :].tobytes() == rows[:3].tobytes()
    np.testing.assert_array_equal(a.steps, [0, 10, 20])
    np.testing.assert_array_equal(a.metrics["loss"], [0, 1, 2])
    np.testing.assert_array_equal(a.trace["lr"], np.full(60, 0.5))
    with create(path, n_params=N, resume="allow") as w:  # the repaired archive continues
        w.append(30, rows[3])
    assert open_archive(path).params[:, :].tobytes() == rows[:4].tobytes()


def test_missing_chunk_of_a_split_row(tmp_path):
    path = tmp_path / "a.trajkit"
    rows = _rows(4)
    with create(path, n_params=N, chunk_bytes=32) as w:  # 8 columns per chunk, 3 chunks per row
        for k in range(4):
            w.append(k, rows[k])
    (params_chunk(path, 2, 1)).unlink()
    [p] = validate(path)
    assert (p.row, p.step) == (2, 2) and "chunk c.2.1 is missing" in p.message
    report = repair(path)
    assert report.dropped_steps == [2, 3]
    assert open_archive(path).params[:, :].tobytes() == rows[:2].tobytes()


def test_torn_compressed_chunk_does_not_decode(tmp_path):
    path = tmp_path / "z.trajkit"
    rows = _archive(path, compressor="zstd")
    with open(params_chunk(path, 4, 0), "r+b") as f:
        f.truncate(9)
    [p] = validate(path)
    assert (p.kind, p.row, p.step) == ("chunk", 4, 40) and "does not decode" in p.message
    repair(path)
    assert validate(path) == []
    np.testing.assert_array_equal(open_archive(path).params[:, :], rows[:4])


def test_zip_archives_are_validated(tmp_path):
    path = tmp_path / "a.trajkit"
    _archive(path)
    (params_chunk(path, 1, 0)).write_bytes(b"\0" * 8)
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                z.write(f, str(f.relative_to(path)))
    [p] = validate(zpath)
    assert (p.kind, p.row) == ("chunk", 1)
    with pytest.raises(ArchiveError, match="local archive directory"):
        repair(zpath)


def test_crash_debris_is_removed_and_committed_rows_kept(tmp_path, tree_digest):
    path = tmp_path / "a.trajkit"
    rows = _rows(4)
    code = textwrap.dedent(f"""
        import os, signal, numpy as np, trajkit
        rows = np.random.default_rng(1).standard_normal((4, {N})).astype(np.float32)
        w = trajkit.archive.create({str(path)!r}, n_params={N}, capacity=8)
        for k in range(3):
            w.append(k, rows[k], metrics={{"loss": float(k)}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], timeout=120, check=False)
    # what a write in flight leaves: the next row's chunk, a temp file, a half-made metric array
    params_chunk(path, 3, 0).parent.mkdir(parents=True, exist_ok=True)
    (params_chunk(path, 3, 0)).write_bytes(rows[3].tobytes())
    (path / "snapshots/.zarr.json.tmp4242").write_text("{")
    (path / "snapshots/metrics/acc/c").mkdir(parents=True)
    assert validate(path) == []  # leftovers readers ignore are not problems
    report = repair(path)
    assert report.rows_dropped == 0 and report.committed_after == 3
    leftovers = {str(params_chunk(path, 3, 0).relative_to(path)), "snapshots/.zarr.json.tmp4242"}
    assert leftovers <= set(report.files_removed)
    assert not (path / "snapshots/metrics/acc").exists()
    assert validate(path) == []
    assert json.loads((path / "snapshots/params/zarr.json").read_text())["shape"] == [3, N]
    a = open_archive(path)
    assert a.params[:, :].tobytes() == rows[:3].tobytes()
    before = tree_digest(path)
    assert repair(path).lines()[-1].startswith("nothing to repair")
    assert tree_digest(path) == before


def test_repair_refuses_while_a_writer_is_active(tmp_path, tree_digest):
    path = tmp_path / "a.trajkit"
    _archive(path)
    w = create(path, n_params=N, resume="allow")
    before = tree_digest(path)
    with pytest.raises(LockedError, match="another writer"):
        repair(path)
    assert tree_digest(path) == before
    w.close()


def test_commit_marker_beyond_array_shape(tmp_path):
    path = tmp_path / "a.trajkit"
    rows = _archive(path, t=3)
    doc = json.loads((path / "snapshots/zarr.json").read_text())
    doc["attributes"]["committed"] = 5
    (path / "snapshots/zarr.json").write_text(json.dumps(doc))
    problems = validate(path)
    assert problems and all(p.kind == "structure" and p.row == 3 for p in problems)
    assert any("snapshots/params holds 3 rows but snapshots/zarr.json says 5" in p.message for p in problems)
    report = repair(path)
    assert (report.committed_before, report.committed_after, report.dropped_steps) == (5, 3, [])
    assert "dropped 2 snapshot row(s) 3..4 (no readable step)" in report.lines()
    assert validate(path) == []
    assert open_archive(path).params[:, :].tobytes() == rows.tobytes()


def test_non_increasing_steps_are_reported(tmp_path):
    path = tmp_path / "a.trajkit"
    _archive(path, t=4)
    chunk = path / "snapshots/step/c/0"
    steps = np.fromfile(chunk, "<i8")
    steps[2] = 5  # after step 10
    steps.tofile(chunk)
    [p] = validate(path)
    assert (p.kind, p.array, p.row, p.step) == ("structure", "snapshots/step", 2, 5)
    assert repair(path).dropped_steps == [5, 30]
    np.testing.assert_array_equal(open_archive(path).steps, [0, 10])


def test_schema_problems_list_each_pointer(tmp_path, tree_digest):
    path = tmp_path / "a.trajkit"
    _archive(path, t=2)
    doc = json.loads((path / "zarr.json").read_text())
    meta = doc["attributes"]["trajkit"]
    del meta["created"]
    meta["seed"] = "x"
    meta["layout"][0]["role"] = "kernel"
    (path / "zarr.json").write_text(json.dumps(doc))
    before = tree_digest(path)
    problems = validate(path)
    assert [p.kind for p in problems] == ["schema"] * 3
    text = "\n".join(p.message for p in problems)
    for pointer in ("metadata / is invalid: 'created'", "metadata /layout/0/role", "metadata /seed"):
        assert pointer in text
    with pytest.raises(ArchiveError, match="invalid metadata"):
        repair(path)
    assert tree_digest(path) == before


def test_open_version_and_not_archive_problems(tmp_path):
    [p] = validate(tmp_path / "nope.trajkit")
    assert p.kind == "open" and "no such archive" in p.message
    f = tmp_path / "file.trajkit"
    f.write_text("x")
    [p] = validate(f)
    assert p.kind == "open" and "is a file" in p.message
    path = tmp_path / "a.trajkit"
    _archive(path, t=1)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["trajkit"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(doc))
    [p] = validate(path)
    assert p.kind == "version" and "v99" in p.message and "upgrade" in p.message


def test_nonfinite_scan_reports_first_step_and_count(tmp_path):
    path = tmp_path / "a.trajkit"
    rows = _rows(6)
    rows[2, 5] = np.nan
    rows[4, 0] = np.inf
    rows[4, 7] = -np.inf
    with create(path, n_params=N) as w, pytest.warns(RuntimeWarning):
        for k in range(6):
            w.append(10 * k, rows[k])
    [p] = validate(path)
    assert (p.kind, p.row, p.step) == ("nonfinite", 2, 20)
    assert "3 NaN/inf values in 2 snapshot(s)" in p.message and "flagged in metadata" in p.message
    # an archive whose metadata does not flag it (e.g. written by another tool) is called out
    doc = json.loads((path / "zarr.json").read_text())
    del doc["attributes"]["trajkit"]["nonfinite"]
    (path / "zarr.json").write_text(json.dumps(doc))
    [p] = validate(path)
    assert "does not flag it" in p.message


def test_stale_nonfinite_flag_is_reported(tmp_path):
    path = tmp_path / "a.trajkit"
    _archive(path, t=3)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["trajkit"]["nonfinite"] = {"first_step": 10, "count": 1, "steps": [10]}
    (path / "zarr.json").write_text(json.dumps(doc))
    [p] = validate(path)
    assert p.kind == "nonfinite" and "flags step 10 but snapshots/params is finite" in p.message


def test_repair_of_diverged_run_keeps_nonfinite_rows_and_flag(tmp_path):
    path = tmp_path / "a.trajkit"
    rows = _rows(5)
    rows[1, 0] = np.nan
    with create(path, n_params=N) as w, pytest.warns(RuntimeWarning):
        for k in range(5):
            w.append(k, rows[k])
    with open(params_chunk(path, 3, 0), "r+b") as f:
        f.truncate(4)
    report = repair(path)
    assert report.dropped_steps == [3, 4]
    a = open_archive(path)
    assert a.params[:, :].tobytes() == rows[:3].tobytes()
    assert a.metadata["nonfinite"]["steps"] == [1]
    assert [p.kind for p in validate(path)] == ["nonfinite"]


@pytest.mark.parametrize("block_bytes", [4, 40, 4 * 10**6])
def test_nonfinite_scan_is_the_same_in_any_block_size(tmp_path, block_bytes):
    path = tmp_path / "a.trajkit"
    rows = _rows(7, 100)
    bad = [(1, 99), (1, 3), (5, 50)]
    for r, c in bad:
        rows[r, c] = np.nan
    with create(path, n_params=100, chunk_bytes=64) as w, pytest.warns(RuntimeWarning):
        for k in range(7):
            w.append(k, rows[k])
    flags, count = nonfinite_rows(open_archive(path).params, 7, block_bytes=block_bytes)
    np.testing.assert_array_equal(flags, [False, True, False, False, False, True, False])
    assert count == len(bad)
