"""Where snapshot writes happen: inline on the training thread, or on one background writer thread.

Both sinks run the same hand-overs: a :class:`Handover` is a filled buffer slot plus the work that writes
it (for a :class:`~trajkit.record.Recorder`, one :class:`WriteItem` — step, time, epoch, metrics and the
drained trace rows — into its archive; for a :class:`~trajkit.record.batch.BatchRecorder`, one item per
archive of a batch of replicas sharing the slot), so neither front-end cares which sink runs. One sink may
serve any number of archives: hand-overs run in submission order, so each archive's writes stay in order.
The background sink has a bounded queue and a fixed pool of slots: when the writer falls behind,
:meth:`BackgroundSink.acquire` blocks the training thread (back-pressure) — nothing is ever dropped. An
exception in the writer thread is kept, later hand-overs are skipped, and it is re-raised on the training
thread by the next :meth:`check` (called from ``Recorder.step``) or by :meth:`close`.

Group commits. A hand-over may carry ``settle``, the step that makes its commit visible (the Recorder's
archive commits with ``defer_commit`` and settles with :meth:`ArchiveWriter.publish`). The writer thread
settles at most every :data:`SETTLE_S` seconds: a row that comes after a quiet spell (sparse snapshots) is
published at once, as before; rows that follow one another faster (every step, the dense start of a log
schedule) join one commit, published when :data:`GROUP` rows are unsettled, when ``SETTLE_S`` has passed
since the last settle and the queue is empty, or ``SETTLE_S`` after the last row if no other comes. One
rename then commits the group, and the thread's marker writes stop delaying the next row (with zero copy
the next optimiser step waits for that row). A crash loses at most the rows of the group in flight — at
most ``GROUP`` rows, or ``SETTLE_S`` seconds of them —; what was published stays.

``writer="auto"`` picks the thread on CUDA (the host idles during kernels), on CPU whenever params chunks
go out with ``O_DIRECT`` (the write then costs the cores almost nothing) and when they are compressed (the
compression runs beside training); small buffered rows stay inline, where a Python writer thread would
compete with training for the cores (benchmarks/recorder_overhead.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trajkit.archive.writer import ArchiveWriter
from trajkit.errors import TrajkitError
from trajkit.record.copier import RowRead, Slot
from trajkit.record.traces import TraceBatch


class RecordError(TrajkitError):
    """Writing a snapshot failed; the archive keeps every row committed before the failure."""


@dataclass
class WriteItem:
    slot_index: int | None
    slot: Slot | None
    step: int | None
    time: float | None
    epoch: float | None
    metrics: dict[str, float] | None
    trace: TraceBatch | None
    #: set once the writer no longer reads the row (:class:`~trajkit.record.copier.RowRead`)
    read: RowRead | None = None


def write_item(writer: ArchiveWriter, item: WriteItem, row: Any = None) -> None:
    """Perform one item: trace rows first, then the snapshot row (``row``, default the slot's host buffer
    ``[padded]``) and its commit; trace rows alone are committed by a trace flush."""
    if item.trace is not None:
        writer.add_trace(item.trace.steps, item.trace.resolve())
    if item.slot is not None:
        if item.slot.event is not None:
            item.slot.event.synchronize()
        writer.write_row(item.step, item.slot.host if row is None else row, time=item.time, epoch=item.epoch,
                         metrics=item.metrics, finite=item.slot.finite if row is None else None,
                         after_read=item.read.set if item.read is not None else None)
    elif item.trace is not None:
        writer.flush()


@dataclass
class Handover:
    """One unit of writer work: ``run()`` performs it; ``slot_index`` (or None) returns to the pool after.

    ``where`` (the archive path, or the batch's directory) and ``step`` name it in error messages."""

    slot_index: int | None
    run: Callable[[], None]
    where: str
    step: int | None
    #: makes what ``run`` committed visible (:meth:`ArchiveWriter.publish`), when ``run`` defers it
    settle: Callable[[], None] | None = None
    #: called after ``run`` whatever happened (also when it is skipped after an earlier error)
    release: Callable[[], None] | None = None


class InlineSink:
    """Writes on the calling (training) thread; one slot reused for every snapshot."""

    error = None   # never set: errors are raised where they happen

    def acquire(self) -> int:
        return 0

    def submit(self, item: Handover) -> None:
        try:
            item.run()
        except TrajkitError:
            raise
        except Exception as e:
            raise RecordError(f"{item.where}: writing step {item.step} failed: {type(e).__name__}: {e}; "
                              f"rows before it are intact") from e
        finally:
            if item.release is not None:
                item.release()

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


#: most rows one group commit of the writer thread covers (what a crash may lose beyond the last commit)
GROUP = 16
#: seconds between the writer thread's group commits while rows keep coming (see the module docstring)
SETTLE_S = 0.05


class BackgroundSink:
    """One writer thread fed by a bounded queue; ``n_slots`` buffers circulate between the two threads."""

    def __init__(self, n_slots: int):
        # last in, first out: with sparse snapshots the slot written last (still in cache) is reused
        self._free: queue.LifoQueue[int] = queue.LifoQueue()
        for k in range(n_slots):
            self._free.put(k)
        self._todo: queue.Queue[Handover | None] = queue.Queue(maxsize=n_slots + 1)
        self.error: BaseException | None = None  # re-raised by check()
        self._error_at: Handover | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="trajkit-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        unsettled: dict[Callable[[], None], Handover] = {}   # commits not yet visible, by their settle
        grouped = 0   # rows run since the last settle
        settled_at = -SETTLE_S   # monotonic time of the last settle
        while True:
            try:   # with rows unsettled, wait for the next hand-over only until they are due
                item = self._todo.get(timeout=max(0.0, settled_at + SETTLE_S - time.monotonic())
                                      if unsettled else None)
            except queue.Empty:
                self._settle(unsettled)
                grouped, settled_at = 0, time.monotonic()
                continue
            if item is None:
                self._settle(unsettled)
                return
            try:
                if self._attempt(item, item.run) and item.settle is not None:
                    unsettled.setdefault(item.settle, item)
                    grouped += 1
            finally:
                if item.slot_index is not None:
                    self._free.put(item.slot_index)
                if item.release is not None:
                    item.release()
            # group commit: rows coming faster than SETTLE_S, or queued behind this one, join one commit
            if unsettled and (grouped >= GROUP or (self._todo.empty()
                                                   and time.monotonic() - settled_at >= SETTLE_S)):
                self._settle(unsettled)
                grouped, settled_at = 0, time.monotonic()

    def _attempt(self, item: Handover, work: Callable[[], None]) -> bool:
        """Run ``work`` of ``item`` unless an earlier hand-over failed; an exception is kept (re-raised on the
        training thread) and skips all later work. True when ``work`` ran and returned."""
        if self._failed:
            return False
        try:
            work()
            return True
        except BaseException as e:
            self._failed = True
            self.error, self._error_at = e, item
            return False

    def _settle(self, unsettled: dict[Callable[[], None], Handover]) -> None:
        for item in unsettled.values():
            self._attempt(item, item.settle)
        unsettled.clear()

    def acquire(self) -> int:
        """A free slot index; blocks while every slot is queued or being written (back-pressure)."""
        self.check()
        return self._free.get()

    def submit(self, item: Handover) -> None:
        self.check()
        self._todo.put(item)

    def check(self) -> None:
        if self.error is not None:
            e, self.error = self.error, None
            if isinstance(e, TrajkitError):
                raise e
            at = self._error_at
            raise RecordError(f"{at.where if at else '?'}: background write of step {at.step if at else None} "
                              f"failed: {type(e).__name__}: {e}; rows before it are intact") from e

    def close(self) -> None:
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()
        self.check()


def make_sink(mode: str, n_slots: int) -> InlineSink | BackgroundSink:
    """The writer thread (``mode == "thread"``, ``n_slots`` buffers) or the inline sink."""
    return BackgroundSink(n_slots) if mode == "thread" else InlineSink()
