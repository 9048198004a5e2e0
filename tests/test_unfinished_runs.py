"""Unfinished runs are visible: a SIGKILLed ``trajkit record``, a live writer, an aborted one.

``trajkit info`` says interrupted, ``trajkit validate`` warns (and fails with ``--strict``), ``trajkit
analyze`` names the input on one stderr line and in ``provenance["unfinished"]``; a live writer is a live
view; a closed or repaired archive is finished. Each line is asserted exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import trajkit
from trajkit.archive import create, run_state
from trajkit.archive.format import LOCK_FILE
from trajkit.cli import cli

CONFIG = """
[model]
kind = "mlp"
hidden = [16]
[data]
name = "pca_parity"
components = 8
n_train = 200
n_test = 40
[loss]
name = "quadratic_hinge"
[dynamics]
kind = "langevin"
lr = 0.05
temperature = 1e-3
[run]
steps = 10000000
[snapshots]
schedule = "linear"
every = 20
"""

RESUME_HINT = "(no live writer): resume with resume='allow' or `trajkit repair`"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _committed(archive: Path) -> int:
    try:
        return json.loads((archive / "snapshots" / "zarr.json").read_text())["attributes"]["committed"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The archive of a ``trajkit record`` process killed with SIGKILL after ≥ 6 committed snapshots."""
    tmp = tmp_path_factory.mktemp("killed")
    (tmp / "exp.toml").write_text(CONFIG)
    out = tmp / "ens"
    exe = Path(sys.executable).with_name("trajkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from trajkit.cli import main; main()"]
    child = subprocess.Popen([*cmd, "record", "--config", str(tmp / "exp.toml"), "--out", str(out), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    archive = None
    while time.monotonic() < deadline and child.poll() is None:
        found = sorted(out.glob("*.trajkit")) if out.is_dir() else []
        if found and _committed(found[0]) >= 6:
            archive = found[0]
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate(timeout=60)
    assert archive is not None, f"the recording never committed 6 snapshots: {err}"
    return archive


def _last_step(path: Path) -> int:
    return int(trajkit.open_archive(path).steps[-1])


def test_run_state_of_a_killed_record_is_interrupted(killed):
    state = run_state(killed)
    arch = trajkit.open_archive(killed)
    assert arch.metadata["status"] == "running"        # what the dead process left in the metadata
    assert (state.state, state.last_step, state.n_snapshots) == ("interrupted", int(arch.steps[-1]),
                                                                 arch.n_snapshots)
    assert state.last_step == 20 * (arch.n_snapshots - 1)   # linear every 20 from step 0


def test_info_says_interrupted(killed):
    res = invoke("info", str(killed))
    assert res.exit_code == 0, res.output
    rows = dict(line.split(None, 1) for line in res.stdout.splitlines() if line.startswith("status "))
    assert rows == {"status": f"interrupted at step {_last_step(killed)} {RESUME_HINT}"}
    doc = json.loads(invoke("info", "--json", str(killed)).stdout)
    assert doc["run_state"]["state"] == "interrupted" and doc["run_state"]["last_step"] == _last_step(killed)


def test_validate_warns_and_strict_fails(killed):
    res = invoke("validate", str(killed))
    arch = trajkit.open_archive(killed)
    assert res.exit_code == 0
    assert res.stderr.splitlines() == [f"trajkit: warning: {killed}: interrupted at step {_last_step(killed)} "
                                       f"{RESUME_HINT}"]
    assert res.stdout.splitlines() == [f"ok {killed} ({arch.n_snapshots} snapshots x {arch.n_params} parameters)"]
    strict = invoke("validate", "--strict", str(killed))
    assert strict.exit_code == 1 and strict.stderr == res.stderr


def test_analyze_names_the_unfinished_input(killed):
    res = invoke("analyze", "--plugin", "overlaps", "--json", str(killed))
    assert res.exit_code == 0, res.stderr
    expected = (f"trajkit: warning: 1 of 1 inputs unfinished, analysed up to their last committed snapshot: "
                f"{killed} (interrupted at step {_last_step(killed)} {RESUME_HINT})")
    assert [line for line in res.stderr.splitlines() if "unfinished" in line] == [expected]
    assert not [line for line in res.stderr.splitlines() if not line.startswith("trajkit: ")]
    prov = json.loads(res.stdout)["provenance"]
    assert [(u["path"], u["state"], u["last_step"]) for u in prov["unfinished"]] == \
        [(str(killed), "interrupted", _last_step(killed))]


def test_repair_finishes_it_and_records_why(killed, tmp_path):
    import shutil

    copy = tmp_path / killed.name
    shutil.copytree(killed, copy)
    assert run_state(copy).state == "interrupted"
    trajkit.archive.repair(copy)
    state = run_state(copy)
    assert (state.state, state.status) == ("finished", "failed")
    assert trajkit.open_archive(copy).metadata["status_reason"] == f"interrupted at step {state.last_step}; repaired"


def test_live_writer_is_a_live_view_and_close_finishes(tmp_path):
    path = tmp_path / "live.trajkit"
    rng = np.random.default_rng(0)
    w = create(path, n_params=64)
    for k in (0, 5, 9):
        w.append(k, rng.normal(size=64).astype(np.float32))
    state = run_state(path)
    assert (state.state, state.last_step, state.writer_pid) == ("live", 9, os.getpid())
    assert state.describe() == f"live: a writer (pid {os.getpid()}) is recording, last committed snapshot step 9"
    res = invoke("validate", "--strict", str(path))
    assert res.exit_code == 0 and res.stderr == f"trajkit: warning: {path}: {state.describe()}\n"
    with pytest.warns(trajkit.archive.info.UnfinishedRunWarning) as caught:
        result = trajkit.analyze("overlaps", [path])
    assert [str(c.message) for c in caught] == [
        f"1 of 1 inputs unfinished, analysed up to their last committed snapshot: {path} ({state.describe()})"]
    assert result.provenance["unfinished"][0]["state"] == "live"
    w.close()
    assert run_state(path).state == "finished" and (path / LOCK_FILE).read_bytes() == b""
    with create(path, n_params=64, resume="allow") as w2:   # reopened and closed: still finished
        w2.append(12, rng.normal(size=64).astype(np.float32))
    assert run_state(path).state == "finished"
    assert trajkit.analyze("overlaps", [path]).provenance["unfinished"] == []


def test_aborted_writer_reads_interrupted_and_failed_reopen_changes_nothing(tmp_path):
    path = tmp_path / "a.trajkit"
    w = create(path, n_params=4)
    w.append(3, np.zeros(4, np.float32))
    w.abort()
    assert (run_state(path).state, run_state(path).last_step) == ("interrupted", 3)
    with pytest.raises(trajkit.errors.ArchiveError, match="cannot resume"):
        create(path, n_params=5, resume="allow")
    assert run_state(path).state == "interrupted"       # the refused reopen left the lock file as it was
    done = tmp_path / "b.trajkit"
    create(done, n_params=4).close()
    with pytest.raises(trajkit.errors.ArchiveError, match="cannot resume"):
        create(done, n_params=5, resume="allow")
    assert run_state(done).state == "finished"


def test_aborted_writer_leaves_no_kept_metadata_versions(tmp_path):
    """abort() deletes the zarr.json versions every rewritten file kept (format.MarkerFile) — the commit
    markers' and those of the arrays whose shape grew — and the archive keeps every committed row."""
    from trajkit.archive.validate import validate

    path = tmp_path / "a.trajkit"
    w = create(path, n_params=4, capacity=2)   # the 1-D arrays grow (shape rewritten) twice in 5 rows
    for k in range(5):
        w.append(k, np.full(4, k, np.float32), metrics={"acc": k / 10})
    w.add_trace(np.arange(5, 9), {"loss": np.ones(4)})
    w.flush()
    kept = sorted(p.relative_to(path).as_posix() for p in path.rglob(".zarr.json.tmp*"))
    assert any(k.startswith("snapshots/step/") for k in kept)   # a grown array kept one: the test can fail
    w.abort()
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob(".zarr.json.tmp*")) == []
    assert (run_state(path).state, run_state(path).last_step) == ("interrupted", 4)
    assert validate(path) == []
    arch = trajkit.open_archive(path)
    np.testing.assert_array_equal(arch.steps, np.arange(5))
    np.testing.assert_array_equal(arch.params[4, :], np.full(4, 4, np.float32))


def test_legacy_lock_file_falls_back_to_the_trimmed_shape(tmp_path):
    """A lock file holding only a pid (trajkit before the ``open`` mark): a closed writer trimmed the arrays
    to the committed rows, a dead one left them at their capacity."""
    closed, dead = tmp_path / "closed.trajkit", tmp_path / "dead.trajkit"
    with create(closed, n_params=4) as w:
        w.append(0, np.zeros(4, np.float32))
    w = create(dead, n_params=4)
    w.append(0, np.zeros(4, np.float32))
    w.abort()
    for p in (closed, dead):
        (p / LOCK_FILE).write_text("12345")
    assert (run_state(closed).state, run_state(dead).state) == ("finished", "interrupted")
