"""The Recorder: records a model's training trajectory into a trajkit archive from any training loop.

Call ``rec.step(k, loss=...)`` when the model holds ``w(k)``, the parameters after ``k`` optimiser steps
(step 0 is the initialisation). Steps the schedule selects become snapshots: the flat parameter vector,
the time, the epoch and any metrics (from ``evaluate``); every call also records its scalars in
``trace/``. Scalars may be tensors: on CUDA nothing synchronises the host on non-snapshot steps.

>>> import torch, trajkit
>>> model = torch.nn.Linear(4, 2)
>>> sched = trajkit.schedules.log(1, 1000, 50)
>>> with trajkit.Recorder("run.trajkit", model, schedule=sched) as rec:     # doctest: +SKIP
...     for k in range(1001):
...         loss = train_one_step(model)          # your code
...         rec.step(k, loss=loss)

Resuming (``resume="allow"`` or ``"must"``): ``rec.restore()`` loads the last committed snapshot into the
model and returns its step; the first ``step(k)``/``snapshot(k)`` after reopening drops every archived
row at or after ``k``, so nothing is duplicated.

With ``optimizer=opt`` the snapshot copy overlaps the next forward and backward pass and is waited for
by a pre-hook on ``opt.step`` (:mod:`trajkit.record.overlap`); the bytes written are the same.
"""

from __future__ import annotations

import functools
import inspect
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trajkit import schedules as _schedules
from trajkit.archive.dtypes import check_dtype
from trajkit.archive.layout import layout_from_named_parameters
from trajkit.archive.metadata import deep_merge
from trajkit.archive.writer import ArchiveWriter
from trajkit.errors import TrajkitError
from trajkit.record import distributed
from trajkit.record.background import Handover, RecordError, WriteItem, make_sink, write_item
from trajkit.record.copier import FlatParams, ParamCopier, RowRead
from trajkit.record.online import OnlineTracker
from trajkit.record.overlap import StepGate, as_optimizers
from trajkit.record.subset import subset_layout
from trajkit.record.traces import TraceBuffer

WRITER_MODES = ("auto", "inline", "thread")
#: a zero-copy row that kept the next optimiser step waiting longer than this (seconds) stalled training
ZERO_COPY_STALL_S = 2e-4
#: snapshots copied after such a stall before zero copy is tried again
ZERO_COPY_BACKOFF = 16
#: trace rows buffered before they are handed to the writer even without a snapshot
TRACE_FLUSH_ROWS = 65536


