"""Crash safety: a recording process killed with SIGKILL at random moments never damages its archive.

Each round starts a child that records a deterministic trajectory (one snapshot per step, ~1.1 MiB rows so
kills land inside chunk writes), kills it after a random delay, then checks that the archive opens,
validates, and holds exactly the committed rows bit for bit — at least every step the child reported as
done — and that ``resume="allow"`` continues it to the end without duplicates.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import trajkit
from trajkit.record.background import GROUP

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from crash_child import BUFFERS, expected_loss, expected_params

CHILD = Path(__file__).parent / "helpers" / "crash_child.py"
N = 2 * 150_000
KILLS = 20


def _spawn(path: Path, start: int, stop: int, resume: bool, writer: str = "inline") -> subprocess.Popen:
    args = [sys.executable, str(CHILD), str(path), str(N), str(start), str(stop), writer]
    args += ["resume"] if resume else []
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_archive(path: Path) -> int:
    arch = trajkit.open_archive(path)
    steps = arch.steps
    assert np.array_equal(steps, np.arange(steps.size)), "committed steps must be 0..T-1 with no gap or duplicate"
    for r in range(steps.size):
        assert np.array_equal(arch.params[r, :], expected_params(int(steps[r]), N)), f"row {r} differs"
    np.testing.assert_array_equal(arch.epochs, steps / 10)
    tr = arch.trace
    if tr.get("step", np.zeros(0)).size:
        assert np.array_equal(tr["step"], np.arange(tr["step"].size))
        np.testing.assert_array_equal(tr["loss"], [expected_loss(int(k)) for k in tr["step"]])
    validate = getattr(trajkit.archive, "validate", None)
    if validate is not None:
        problems = validate(path)
        assert not problems, [getattr(p, "message", str(p)) for p in problems]
    return int(steps.size)


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_sigkill_at_random_moments_never_loses_committed_rows(tmp_path, writer):
    """Inline: every step ``rec.step`` returned from is committed. Writer thread (direct writes for these
    1.1 MiB rows where the file system allows): all but the last ``BUFFERS`` reported steps and the rows of
    one group commit (at most ``GROUP``, written but not yet published) are."""
    lag = 0 if writer == "inline" else BUFFERS + GROUP
    rng = random.Random(1234)
    path = tmp_path / "crash.trajkit"
    committed = 0
    for round_ in range(KILLS):
        child = _spawn(path, 0, 10**6, resume=round_ > 0, writer=writer)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        reported = [int(x) for x in out.split() if x.lstrip("-").isdigit()]
        n = _check_archive(path)
        if reported:
            assert n >= reported[-1] + 1 - lag, f"round {round_}: step {reported[-1]} reported done, only {n} rows"
        assert n >= committed, "a kill must never remove rows committed earlier"
        committed = n
    final = committed + 5
    child = _spawn(path, 0, final, resume=True, writer=writer)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert _check_archive(path) == final + 1


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_kill_during_background_writes_keeps_archive_valid(tmp_path, writer):
    """The same guarantee with the writer thread: kill, reopen, and every committed row is intact."""
    path = tmp_path / f"{writer}.trajkit"
    code = (
        "import sys, torch, trajkit\n"
        f"m = torch.nn.Linear(1000, 100)\n"
        f"rec = trajkit.Recorder({str(path)!r}, m, schedule=trajkit.schedules.linear(1), writer={writer!r})\n"
        "print('ready', flush=True)\n"
        "k = 0\n"
        "while True:\n"
        "    with torch.no_grad(): m.weight.fill_(float(k))\n"
        "    rec.step(k); k += 1\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.4)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    arch = trajkit.open_archive(path)
    assert arch.n_snapshots > 0
    for r in range(arch.n_snapshots):
        row = arch.params[r, :100_000]
        assert np.all(row == float(arch.steps[r]))
