"""BatchRecorder: R archives recorded from batched parameter tensors through one writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trajkit
from trajkit.archive import create
from trajkit.archive.layout import layout_from_named_parameters
from trajkit.record import RecordError
from trajkit.record.batch import BatchRecorder, RunEnd

R = 3


def _setup(tmp_path, writer):
    w = torch.arange(R * 4 * 2, dtype=torch.float32).reshape(R, 4, 2)
    b = -torch.arange(R * 4, dtype=torch.float32).reshape(R, 4)
    layout = layout_from_named_parameters([("w", w[0]), ("b", b[0])])
    archives = [create(tmp_path / f"r{r}.trajkit", 12, layout=layout) for r in range(R)]
    return BatchRecorder(archives, [w, b], writer=writer), w, b


@pytest.mark.parametrize("writer", ["thread", "inline"])
def test_rows_traces_and_ends_land_in_their_archives(tmp_path, writer):
    rec, w, b = _setup(tmp_path, writer)
    assert rec.writer_mode == writer
    for step in range(6):
        for r in range(R):
            if step < 5:
                rec.trace(r, np.array([step]), {"loss": np.array([10.0 * r + step])})
        runs = [0, 1, 2] if step < 3 else [0, 2]        # run 1 left the engine after step 2
        ws, bs = (w + step)[runs], (b - step)[runs]

        def finish(rows, step=step, runs=runs, ws=ws, bs=bs):   # on the writer: the copied rows [R', padded]
            out = []
            for i, run in enumerate(runs):
                expected = torch.cat([ws[i].reshape(-1), bs[i].reshape(-1)]).numpy()
                assert np.array_equal(rows[i, :12], expected) and np.isnan(rows[i, 12:]).all()
                out.append(RunEnd("diverged", "diverged: test", step) if (run, step) == (2, 4)
                           else {"m": float(step + run)})
            return out
        rec.snapshot(step, runs, [ws, bs], epoch=step / 2, finish=finish)
        if step == 2:
            rec.end(1, "diverged", "diverged: loss became nan at step 2", 2)
    rec.end(0, "done")
    rec.end(2, "done")        # run 2 was ended by finish: its first end is kept
    rec.close()
    assert rec.statuses == [("done", None), ("diverged", "diverged: loss became nan at step 2"),
                            ("diverged", "diverged: test")]
    expected_steps = {0: [0, 1, 2, 3, 4, 5], 1: [0, 1, 2], 2: [0, 1, 2, 3]}
    for r in range(R):
        a = trajkit.open_archive(tmp_path / f"r{r}.trajkit")    # closed: the lock is free, shapes trimmed
        steps = expected_steps[r]
        assert a.steps.tolist() == steps and a.metadata["status"] == rec.statuses[r][0]
        for k, s in enumerate(steps):
            np.testing.assert_array_equal(a.params[k, :], np.concatenate([(w[r] + s).reshape(-1),
                                                                           (b[r] - s).reshape(-1)]))
        np.testing.assert_array_equal(a.metrics["m"], [s + r for s in steps])
        np.testing.assert_array_equal(a.epochs, np.array(steps) / 2)
        n_trace = {0: 5, 1: 3, 2: 5}[r]     # run 2: the rows handed over with the snapshot that ended it
        np.testing.assert_array_equal(a.trace["step"], np.arange(n_trace))
        np.testing.assert_array_equal(a.trace["loss"], 10.0 * r + np.arange(n_trace))


def test_a_burst_of_snapshots_is_committed_in_groups_by_the_writer_thread(tmp_path):
    """Snapshots that queue up behind the writer (the dense start of a log schedule) share commit-marker
    writes, as the Recorder's do: at most a few per GROUP snapshots in each archive, every row intact."""
    import threading

    from trajkit.record.background import GROUP

    rec, w, b = _setup(tmp_path, "thread")
    markers = [0] * R
    for r, a in enumerate(rec.archives):   # count each archive's marker writes (the real ones still run)
        def counted(write=a._write_commit, r=r):
            markers[r] += 1
            write()
        a._write_commit = counted
    gate = threading.Event()

    def held(rows):
        assert gate.wait(30)
        return [{}] * R
    n = 3 * GROUP
    for step in range(n):
        rec.snapshot(step, [0, 1, 2], [w + step, b - step], epoch=None, finish=held if step == 0 else None)
    gate.set()
    rec.close()
    assert all(m <= 5 for m in markers), f"{n} queued snapshots took {markers} marker writes"
    for r in range(R):
        a = trajkit.open_archive(tmp_path / f"r{r}.trajkit")
        assert a.steps.tolist() == list(range(n))
        for k in (0, GROUP, n - 1):
            np.testing.assert_array_equal(a.params[k, :], np.concatenate([(w[r] + k).reshape(-1),
                                                                           (b[r] - k).reshape(-1)]))


def test_a_writer_error_surfaces_and_every_archive_is_released(tmp_path):
    rec, w, b = _setup(tmp_path, "thread")
    rec.snapshot(0, [0, 1, 2], [w, b], epoch=0.0)

    def broken(rows):
        raise OSError("disk on fire")
    rec.snapshot(1, [0, 1, 2], [w, b], epoch=1.0, finish=broken)
    with pytest.raises(RecordError, match=r"background write of step 1 failed: OSError: disk on fire"):
        for step in range(2, 200):
            rec.snapshot(step, [0, 1, 2], [w, b], epoch=float(step))
    rec.fail("failed: OSError: disk on fire")
    for r in range(R):
        a = trajkit.open_archive(tmp_path / f"r{r}.trajkit")
        assert a.steps.tolist() == [0] and a.metadata["status"] == "failed"
        create(tmp_path / f"r{r}.trajkit", 12, resume="must").close()   # the lock was released


def test_mismatched_parameters_are_refused(tmp_path):
    archives = [create(tmp_path / f"x{r}.trajkit", 5) for r in range(2)]
    with pytest.raises(trajkit.TrajkitError, match="leading replica axis of 2"):
        BatchRecorder(archives, [torch.zeros(3, 5)])
    with pytest.raises(trajkit.TrajkitError, match="hold 4 values per run but the archives 5"):
        BatchRecorder(archives, [torch.zeros(2, 4)])
    for a in archives:
        a.close()