class Recorder:
    """Record ``model``'s trajectory into the archive at ``path``.

    Parameters
    ----------
    path : archive directory (``NAME.trajkit``), created unless resuming.
    model : a ``torch.nn.Module``; its trainable parameters (``requires_grad``) in ``named_parameters``
        order form the flat vector ``w`` of length N.
    schedule : a :mod:`trajkit.schedules` schedule (default: ``log(1, 10**6, 200)``).
    metadata : nested dict merged into the archive metadata (dataset, dynamics, seed, user, ...).
    resume : ``"never"`` (the path must not exist), ``"allow"``, or ``"must"``.
    evaluate : optional callable ``evaluate(model) -> {name: float}`` (or with no argument) run at each
        snapshot; its values go to ``snapshots/metrics/<name>``.
    writer : ``"inline"`` (write on the training thread), ``"thread"`` (one writer thread, bounded queue
        with back-pressure) or ``"auto"``: the thread on CUDA, whenever params chunks are written with
        ``O_DIRECT`` (rows of 1 MiB or more, uncompressed, on a file system that allows it) and whenever they
        are compressed (the compression then runs beside training); inline otherwise, for small buffered
        rows — what measured cheaper on a 2-core CPU (benchmarks/recorder_overhead.py).
    buffers : number of snapshot buffers for the writer thread (queue depth).
    gradient_stats : optional :class:`~trajkit.record.gradient_stats.GradientStats` (a loss closure and a
        data loader) measured at each snapshot: ``snapshots/metrics/{grad_mean_norm2, grad_var, noise_D}``.
    compressor, fsync : passed to :func:`trajkit.archive.create`.
    direct : write params chunks with ``O_DIRECT`` — None (default): when rows are ≥ 1 MiB, uncompressed and
        the file system accepts it (never with ``writer="inline"``); False: always through the page cache
        (e.g. on network file systems, where a direct write skips the client cache); True: wherever the
        buffers allow (falls back to buffered writes if the file system refuses).
    optimizer : the ``torch.optim.Optimizer`` (or a list of them) that updates ``model``. Given, a snapshot's
        copy no longer runs on the training thread inside ``step()``: it overlaps the next forward and
        backward pass (a copy thread on CPU, the side stream on CUDA) and each optimiser's next ``step()``
        waits for it (``register_step_pre_hook``; on CUDA a stream wait, never a host sync). Only with the
        writer thread (``self.overlap``). Do not pass it if the loop changes parameters outside the
        optimiser's ``step`` between ``rec.step`` and the next optimiser step.
    zero_copy : with ``optimizer=`` on CPU, move the parameters into one page-aligned row in the archive's
        layout (each ``p.data`` becomes a view of it; values, shapes and the ``Parameter`` objects the
        optimiser holds are unchanged), so a snapshot is written straight from the parameters' memory with
        no copy: the next optimiser step waits until the writer has read them. False (default): copy, as
        always. None: wherever possible — CPU tensors already of the storage ``dtype``, none sharing memory
        with another, no process group, the writer thread — and only while the writer has no earlier row
        still to read (otherwise that snapshot is copied into a buffer). A zero-copy row whose write kept
        the next optimiser step waiting (more than :data:`ZERO_COPY_STALL_S`: the write takes longer than a
        forward and backward pass, as when snapshots come at every step of a fast loop) makes the next
        :data:`ZERO_COPY_BACKOFF` snapshots copy, after which zero copy is tried again;
        ``zero_copy_rows`` counts the rows written without a copy. True: required (an error where
        impossible). A loop that later rebinds ``p.data`` (``model.to(...)``, ``model.half()``) is noticed
        at the next snapshot, which then copies again. Opt-in because it re-homes the model's parameters
        and, on the 2-core VM, its effect on the whole training time was not resolved (see the README).

    process_group : the ``torch.distributed`` group training the model (default: the default group when
        ``torch.distributed`` is initialised); create the Recorder on every rank of it. Replicated
        parameters (DDP): rank 0 writes. Sharded parameters (DTensor, FSDP2 ``fully_shard``): every rank
        writes the params chunks it owns, inline, in any storage ``dtype`` (see
        :mod:`trajkit.record.distributed`). ``False``: record this process alone, with no collective (e.g.
        replicated parameters recorded from rank 0 only, the other ranks creating no Recorder).
    dtype : storage dtype of the snapshots: ``"float32"`` (default), ``"float16"``, ``"bfloat16"`` or
        ``"float64"`` (a float64 model recorded losslessly); see :mod:`trajkit.archive.dtypes`.
    select : record only a parameter subset: tensor-name globs and roles as for ``Archive.select``
        (``"weights"``, ``"layer:0+*.bias"``, ...). The layout lists exactly the kept tensors (their layer
        ids as in the whole model); metadata ``/storage`` has the spec and the model's full count.
    online : a :class:`trajkit.online.TwoTime`: two-time sums measured during training into ``online/``
        (see :mod:`trajkit.online`). With a process group: measured on rank 0 for replicated parameters;
        for sharded parameters every rank measures its shards' part and the sums are all-reduced once per
        measured step (rank 0 writes ``online/``; :mod:`trajkit.record.online`). A resumed run measures on
        exactly when the waiting times still measured at its first step are snapshots stored in the
        parameters' dtype (see :mod:`trajkit.online`, "Resuming").
    """

    def __init__(self, path: str | os.PathLike, model: torch.nn.Module,
                 schedule: _schedules.Schedule | None = None, metadata: dict[str, Any] | None = None,
                 resume: str = "never", evaluate: Callable[..., dict[str, float]] | None = None,
                 writer: str = "auto", buffers: int = 3, compressor: str | None = None, fsync: bool = False,
                 direct: bool | None = None, dtype: str = "float32", select: str | None = None,
                 online: Any = None, optimizer: Any = None, process_group: Any = None,
                 gradient_stats: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 zero_copy: bool | None = False):
        if writer not in WRITER_MODES:
            raise TrajkitError(f"Recorder: writer={writer!r} is not one of {', '.join(WRITER_MODES)}")
        for name, value in (("direct", direct), ("zero_copy", zero_copy)):
            if not (value is None or isinstance(value, bool)):
                raise TrajkitError(f"Recorder: {name}={value!r} must be None (auto), True or False")
        if not isinstance(model, torch.nn.Module):
            raise TrajkitError(f"Recorder: model must be a torch.nn.Module, got {type(model).__name__}")
        optimizers = as_optimizers(optimizer)
        group = distributed.resolve_group(process_group)
        model = distributed.unwrap(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise TrajkitError(f"Recorder: {type(model).__name__} has no trainable parameters to record")
        self.model = model
        self.schedule = schedule if schedule is not None else _schedules.log(1, 10**6, 200)
        self._scheduled = self.schedule.membership()
        self.evaluate = evaluate
        self.gradient_stats = gradient_stats
        self._evaluate_takes_model = evaluate is not None and _takes_argument(evaluate)
        device = named[0][1].device
        dtype = check_dtype(dtype, "Recorder")
        full_layout = layout_from_named_parameters(named)
        named, layout = subset_layout(named, full_layout, select)
        n_params = sum(p.numel() for _, p in named)
        auto_meta = {
            "device": str(device),
            "model": {"class": distributed.class_name(model)},
            "schedule": self.schedule.spec,
            "storage": {"select": select, "n_params_model": sum(e["size"] for e in full_layout)},
        }
        self._dist = distributed.DistributedRecording(group, named) if group is not None else None
        if self._dist is not None:
            auto_meta["distributed"] = self._dist.metadata
            if not self._dist.writes_whole_rows:
                if writer == "thread" and self._dist.sharded:
                    raise TrajkitError("Recorder: writer='thread' with sharded parameters: a sharded snapshot's "
                                       "collectives run on the training thread; use writer='auto' or 'inline'")
                writer = "inline"
            self._dist.agree(str(path), {"path": os.path.abspath(path), "layout": layout,
                                         "schedule": self.schedule.spec, "resume": resume, "compressor": compressor,
                                         "fsync": fsync, "dtype": dtype, "select": select,
                                         "online": None if online is None else [getattr(online, f, None) for f in (
                                             "waiting_times", "lags", "select", "epsilon", "epsilon_factor",
                                             "per_layer")],
                                         "parameters": self._dist.metadata["parameters"]})
        sharded = self._dist is not None and self._dist.sharded
        lead = self._dist is None or self._dist.rank == 0
        # sharded: every rank measures its shards' part, all-reduced per measured step; replicated: rank 0 alone
        self._online = (OnlineTracker(online, model, full_layout, self.schedule, group if sharded else None)
                        if online is not None and (lead or sharded) else None)
        if self._online is not None:
            auto_meta["online"] = self._online.metadata
        meta = deep_merge(auto_meta, metadata or {})
        if zero_copy:   # required: say why not before anything is written
            why = ("it needs optimizer= (the next optimiser step waits for the writer)" if not optimizers else
                   "it needs the writer thread, not writer='inline'" if writer == "inline" else
                   "it does not work with a process group" if self._dist is not None else
                   None if FlatParams.eligible([p for _, p in named], dtype) else
                   f"the parameters must be CPU tensors of the storage dtype {dtype}, none sharing memory")
            if why is not None:
                raise TrajkitError(f"Recorder: zero_copy=True is not possible here: {why}; use zero_copy=None")
            writer = "thread"
        if direct is None and writer == "inline":
            direct = False  # a direct write blocks its thread for the device's whole write: not the training one
        make = functools.partial(ArchiveWriter, path, n_params, meta, layout, resume=resume, compressor=compressor,
                                 fsync=fsync, direct=direct, dtype=dtype)
        # A run continuing an archive with online= measures on (OnlineTracker.resume_at); every tracker reads
        # the archive's online rows before rank 0 can drop one (it does so at its first step, after the
        # collective that shares the archive), rank 0's inside its opening so that its error reaches all.
        online_rows: list[Any] = [False, None]   # committed online rows?, a rank > 0's error
        if self._online is not None and resume != "never" and (Path(path) / "zarr.json").exists():
            tracker, opener = self._online, make

            def make() -> ArchiveWriter:
                online_rows[0] = tracker.attach_existing(Path(path))
                return opener()

            if not lead:   # sharded ranks > 0: the same check; rank 0's error (the same) is raised below
                try:
                    online_rows[0] = tracker.attach_existing(Path(path))
                except TrajkitError as e:
                    online_rows[1] = e
        self._archive = distributed.open_archive(self._dist, make)
        if online_rows[1] is not None:   # rank 0 could open it (its view of the files differs from this rank's)
            raise online_rows[1]
        self.path = self._archive.path
        if self._online is not None and lead:
            self._online.open(self.path, fsync)
        self._resumed = self._archive.committed > 0 or self._archive.trace_committed > 0 or online_rows[0]
        if writer == "auto":  # the thread pays off when the host idles (CUDA), the write costs no CPU (direct)
            # or its CPU work is worth moving off the training thread (compression: +7.6 % inline, +1.7 %
            # on the thread at 200 log-spaced snapshots)
            writer = ("thread" if device.type == "cuda" or self._archive.direct or self._archive.compressor
                      else "inline")
        self.writer_mode = writer
        n_slots = max(1, buffers) if writer == "thread" else 1
        self._copier = (ParamCopier([p for _, p in named], self._archive.padded_size, n_slots, dtype=dtype)
                        if self._dist is None or self._dist.writes_whole_rows else None)
        self._named = named
        self._sink = make_sink(writer, n_slots)
        # the writer thread commits the rows that queue up behind it in groups (background.py); sharded
        # rows are committed by the distributed barrier instead, inline
        self._settle = None
        if (writer == "thread" and isinstance(self._archive, ArchiveWriter)
                and (self._dist is None or self._dist.writes_whole_rows)):
            self._archive.defer_commit = True
            self._settle = self._archive.publish
        #: whether snapshot copies overlap training (an optimizer was given and writes go to the thread)
        self.overlap = bool(optimizers) and writer == "thread"
        self._gate = StepGate(optimizers, device) if self.overlap else None
        self._flat = self._adopt_params(zero_copy, dtype)
        self._last_read: RowRead | None = None   # of the last row handed to the writer
        self._copy_next = 0   # snapshots still to copy after a zero-copy row held up the optimiser
        #: snapshots written straight from the parameters' memory (zero copy); the others were copied
        self.zero_copy_rows = 0
        self._trace = TraceBuffer()
        self._epoch: float | None = None
        self._closed = False
        self._broken: BaseException | None = None
        self._prev = NO_STEP   # the step of the last step() call

    # -- training-loop API ------------------------------------------------------------------------------

    def step(self, step: int, loss: Any = None, *, epoch: float | None = None, **scalars: Any) -> bool:
        """Record optimiser step ``step`` (the model now holds w(step)); snapshot if the schedule says so.

        ``loss`` and ``scalars`` go to ``trace/loss`` and ``trace/<name>`` (numbers or 0-d tensors).
        ``epoch`` (keyword) is stored with the snapshots. Returns True when a snapshot was taken.
        """
        # the common case — open, healthy, not resuming, an int step — is tested in one go: this runs every
        # optimiser step with the caches cold from the training step (benchmarks/recorder_overhead.py)
        if (self._closed or self._broken is not None or self._resumed or self._sink.error is not None
                or type(step) is not int or step <= self._prev):
            step = self._begin(step, epoch, stepping=True)
        elif epoch is not None:
            self._epoch = float(epoch)
        self._prev = step
        if loss is not None:
            scalars["loss"] = loss
        trace = self._trace
        trace.add(step, scalars)
        if self._online is not None and step in self._online.steps:
            self._online.measure(step)
        if self._scheduled(step):
            self._snapshot(step, None)
            return True
        if len(trace.rows) >= TRACE_FLUSH_ROWS:
            self._submit(None, None, None, None, trace.drain())
        return False

    def snapshot(self, step: int, metrics: dict[str, float] | None = None, *, epoch: float | None = None) -> None:
        """Force a snapshot of the current parameters at ``step`` (whatever the schedule)."""
        self._snapshot(self._begin(step, epoch), metrics)

    def restore(self) -> int | None:
        """Load the last committed snapshot into the model; return its step (None for an empty archive)."""
        self._check()
        if self._gate is not None:
            self._gate.wait()
        if self._archive.committed == 0:
            return None
        from trajkit.archive.reader import open_archive

        arch = open_archive(self.path)
        distributed.load_parameters([p for _, p in self._named], self._archive.layout,
                                    arch.params[arch.n_snapshots - 1, :])
        return int(arch.steps[-1])

    @property
    def last_step(self) -> int | None:
        """Step of the last committed snapshot (for the inline writer; may lag with the writer thread)."""
        return self._archive.last_step

    @property
    def zero_copy(self) -> bool:
        """Whether snapshots are written straight from the parameters' memory (see ``zero_copy``)."""
        return self._flat is not None

    @property
    def direct(self) -> bool:
        """Whether params chunks are written with ``O_DIRECT`` (see :mod:`trajkit.archive.directio`)."""
        return self._archive.direct

    @property
    def n_params(self) -> int:
        return self._archive.n_params

    def flush(self) -> None:
        """Commit the trace rows buffered so far and wait until every pending snapshot is written: the archive
        then holds everything up to the last ``step()`` (call it before a training checkpoint is saved)."""
        self._check()
        batch = self._trace.drain()
        if batch is not None:
            self._submit(None, None, None, None, batch)
        self._drain_sink()

    def update_metadata(self, extra: dict[str, Any]) -> None:
        """Merge ``extra`` into the archive metadata (e.g. a final status). Waits for pending writes."""
        self._drain_sink()
        self._archive.update_metadata(extra)

    def close(self) -> None:
        """Flush traces and pending snapshots, finalise the archive, release its lock. Re-raises writer errors."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._broken is None:
                batch = self._trace.drain()
                if batch is not None:
                    self._submit(None, None, None, None, batch)
        finally:
            try:
                if self._gate is not None:
                    self._gate.close()
                if self._online is not None:
                    self._online.close()
            finally:
                try:
                    self._sink.close()
                finally:
                    if self._copier is not None:
                        self._copier.close()
                    self._archive.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Recorder({str(self.path)!r}, n_params={self.n_params}, schedule={self.schedule!r}, "
                f"writer={self.writer_mode!r}, overlap={self.overlap})")

    # -- internals --------------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise TrajkitError(f"{self.path}: the Recorder is closed")
        if self._broken is not None:
            raise RecordError(f"{self.path}: recording stopped after an earlier write error "
                              f"({type(self._broken).__name__}: {self._broken})")
        try:
            self._sink.check()
        except BaseException as e:
            self._broken = e
            raise

    def _begin(self, step: Any, epoch: float | None, stepping: bool = False) -> int:
        """Checks shared by step() and snapshot(); the first call after reopening drops rows >= step."""
        self._check()
        step = _as_step(step)
        if stepping and step <= self._prev and not self._resumed:
            raise TrajkitError(f"{self.path}: rec.step({step}) after rec.step({self._prev}): steps must increase "
                               "strictly, one call per optimiser step (count the steps, not the epochs); "
                               "nothing was recorded for this call")
        if self._resumed:
            self._resumed = False
            try:   # online first: it checks that it can go on before the archive drops a row
                if self._online is not None:
                    self._online.resume_at(step, self.path)
                self._archive.truncate(step)
            except BaseException as e:
                self._broken = e
                raise
        if epoch is not None:
            self._epoch = float(epoch)
        return step

    def _snapshot(self, step: int, metrics: dict[str, float] | None) -> None:
        merged = dict(metrics or {})
        if self.evaluate is not None:
            extra = self.evaluate(self.model) if self._evaluate_takes_model else self.evaluate()
            for k, v in (extra or {}).items():
                merged.setdefault(k, _to_float(v))
        if self.gradient_stats is not None:
            for k, v in self.gradient_stats(self.model).items():
                merged.setdefault(k, v)
        trace = self._trace.drain()
        if self._dist is not None and not self._dist.writes_whole_rows:
            try:
                self._dist.snapshot(self._archive, step, self._archive.elapsed(), self._epoch, merged, trace)
            except BaseException as e:
                self._broken = e
                raise
            return
        if self._flat is not None and not self._flat.intact():
            self._flat = None   # the loop moved the parameters: copy from now on
        read = None
        if self._flat is not None:   # zero copy: rows are marked read, so the next snapshot knows
            last, read = self._last_read, RowRead()
            self._last_read = read
            idle = last is None or last.done()
            # only a zero-copy row's RowRead is waited on by the optimiser step (a copied row's gate is its
            # copy job), so a wait means the last row went out uncopied and held up training
            if last is not None and last.waited > ZERO_COPY_STALL_S:
                self._copy_next = ZERO_COPY_BACKOFF   # copy for a while
        if read is not None and idle and not self._copy_next:
            k, slot = None, self._flat.slot   # the writer reads the parameters themselves
            slot.params_read = read
            self.zero_copy_rows += 1
        else:
            self._copy_next = max(0, self._copy_next - 1)
            k = self._sink.acquire()
            slot = self._copier.copy_into(k, overlap=self.overlap)
        if self._gate is not None:
            self._gate.hold(slot.params_read)
        self._submit(k, slot, step, merged, trace, read)

    def _submit(self, k, slot, step, metrics, trace, read: RowRead | None = None) -> None:
        item = WriteItem(k, slot, step, self._archive.elapsed() if slot is not None else None,
                         self._epoch if slot is not None else None, metrics, trace, read)
        try:
            self._sink.submit(Handover(k, functools.partial(write_item, self._archive, item), str(self.path), step,
                                       self._settle, None if read is None else read.set))
        except BaseException as e:
            self._broken = e
            raise

    def _adopt_params(self, zero_copy: bool | None, dtype: str) -> FlatParams | None:
        """The parameters moved into one archive row (``zero_copy``), or None."""
        if zero_copy is False:
            return None
        params = [p for _, p in self._named]
        if self.overlap and self._dist is None and FlatParams.eligible(params, dtype):   # eligible: CPU only
            return FlatParams(params, self._archive.padded_size, dtype)
        return None

    def _drain_sink(self) -> None:
        if self.writer_mode == "thread":
            self._sink.close()
            self._sink = make_sink("thread", len(self._copier.slots))


#: ``Recorder._prev`` before the first ``step()``
NO_STEP = -(1 << 63)


def _as_step(step: Any) -> int:
    try:
        if isinstance(step, bool):
            raise TypeError
        return operator.index(step)
    except TypeError:
        raise TrajkitError(f"Recorder.step: step must be an integer optimiser step, got {step!r}") from None


def _to_float(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().cpu())
    return float(v)


def _takes_argument(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return bool(params)
