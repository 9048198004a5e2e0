"""Archive format v1: round trips, zarr interoperability, zip, resume, truncate, lock, schedules, layout.

Every expected value is computed independently of the reader (the arrays we wrote, numpy, zarr itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import trajkit
from trajkit import schedules
from trajkit.archive import create, layout_from_named_parameters, open_archive, validate
from trajkit.errors import ArchiveError, LockedError, MetadataError, TrajkitError
from trajkit.testing import params_chunk


def _rows(t: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((t, n)).astype(np.float32)


def _write(path: Path, rows: np.ndarray, steps: list[int], **kw) -> None:
    with create(path, n_params=rows.shape[1], **kw) as w:
        for s, r in zip(steps, rows, strict=True):
            w.append(s, r)


# -- round trip ---------------------------------------------------------------------------------------


def test_round_trip_params_metrics_trace(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(5, 37)
    rows[1, 3] = np.float32(1e-42)  # a subnormal survives bit for bit
    steps = [0, 1, 3, 10, 100]
    with create(path, n_params=37, metadata={"seed": 7, "dynamics.lr": 0.05}) as w:
        for i, (s, r) in enumerate(zip(steps, rows, strict=True)):
            metrics = {"train_loss": 1.0 / (i + 1)}
            if i >= 3:
                metrics["test_acc"] = 0.5 + i / 10  # appears late
            w.append(s, r, time=0.25 * i, epoch=i / 2, metrics=metrics)
        w.add_trace(np.arange(0, 101), {"loss": np.linspace(1, 0, 101)})
    a = open_archive(path)
    assert a.n_params == 37 and a.n_snapshots == 5
    assert a.params[:, :].tobytes() == rows.tobytes()
    np.testing.assert_array_equal(a.steps, steps)
    assert a.steps.dtype == np.int64
    np.testing.assert_array_equal(a.times, 0.25 * np.arange(5))
    np.testing.assert_array_equal(a.epochs, np.arange(5) / 2)
    np.testing.assert_array_equal(a.metrics["train_loss"], 1.0 / np.arange(1, 6))
    assert np.isnan(a.metrics["test_acc"][:3]).all()
    np.testing.assert_array_equal(a.metrics["test_acc"][3:], [0.8, 0.9])
    np.testing.assert_array_equal(a.trace["step"], np.arange(101))
    np.testing.assert_array_equal(a.trace["loss"], np.linspace(1, 0, 101))
    assert a.metadata["seed"] == 7 and a.metadata["dynamics"]["lr"] == 0.05
    assert a.layout == [{"name": "params", "shape": [37], "offset": 0, "size": 37, "role": "weight",
                         "layer": 0}]
    # lazy slicing reads the same values as numpy slicing of what we wrote
    cols = np.array([0, 5, 36])
    np.testing.assert_array_equal(a.params[[1, 4], cols], rows[[1, 4]][:, cols])
    np.testing.assert_array_equal(a.params[2, 10:20], rows[2, 10:20])


def test_zarr_reads_the_same_arrays(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(4, 50)
    with create(path, n_params=50) as w:
        for k in range(4):
            w.append(10 * k, rows[k], metrics={"loss": float(k)})
        w.add_trace(np.arange(31), {"lr": np.full(31, 0.1)})
    g = zarr.open_group(str(path), mode="r", zarr_format=3)
    assert g["snapshots/params"].dtype == np.float32
    np.testing.assert_array_equal(g["snapshots/params"][:], rows)
    np.testing.assert_array_equal(g["snapshots/step"][:], [0, 10, 20, 30])
    np.testing.assert_array_equal(g["snapshots/metrics/loss"][:], [0, 1, 2, 3])
    np.testing.assert_array_equal(g["trace/step"][:], np.arange(31))
    np.testing.assert_array_equal(g["trace/lr"][:], np.full(31, 0.1))
    assert g["snapshots"].attrs["committed"] == 4
    assert g.attrs["trajkit"]["format_version"] == trajkit.archive.FORMAT_VERSION


def test_large_row_is_split_into_chunks(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(3, 1000)
    with create(path, n_params=1000, chunk_bytes=1024) as w:  # 256 columns per chunk -> 4 chunks per row
        for k in range(3):
            w.append(k, rows[k])
    assert sorted(p.name for p in (path / "snapshots/params").iterdir() if p.name.startswith("c.0.")) == [
        "c.0.0", "c.0.1", "c.0.2", "c.0.3"]   # chunk keys c.<row>.<j>: no directory per row
    a = open_archive(path)
    assert a.params.chunk_cols == 250
    np.testing.assert_array_equal(a.params[:, :], rows)
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["snapshots/params"][:], rows)


@pytest.mark.parametrize("top_folder", [False, True])
def test_zip_of_directory_opens_read_only(tmp_path, top_folder):
    path = tmp_path / "run.trajkit"
    rows = _rows(3, 20)
    _write(path, rows, [0, 5, 9])
    zpath = tmp_path / "run.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                rel = f.relative_to(path if not top_folder else tmp_path)
                z.write(f, str(rel))
    a = open_archive(zpath)
    assert validate(zpath) == []
    np.testing.assert_array_equal(a.params[:, :], rows)
    np.testing.assert_array_equal(a.steps, [0, 5, 9])
    with pytest.raises(ArchiveError, match="is a file"):
        create(zpath, n_params=20, resume="allow")


# -- resume and truncate -------------------------------------------------------------------------------


def test_resume_modes(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(4, 8)
    with pytest.raises(ArchiveError, match="resume='must'"):
        create(path, n_params=8, resume="must")
    assert not path.exists()
    _write(path, rows[:2], [0, 1])
    with pytest.raises(ArchiveError, match="already exists"):
        create(path, n_params=8)
    with create(path, n_params=8, resume="allow") as w:
        assert w.committed == 2 and w.last_step == 1
        w.append(2, rows[2])
    with create(path, n_params=8, resume="must") as w:
        w.append(3, rows[3])
    a = open_archive(path)
    np.testing.assert_array_equal(a.params[:, :], rows)
    np.testing.assert_array_equal(a.steps, [0, 1, 2, 3])
    assert (a.times[1:] >= a.times[:-1]).all()  # the clock continues across resumes
    with pytest.raises(ArchiveError, match="n_params"):
        create(path, n_params=9, resume="allow")
    with pytest.raises(ArchiveError, match="resume="):
        create(path, n_params=8, resume="sometimes")


def test_truncate_drops_rows_at_or_after_step(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(5, 6)
    with create(path, n_params=6) as w:
        for k, s in enumerate([0, 10, 20, 30, 40]):
            w.append(s, rows[k])
        w.add_trace(np.arange(45), {"loss": np.arange(45.0)})
    with create(path, n_params=6, resume="must") as w:
        assert w.truncate(20) == 3
        assert w.last_step == 10
        w.append(20, rows[4])
    a = open_archive(path)
    np.testing.assert_array_equal(a.steps, [0, 10, 20])
    np.testing.assert_array_equal(a.params[:, :], rows[[0, 1, 4]])
    np.testing.assert_array_equal(a.trace["step"], np.arange(20))
    assert not params_chunk(path, 3, 0).exists()
    assert zarr.open_group(str(path), mode="r")["snapshots/params"].shape == (3, 6)


# -- the writer lock -----------------------------------------------------------------------------------


_HOLD = textwrap.dedent("""
    import sys, time, trajkit
    w = trajkit.archive.create(sys.argv[1], n_params=4, resume="allow")
    print("locked", flush=True)
    time.sleep(60)
