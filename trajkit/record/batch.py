"""Recording R runs trained as one batched computation: R archives, one slot pool, one writer.

The batched path of ``trajkit record`` trains R replicas with their parameters stacked ``[R, *shape]``. A
:class:`BatchRecorder` records them with the machinery of :class:`~trajkit.record.Recorder`: the same
:class:`~trajkit.record.copier.ParamCopier` (here with a replica axis: a slot is R page-aligned rows),
the same sink (:mod:`trajkit.record.background`: inline, or one writer thread with bounded back-pressure),
the same :class:`~trajkit.record.traces.TraceBuffer` per run (drained into each snapshot, so the trace is
committed with it) and the same :class:`~trajkit.archive.writer.ArchiveWriter` commit protocol and direct
I/O. One hand-over carries a whole snapshot of the batch — one slot, one :class:`WriteItem` per run — so R
archives share one writer thread and their writes stay in order. With the writer thread the archives
commit with ``defer_commit`` and the thread's group commits publish them (all open runs in one settle), so
a dense stretch of the schedule costs one marker write per archive for up to ``GROUP`` snapshots; a crash
loses at most that group, as with the Recorder.

A snapshot may leave work to the writer thread: ``finish(rows)`` gets the slot's rows ``[R', padded]``
(in the archives' storage dtype, the parameters at that step) and returns, per run, its metrics or a
:class:`RunEnd`. The runner evaluates its full-dataset metrics there, beside training, instead of on the
training thread. A run ended
by ``finish`` (its snapshot was not finite) has its archive closed at once; later hand-overs skip it, and
:meth:`BatchRecorder.ended` tells the training thread to stop training it.

>>> rec = BatchRecorder([create(p, n) for p in paths], params=[w1, b1, w2, b2])   # doctest: +SKIP
>>> rec.trace(0, steps, {"loss": loss_of_run0})                                   # doctest: +SKIP
>>> rec.snapshot(step, runs=[0, 1, 2], params=[w1, b1, w2, b2], epoch=1.0, metrics=[...])   # doctest: +SKIP
>>> rec.end(0, "done"); rec.close()                                               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trajkit.archive import dtypes
from trajkit.archive.writer import ArchiveWriter
from trajkit.errors import TrajkitError
from trajkit.record.background import Handover, WriteItem, make_sink, write_item
from trajkit.record.copier import ParamCopier
from trajkit.record.recorder import TRACE_FLUSH_ROWS, WRITER_MODES
from trajkit.record.traces import TraceBuffer

RUNNING = "running"
#: host memory the default slot pool may take (bytes), and its largest size
SLOT_BUDGET_BYTES = 64 * 2**20
MAX_SLOTS = 64


@dataclass(frozen=True)
class RunEnd:
    """A run that stops at ``step`` with ``status`` (e.g. ``"diverged"``) and a one-line ``reason``."""

    status: str
    reason: str | None
    step: int


#: ``finish(rows)`` → per run, its metrics ``{name: float}`` or a :class:`RunEnd`; run on the writer
Finish = Callable[[np.ndarray], Sequence["dict[str, float] | RunEnd"]]


class BatchRecorder:
    """Record runs ``0..R-1`` (one :class:`ArchiveWriter` each) whose parameters are batched tensors.

    Parameters
    ----------
    archives : the R open writers, same ``n_params`` and ``padded_size``; the recorder closes them.
    params : the parameter tensors in layout order, each ``[R, *shape]`` (its device decides the copies).
    writer : ``"thread"`` (one writer thread for all R archives), ``"inline"``, or ``"auto"`` (the thread:
        a snapshot of the batch is R archive commits, and ``finish`` work, worth moving off training).
    buffers : snapshots in flight with the thread (each a slot of R rows); None (default): as many as fit
        in :data:`SLOT_BUDGET_BYTES`, between 3 and :data:`MAX_SLOTS` — log-spaced schedules start with a
        snapshot every step, faster than the writer (R commits and the ``finish`` work each), and a deep
        pool lets training run on while the writer catches up later.
    """

    def __init__(self, archives: Sequence[ArchiveWriter], params: list[torch.Tensor], writer: str = "auto",
                 buffers: int | None = None):
        if writer not in WRITER_MODES:
            raise TrajkitError(f"BatchRecorder: writer={writer!r} is not one of {', '.join(WRITER_MODES)}")
        self.archives = list(archives)
        if not self.archives or len({(a.n_params, a.padded_size) for a in self.archives}) != 1:
            raise TrajkitError("BatchRecorder: give one or more archives of the same n_params")
        R = len(self.archives)
        if any(int(p.shape[0]) != R for p in params):
            raise TrajkitError(f"BatchRecorder: every parameter tensor needs a leading replica axis of {R}")
        self.writer_mode = "thread" if writer == "auto" else writer
        if buffers is None:
            slot_bytes = R * self.archives[0].padded_size * dtypes.itemsize(self.archives[0].dtype)
            buffers = max(3, min(MAX_SLOTS, SLOT_BUDGET_BYTES // slot_bytes))
        n_slots = max(1, buffers) if self.writer_mode == "thread" else 1
        # the host buffers hold the archives' storage dtype (float32 unless they were created with another)
        self._copier = ParamCopier(params, self.archives[0].padded_size, n_slots, replicas=R,
                                   dtype=self.archives[0].dtype)
        if self._copier.n != self.archives[0].n_params:
            raise TrajkitError(f"BatchRecorder: the parameters hold {self._copier.n} values per run but the "
                               f"archives {self.archives[0].n_params}")
        self._sink = make_sink(self.writer_mode, n_slots)
        # the writer thread commits snapshots that queue up behind it in groups, as the Recorder's does
        # (background.py): one marker write per archive for up to GROUP snapshots of a dense schedule
        self._settle: Callable[[], None] | None = None
        if self.writer_mode == "thread":
            for a in self.archives:
                a.defer_commit = True
            self._settle = self._publish_open
        self._traces = [TraceBuffer() for _ in range(R)]
        self._where = str(self.archives[0].path.parent)
        #: per run ``(status, reason)``; final once :meth:`close` returned
        self.statuses: list[tuple[str, str | None]] = [(RUNNING, None)] * R
        self._ended: dict[int, RunEnd] = {}        # written on the writer thread (or inline)
        self._handed_end = [False] * R               # an end was handed over (training thread)
        self._closed = False

    # -- training-thread API --------------------------------------------------------------------------

    def trace(self, run: int, steps: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Buffer per-step values of ``run``: ``steps`` ``[k]``, ``columns`` ``{name: [k]}`` (host arrays)."""
        buf = self._traces[run]
        buf.extend(steps, columns)
        if len(buf) >= TRACE_FLUSH_ROWS:
            self._submit(None, self._trace_only(run, buf.drain()), None)

    def snapshot(self, step: int, runs: Sequence[int], params: list[torch.Tensor], *, epoch: float | None,
                 metrics: Sequence[dict[str, float]] | None = None, finish: Finish | None = None) -> None:
        """Snapshot ``params`` (each ``[len(runs), *shape]``; row i belongs to run ``runs[i]``) at ``step``.

        Each run's buffered trace goes with its snapshot. Metrics are ``metrics[i]``, or what ``finish``
        returns on the writer thread from the copied rows ``[len(runs), padded]``.
        """
        self._sink.check()
        runs = list(runs)
        traces = [self._traces[r].drain() for r in runs]
        times = [self.archives[r].elapsed() for r in runs]
        k = self._sink.acquire()
        slot = self._copier.copy_into(k, params)
        padded = self._copier.padded_size

        def work() -> None:
            if slot.event is not None:
                slot.event.synchronize()
            rows = slot.host[:len(runs), :padded]
            results: Sequence[Any] = finish(rows) if finish is not None else (metrics or [{}] * len(runs))
            for i, r in enumerate(runs):
                if r in self._ended:
                    continue
                res = results[i]
                item = WriteItem(k, slot, step, times[i], epoch, None if isinstance(res, RunEnd) else res,
                                 traces[i])
                if isinstance(res, RunEnd):
                    self._finish_run(r, res, traces[i])
                else:
                    write_item(self.archives[r], item, row=rows[i])

        self._submit(k, work, step, self._settle)

    def end(self, run: int, status: str, reason: str | None = None, step: int | None = None) -> None:
        """Hand over ``run``'s remaining trace, record ``status`` in its metadata and close its archive (in
        order after its earlier snapshots). A run already ended (here or by ``finish``) keeps its first end."""
        if self._handed_end[run]:
            return
        self._handed_end[run] = True
        trace = self._traces[run].drain()
        end = RunEnd(status, reason, -1 if step is None else step)
        self._submit(None, lambda: self._finish_run(run, end, trace), step)

    def ended(self) -> dict[int, RunEnd]:
        """Runs ended on the writer side so far (run → its end); the training thread stops training them."""
        return dict(self._ended)

    def close(self) -> None:
        """Hand over every open run's trace, close its archive (status unchanged), stop the writer.

        Re-raises a writer error; every archive is closed (or its lock released) whatever happened."""
        if self._closed:
            return
        self._closed = True
        try:
            for r in range(len(self.archives)):
                if not self._handed_end[r]:
                    self._handed_end[r] = True
                    trace = self._traces[r].drain()
                    self._submit(None, self._closer(r, trace), None)
        finally:
            try:
                self._sink.close()
            finally:
                self._release_all()

    def fail(self, reason: str) -> None:
        """After an error: stop the writer (its own error is dropped: the caller is handling one), record
        ``status="failed"`` with ``reason`` in every run not ended, close every archive."""
        self._closed = True
        try:
            self._sink.close()
        except BaseException:   # the writer's error is superseded by the one being handled
            pass
        for r, w in enumerate(self.archives):
            if r in self._ended:
                continue
            self.statuses[r] = ("failed", reason)
            try:
                w.update_metadata({"status": "failed", "status_reason": reason})
            except Exception:   # the archive itself may be what failed; its committed rows stay
                pass
        self._release_all()

    def __repr__(self) -> str:
        return f"BatchRecorder({self._where!r}, runs={len(self.archives)}, writer={self.writer_mode!r})"

    # -- internals (the writer side) ---------------------------------------------------------------------

    def _submit(self, k: int | None, work: Callable[[], None], step: int | None,
                settle: Callable[[], None] | None = None) -> None:
        self._sink.submit(Handover(k, work, self._where, step, settle))

    def _publish_open(self) -> None:
        """Make every open run's deferred snapshot commits visible (a closed archive published them itself)."""
        for r, w in enumerate(self.archives):
            if r not in self._ended:
                w.publish()

    def _write_trace(self, run: int, trace: Any) -> None:
        """Write ``run``'s drained ``trace`` (if any) into its archive, unless the run has ended."""
        if run not in self._ended and trace is not None:
            write_item(self.archives[run], WriteItem(None, None, None, None, None, None, trace))

    def _trace_only(self, run: int, trace: Any) -> Callable[[], None]:
        return lambda: self._write_trace(run, trace)

    def _closer(self, run: int, trace: Any) -> Callable[[], None]:
        def work() -> None:
            if run in self._ended:
                return
            self._write_trace(run, trace)
            self.archives[run].close()
        return work

    def _finish_run(self, run: int, end: RunEnd, trace: Any) -> None:
        if run in self._ended:
            return
        self._write_trace(run, trace)
        w = self.archives[run]
        w.update_metadata({"status": end.status, "status_reason": end.reason})
        w.close()
        self.statuses[run] = (end.status, end.reason)
        self._ended[run] = end

    def _release_all(self) -> None:
        for w in self.archives:
            try:
                w.close()
            except Exception:
                w.abort()