""")

_TRY = textwrap.dedent("""
    import sys, trajkit
    from trajkit.errors import LockedError
    try:
        trajkit.archive.create(sys.argv[1], n_params=4, resume="allow").close()
    except LockedError as e:
        print("LockedError", e)
        sys.exit(7)
""")


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_second_writer_same_process_gets_locked_error(tmp_path, tree_digest):
    path = tmp_path / "run.trajkit"
    w = create(path, n_params=4)
    w.append(0, np.zeros(4, np.float32))
    before = tree_digest(path)
    with pytest.raises(LockedError, match="another writer") as info:
        create(path, n_params=4, resume="allow")
    assert "\n" not in str(info.value)
    assert tree_digest(path) == before
    w.close()
    with create(path, n_params=4, resume="allow") as w2:
        assert w2.committed == 1


def test_second_writer_in_subprocess_and_lock_freed_by_sigkill(tmp_path):
    path = tmp_path / "run.trajkit"
    create(path, n_params=4).close()
    w = create(path, n_params=4, resume="allow")
    child = _python(_TRY, str(path))
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 7 and f"pid {os.getpid()}" in out
    w.close()
    child = _python(_TRY, str(path))
    child.communicate(timeout=60)
    assert child.returncode == 0
    holder = _python(_HOLD, str(path))
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LockedError, match=f"pid {holder.pid}"):
        create(path, n_params=4, resume="allow")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdout.close()
    holder.stderr.close()
    with create(path, n_params=4, resume="allow") as w3:  # the kernel released the dead writer's lock
        assert w3.committed == 0


# -- schedules -----------------------------------------------------------------------------------------


def test_schedules_steps_and_membership():
    lin = schedules.linear(10, start=5, stop=45)
    np.testing.assert_array_equal(lin.steps(1000), [5, 15, 25, 35, 45])
    assert 25 in lin and 26 not in lin and 55 not in lin
    log = schedules.log(1, 1000, 4)
    np.testing.assert_array_equal(log.steps(10**6), [0, 1, 10, 100, 1000])
    ex = schedules.explicit([7, 3, 3, 0])
    np.testing.assert_array_equal(ex.steps(5), [0, 3])
    union = log | ex | schedules.linear(500)
    expected = np.unique(np.concatenate([[0, 1, 10, 100, 1000], [0, 3, 7], np.arange(0, 2001, 500)]))
    np.testing.assert_array_equal(union.steps(2000), expected)
    assert all((k in union) == (k in set(expected.tolist())) for k in range(2001))


@pytest.mark.parametrize("schedule", [
    schedules.log(1, 5000, 50),
    schedules.linear(7, start=3, stop=300),
    schedules.linear(25),
    schedules.explicit([1, 2, 3, 50]),
    schedules.log(1, 100, 5) | schedules.linear(40) | schedules.explicit([33]),
])
def test_schedule_spec_round_trip(schedule):
    spec = json.loads(json.dumps(schedule.spec))
    rebuilt = schedules.from_spec(spec)
    assert rebuilt.spec == schedule.spec
    np.testing.assert_array_equal(rebuilt.steps(6000), schedule.steps(6000))


def test_schedule_bad_inputs():
    with pytest.raises(TrajkitError, match="every"):
        schedules.linear(0)
    with pytest.raises(TrajkitError, match="start"):
        schedules.log(0, 10, 3)
    with pytest.raises(TrajkitError, match="unknown kind"):
        schedules.from_spec({"kind": "fibonacci"})


# -- layout --------------------------------------------------------------------------------------------


def _mlp_archive(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 5),
                                torch.nn.Tanh(), torch.nn.Linear(5, 2))
    layout = layout_from_named_parameters(list(model.named_parameters()))
    n = sum(p.numel() for p in model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    with create(tmp_path / "mlp.trajkit", n_params=n, layout=layout) as w:
        w.append(0, flat)
    return open_archive(tmp_path / "mlp.trajkit"), model


def test_layout_and_select_specs(tmp_path):
    a, model = _mlp_archive(tmp_path)
    # offsets by hand: 0.weight [4,3] 0..12, 0.bias 12..16, 2.weight [5,4] 16..36, 2.bias 36..41,
    # 4.weight [2,5] 41..51, 4.bias 51..53
    assert [(e["name"], e["offset"], e["size"], e["role"], e["layer"]) for e in a.layout] == [
        ("0.weight", 0, 12, "weight", 0), ("0.bias", 12, 4, "bias", 0), ("2.weight", 16, 20, "weight", 1),
        ("2.bias", 36, 5, "bias", 1), ("4.weight", 41, 10, "weight", 2), ("4.bias", 51, 2, "bias", 2)]
    r = np.arange
    np.testing.assert_array_equal(a.select("all"), r(53))
    np.testing.assert_array_equal(a.select("weights"), np.r_[r(0, 12), r(16, 36), r(41, 51)])
    np.testing.assert_array_equal(a.select("biases"), np.r_[r(12, 16), r(36, 41), r(51, 53)])
    np.testing.assert_array_equal(a.select("hidden"), r(0, 41))
    np.testing.assert_array_equal(a.select("layer:1"), r(16, 41))
    np.testing.assert_array_equal(a.select("4.*"), r(41, 53))
    np.testing.assert_array_equal(a.select("layer:0+4.bias"), np.r_[r(0, 16), r(51, 53)])
    sd = a.state_dict(0)
    for name, p in model.named_parameters():
        assert torch.equal(sd[name], p.detach())
    with pytest.raises(ArchiveError, match="matches no parameters"):
        a.select("conv*")
    with pytest.raises(ArchiveError, match="layer:<integer>"):
        a.select("layer:x")


# -- bad inputs ----------------------------------------------------------------------------------------


def test_open_refuses_non_archives(tmp_path):
    with pytest.raises(ArchiveError, match="no such archive"):
        open_archive(tmp_path / "missing.trajkit")
    (tmp_path / "empty.trajkit").mkdir()
    with pytest.raises(ArchiveError, match=r"no zarr\.json"):
        open_archive(tmp_path / "empty.trajkit")
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(ArchiveError, match="is a file") as info:
        open_archive(plain)
    assert "\n" not in str(info.value)
    assert plain.read_text() == "hello"
    with pytest.raises(ArchiveError, match="is a file"):
        create(plain, n_params=3, resume="allow")
    assert plain.read_text() == "hello"


def _edit_root(path: Path, edit) -> None:
    doc = json.loads((path / "zarr.json").read_text())
    edit(doc["attributes"]["trajkit"])
    (path / "zarr.json").write_text(json.dumps(doc))


def test_newer_format_version_is_refused(tmp_path, tree_digest):
    path = tmp_path / "run.trajkit"
    _write(path, _rows(2, 3), [0, 1])
    _edit_root(path, lambda m: m.update(format_version=trajkit.archive.FORMAT_VERSION + 1))
    before = tree_digest(path)
    with pytest.raises(ArchiveError, match=r"format v2, newer .* upgrade"):
        open_archive(path)
    with pytest.raises(ArchiveError, match="newer"):
        create(path, n_params=3, resume="allow")
    assert tree_digest(path) == before


def test_invalid_metadata_lists_json_pointers(tmp_path, tree_digest):
    path = tmp_path / "bad.trajkit"
    with pytest.raises(MetadataError) as info:
        create(path, n_params=3, metadata={"seed": "seven", "dynamics": {"lr": -1.0}})
    assert info.value.pointers == ["/dynamics/lr", "/seed"]
    assert "\n" not in str(info.value)
    assert not path.exists()  # a refused create leaves nothing behind
    path = tmp_path / "run.trajkit"
    _write(path, _rows(1, 3), [0])
    _edit_root(path, lambda m: (m.pop("run_id"), m.update(seed="x")))
    before = tree_digest(path)
    with pytest.raises(MetadataError) as info:
        open_archive(path)
    assert info.value.pointers == ["", "/seed"]  # "" is the root object (missing required run_id)
    assert "run_id" in str(info.value)
    assert tree_digest(path) == before


def test_append_bad_inputs_leave_archive_unchanged(tmp_path, tree_digest):
    path = tmp_path / "run.trajkit"
    with create(path, n_params=4) as w:
        w.append(5, np.ones(4, np.float32))
        before = tree_digest(path)
        with pytest.raises(ArchiveError, match=r"length 4, got shape \(3,\)"):
            w.append(6, np.ones(3, np.float32))
        with pytest.raises(ArchiveError, match="increase strictly: got 5 after 5"):
            w.append(5, np.ones(4, np.float32))
        with pytest.raises(ArchiveError, match="increase strictly: got 2 after 5"):
            w.append(2, np.ones(4, np.float32))
        with pytest.raises(ArchiveError, match="float array, got dtype int64"):
            w.append(6, np.ones(4, np.int64))
        with pytest.raises(ArchiveError, match="integer"):
            w.append(6.5, np.ones(4, np.float32))
        assert tree_digest(path) == before
        assert w.committed == 1
    np.testing.assert_array_equal(open_archive(path).params[:, :], np.ones((1, 4), np.float32))


def test_nonfinite_params_are_flagged_at_write_time(tmp_path):
    path = tmp_path / "run.trajkit"
    rows = _rows(4, 5)
    rows[2, 1] = np.nan
    rows[3, 4] = np.inf
    with create(path, n_params=5) as w:
        w.append(0, rows[0])
        w.append(1, rows[1])
        with pytest.warns(RuntimeWarning, match="NaN or inf in parameters at step 7"):
            w.append(7, rows[2])
        w.append(9, rows[3])
    a = open_archive(path)
    assert a.metadata["nonfinite"]["first_step"] == 7
    assert a.metadata["nonfinite"]["steps"] == [7, 9]
    assert a.params[:, :].tobytes() == rows.tobytes()  # stored as written, not masked


def test_dotted_keys_expand_at_top_level_only(tmp_path):
    import trajkit
    from trajkit.archive import create

    coords = {"dynamics.temperature": 1e-5, "model.hidden": [8]}
    with create(tmp_path / "d.trajkit", n_params=2,
                metadata={"dynamics.lr": 0.5, "ensemble": {"coords": coords}}) as w:
        w.append(0, [0.0, 1.0])
    meta = trajkit.open_archive(tmp_path / "d.trajkit").metadata
    assert meta["dynamics"]["lr"] == 0.5
    assert meta["ensemble"]["coords"] == coords


def test_snapshot_commit_carries_the_trace_marker(tmp_path):
    """One rename per snapshot: the trace rows written with a snapshot are committed by
    ``snapshots/zarr.json``'s ``trace_committed``; ``trace/zarr.json`` catches up on trace-only flushes
    and at close. A writer that dies before either keeps every committed trace row readable."""
    path = tmp_path / "t.trajkit"
    w = trajkit.archive.create(path, n_params=5)
    w.add_trace(np.arange(0, 10), {"loss": np.arange(10) / 10})
    w.append(9, np.ones(5, np.float32))
    w.add_trace(np.arange(10, 14), {"loss": np.arange(10, 14) / 10})
    w.append(13, np.ones(5, np.float32))
    w.abort()   # as after a crash: no close, no trace-only flush
    snap = json.loads((path / "snapshots/zarr.json").read_text())["attributes"]
    trace = json.loads((path / "trace/zarr.json").read_text())["attributes"]
    assert (snap["committed"], snap["trace_committed"], trace["committed"]) == (2, 14, 0)
    arch = trajkit.open_archive(path)
    np.testing.assert_array_equal(arch.trace["step"], np.arange(14))
    np.testing.assert_array_equal(arch.trace["loss"], np.arange(14) / 10)
    assert trajkit.archive.validate(path) == []
    with trajkit.archive.create(path, n_params=5, resume="allow") as w:   # resume continues both
        assert (w.committed, w.trace_committed) == (2, 14)
        w.truncate(12)       # drops snapshot 13 and trace rows 12, 13 from both markers
        w.add_trace(np.arange(12, 20), {"loss": np.zeros(8)})
        w.flush()
    arch = trajkit.open_archive(path)
    np.testing.assert_array_equal(arch.steps, [9])
    np.testing.assert_array_equal(arch.trace["step"], np.arange(20))
    assert json.loads((path / "trace/zarr.json").read_text())["attributes"]["committed"] == 20


def test_bad_trace_marker_in_the_snapshot_commit_is_reported(tmp_path):
    path = tmp_path / "t.trajkit"
    with trajkit.archive.create(path, n_params=5) as w:
        w.append(0, np.ones(5, np.float32))
    doc = json.loads((path / "snapshots/zarr.json").read_text())
    doc["attributes"]["trace_committed"] = "many"
    (path / "snapshots/zarr.json").write_text(json.dumps(doc))
    problems = trajkit.archive.validate(path)
    assert any("trace_committed" in p.message and "repair" in p.message for p in problems)


def test_archives_with_slash_chunk_keys_still_read_validate_and_resume(tmp_path, monkeypatch):
    """Archives written before the "." chunk-key separator keep their c/<row>/<j> layout when resumed."""
    from trajkit.archive import format as fmt

    path = tmp_path / "old.trajkit"
    rows = np.random.default_rng(3).standard_normal((4, 7)).astype(np.float32)
    monkeypatch.setattr(fmt, "PARAMS_SEPARATOR", "/")
    with create(path, n_params=7) as w:
        w.append(0, rows[0])
        w.append(1, rows[1])
    monkeypatch.undo()
    assert (path / "snapshots/params/c/1/0").is_file()
    with create(path, n_params=7, resume="allow") as w:
        w.append(2, rows[2])
        w.append(3, rows[3])
        w.truncate(3)
    assert (path / "snapshots/params/c/2/0").is_file() and not (path / "snapshots/params/c/3").exists()
    assert validate(path) == []
    np.testing.assert_array_equal(open_archive(path).params[:, :], rows[:3])
    z = zarr.open_array(path / "snapshots" / "params", mode="r")
    np.testing.assert_array_equal(z[:], rows[:3])


@pytest.mark.parametrize("swap", ["renameat2", "link"])
def test_marker_file_replaces_without_freeing_a_block_and_readers_see_whole_versions(tmp_path, monkeypatch, swap):
    """MarkerFile: every version is read back whole by a concurrent reader (never torn, never going back);
    with immediate reuse the marker alternates between two inodes (the replaced version is kept — swapped
    under the spare's name by renameat2, or by a hard link where that is missing — and written over later,
    so no block is freed); close deletes the kept versions; a new MarkerFile removes a crashed writer's
    leftovers."""
    import threading

    from trajkit.archive import format as fmt

    if swap == "link":
        monkeypatch.setattr(fmt, "_RENAMEAT2", False)   # as on a libc without renameat2
    elif fmt._renameat2() is None:
        pytest.skip("no renameat2 in this libc (not Linux, or glibc < 2.28): the link fallback is tested")
    path = tmp_path / "zarr.json"
    marker = fmt.MarkerFile(path)
    assert marker._exchange == (swap == "renameat2")
    seen, stop, torn = [], threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_bytes())["committed"])
            except FileNotFoundError:
                continue
            except ValueError as e:   # a torn or partial file
                torn.append(repr(e))

    reader = threading.Thread(target=read)
    marker.write(fmt.json_bytes({"committed": 0}))
    reader.start()
    for k in range(1, 3000):   # versions of varying length: a shorter one must not keep the old tail
        marker.write(fmt.json_bytes({"committed": k, "pad": "x" * (k % 7)}))
    stop.set()
    reader.join()
    assert not torn and len(seen) > 10 and seen == sorted(seen)
    assert json.loads(path.read_bytes()) == {"committed": 2999, "pad": "x" * (2999 % 7)}
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".zarr.json.tmp")]
    assert kept   # the versions replaced within the last second
    marker.close()
    assert [p.name for p in tmp_path.iterdir()] == ["zarr.json"]

    monkeypatch.setattr(fmt, "MARKER_REUSE_S", 0.0)
    marker = fmt.MarkerFile(path)
    inodes = set()
    for k in range(20):
        marker.write(fmt.json_bytes({"committed": k}))
        inodes.add(path.stat().st_ino)
        assert json.loads(path.read_bytes()) == {"committed": k}
    assert len(inodes) == 2   # two files take turns: no version's block is given back
    crashed = tmp_path / f".zarr.json.tmp{os.getpid() + 1}7"   # what a killed writer leaves
    crashed.write_bytes(b"{}")
    fmt.MarkerFile(path)
    assert not crashed.exists() and path.exists()
