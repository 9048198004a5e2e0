"""Writing trajectory archives: chunk-aligned raw writes plus an atomic commit marker.

Each snapshot row of ``snapshots/params`` is its own set of zarr v3 chunks (``c.<row>.<j>``), written as
raw little-endian float32 bytes with one ``write`` per chunk — never a read-modify-write of a chunk that
other snapshots share. The small 1-D arrays (step, time, epoch, metrics, traces) are written in place
with ``pwrite`` at the rows' byte offsets. Only then is the commit marker (``committed`` and, for the trace
rows written with the snapshot, ``trace_committed`` in ``snapshots/zarr.json``) advanced, by one atomic
rename; readers trust rows ``< committed``. A crash, even SIGKILL, loses at most the snapshot in flight.

>>> import numpy as np, trajkit
>>> with trajkit.archive.create("/tmp/doc.trajkit", n_params=3, resume="allow") as w:   # doctest: +SKIP
...     w.append(0, np.zeros(3, np.float32))
"""

from __future__ import annotations

import os
import shutil
import time as _time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import directio, dtypes
from trajkit.archive import format as fmt
from trajkit.archive.layout import Layout, check_layout, single_tensor_layout
from trajkit.archive.lock import WriterLock
from trajkit.archive.metadata import build_metadata, deep_merge, validate_metadata
from trajkit.errors import ArchiveError

RESUME_MODES = ("never", "allow", "must")
COMPRESSORS = (None, "zstd")


class _Column:
    """A growable 1-D zarr array written one row (or a run of rows) at a time, in place.

    A chunk file is created once, whole, filled with the fill value; rows are then written into it with
    ``pwrite`` at their byte offset through a file descriptor kept open. A write touches only the bytes
    of rows not yet committed, so a crash at any moment leaves every committed row intact — without the
    cost of a rename per write (on ext4 a rename over an existing file forces a data flush, ~0.2 ms).
    """

    def __init__(self, root: Path, name: str, dtype: str, chunk: int, length: int, create: bool,
                 capacity: int, fsync: bool):
        self.dir = root / name
        self.name, self.dtype, self.chunk, self.fsync = name, np.dtype(dtype).newbyteorder("<"), chunk, fsync
        self._fill = np.nan if self.dtype.kind == "f" else -1
        self._meta = fmt.MarkerFile(self.dir / "zarr.json", fsync)   # rewritten as it grows: no block freed
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.shape0 = max(capacity, 1)
            self._write_meta()
        else:
            self.shape0 = int(fmt.read_json(self.dir / "zarr.json")["shape"][0])
        self._chunk_idx = -1
        self._fd: int | None = None
        self.length = length

    def _write_meta(self, shape0: int | None = None) -> None:
        self._meta.write(fmt.json_bytes(fmt.array_json((shape0 if shape0 is not None else self.shape0,),
                                                       (self.chunk,), self.dtype.name)))

    def _chunk_path(self, c: int) -> Path:
        return self.dir / "c" / str(c)

    def _open(self, c: int) -> int:
        if c == self._chunk_idx and self._fd is not None:
            return self._fd
        self.release()
        p = self._chunk_path(c)
        nbytes = self.chunk * self.dtype.itemsize
        if not p.exists() or p.stat().st_size != nbytes:
            # a new chunk (or one torn while being created): every row in it is uncommitted
            p.parent.mkdir(exist_ok=True)
            fmt.atomic_write_bytes(p, np.full(self.chunk, self._fill, dtype=self.dtype).tobytes(), self.fsync)
        self._fd = os.open(p, os.O_WRONLY)
        self._chunk_idx = c
        return self._fd

    def write(self, start: int, values: Any) -> None:
        """Write ``values`` at rows ``start, start+1, ...`` (a crash never touches rows before ``start``)."""
        values = np.asarray(values, dtype=self.dtype).ravel()
        end = start + values.size
        if end > self.shape0:
            self.shape0 = max(2 * self.shape0, end)
            self._write_meta()
        pos = start
        while pos < end:
            c = pos // self.chunk
            fd = self._open(c)
            lo = pos - c * self.chunk
            n = min(self.chunk - lo, end - pos)
            os.pwrite(fd, values[pos - start:pos - start + n].tobytes(), lo * self.dtype.itemsize)
            if self.fsync:
                os.fsync(fd)
            pos += n
        self.length = end

    def truncate(self, length: int) -> None:
        self.length = length

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._chunk_idx = -1

    def abandon(self) -> None:
        """Close the chunk file and delete the kept versions of ``zarr.json`` without finalizing."""
        self.release()
        self._meta.close()

    def finalize(self, length: int) -> None:
        """Set the array's shape to ``length`` and delete chunk files wholly beyond it."""
        self.release()
        self.shape0 = length
        self._write_meta(length)
        self._meta.close()
        last = (length - 1) // self.chunk if length else -1
        cdir = self.dir / "c"
        if cdir.exists():
            for p in cdir.iterdir():
                if p.name.startswith(".") or (p.name.isdigit() and int(p.name) > last):
                    p.unlink()


class ArchiveWriter:
    """Appends snapshots to a trajectory archive (one writer at a time; see :func:`create`).

    Attributes: ``path``, ``n_params`` (N), ``layout``, ``metadata``, ``dtype`` (storage dtype of the
    params, :mod:`trajkit.archive.dtypes`; ``dtype=None`` keeps an existing archive's, float32 for a new one),
    ``committed`` (rows readers trust),
    ``last_step`` (step of the last committed row, or None), ``padded_size`` (length of a row buffer
    accepted by :meth:`write_row`: N rounded up to whole chunks).

    ``defer_commit`` (default False): :meth:`commit_row` then leaves the on-disk commit marker where it is
    and :meth:`publish` moves it over every row committed since, in one rename — a group commit, which the
    Recorder's writer thread makes when snapshots queue up behind it (:mod:`trajkit.record.background`).
    Until then those rows are written but not yet visible: a crash loses them, never more, and every other
    public method that writes a marker or the metadata (flush, truncate, update_metadata, close) publishes first.
    """

    #: commit rows in groups (see the class docstring)
    defer_commit = False
    _unpublished = False

    def __init__(self, path: str | os.PathLike, n_params: int, metadata: dict[str, Any] | None = None,
                 layout: Layout | None = None, *, resume: str = "never", capacity: int = 256,
                 compressor: str | None = None, fsync: bool = False, chunk_bytes: int = fmt.PARAMS_CHUNK_BYTES,
                 direct: bool | None = False, dtype: str | None = None):
        if "://" in str(path):
            raise ArchiveError(f"{path}: archives are written to local paths; write locally and copy the "
                               "directory to object storage (reading from URLs works)")
        if resume not in RESUME_MODES:
            raise ArchiveError(f"{path}: resume={resume!r} is not one of {', '.join(RESUME_MODES)}")
        if compressor not in COMPRESSORS:
            raise ArchiveError(f"{path}: compressor={compressor!r} is not supported; use None or 'zstd'")
        if isinstance(n_params, bool) or not isinstance(n_params, int | np.integer) or n_params < 1:
            raise ArchiveError(f"{path}: n_params must be a positive integer, got {n_params!r}")
        requested = None if dtype is None else dtypes.check_dtype(dtype, str(path))
        self.path = Path(path)
        self.n_params = int(n_params)
        self.fsync = fsync
        self._closed = False
        #: (step, time, epoch, metrics) of committed rows whose 1-D values are not written yet (``defer_commit``)
        self._rows_pending: list[tuple[int, float, float, dict[str, float]]] = []
        self._marker_files: dict[Path, fmt.MarkerFile] = {}   # metadata files rewritten while recording
        self._snapshots_marker = self.path / fmt.SNAPSHOTS / "zarr.json"   # rewritten at every commit
        self._trace_marker = self.path / fmt.TRACE / "zarr.json"
        self._t0 = _time.perf_counter()
        self._time_offset = 0.0
        exists = self.path.exists()
        if exists and not self.path.is_dir():
            raise ArchiveError(f"{self.path}: exists and is a file, not an archive directory; choose another path")
        if exists and resume == "never":
            raise ArchiveError(f"{self.path}: archive already exists; pass resume='allow' to continue it, "
                               "or remove it / choose another path")
        if not exists and resume == "must":
            raise ArchiveError(f"{self.path}: resume='must' but no archive exists there")
        if exists and not (self.path / "zarr.json").exists() and any(self.path.iterdir()):
            raise ArchiveError(f"{self.path}: directory exists but is not a trajkit archive (no zarr.json)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.path)
        try:
            if (self.path / "zarr.json").exists():
                self._open_existing(layout, requested)
            else:
                self.dtype = requested or dtypes.DEFAULT_DTYPE
                self._create(layout, metadata, capacity, compressor, chunk_bytes)
        except BaseException:
            self._lock.release(closed=None)   # nothing was written: the lock file says what it said
            if not exists:  # a failed create (e.g. invalid metadata) leaves nothing behind
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._staging = directio.aligned_empty(self.padded_size, dtypes.fill_value(self.dtype),
                                               dtypes.storage_numpy(self.dtype))
        if direct is None:  # auto: large uncompressed rows on a file system that allows O_DIRECT
            direct = (self.compressor is None
                      and self.chunk_cols * dtypes.itemsize(self.dtype) >= directio.DIRECT_MIN_BYTES
                      and directio.probe(self.path / fmt.PARAMS))
        #: whether params chunks are written with O_DIRECT (page-aligned rows; see trajkit.archive.directio)
        self.direct = bool(direct)
        self._trace_pending: dict[str, list[np.ndarray]] = {}
        self._trace_steps: list[np.ndarray] = []
        self._nonfinite: list[int] = list((self.metadata.get("nonfinite") or {}).get("steps", []))
        self._t0 = _time.perf_counter()

    # -- creation / reopening -------------------------------------------------------------------------

    def _create(self, layout, metadata, capacity, compressor, chunk_bytes) -> None:
        layout = layout if layout is not None else single_tensor_layout(self.n_params)
        check_layout(layout, self.n_params, str(self.path))
        meta = build_metadata(self.n_params, layout, deep_merge(metadata or {}, {"storage": {"dtype": self.dtype}}))
        validate_metadata(meta, str(self.path))
        self.metadata, self.layout = meta, layout
        self.chunk_cols = fmt.params_chunk_cols(self.n_params, chunk_bytes, dtypes.itemsize(self.dtype))
        self.compressor = compressor
        self._sep = fmt.PARAMS_SEPARATOR
        root = self.path
        (root / fmt.SNAPSHOTS).mkdir(exist_ok=True)
        (root / fmt.METRICS).mkdir(exist_ok=True)
        (root / fmt.TRACE).mkdir(exist_ok=True)
        pdir = root / fmt.PARAMS
        pdir.mkdir(exist_ok=True)
        self._params_shape0 = max(capacity, 1)
        self._write_params_meta(self._params_shape0)
        fmt.write_json(root / fmt.METRICS / "zarr.json", fmt.group_json(), self.fsync)
        self.committed, self.trace_committed = 0, 0
        self._write_commit()
        self._write_trace_commit()
        self._cols = {k: _Column(root, k, dt, fmt.SNAPSHOT_SCALAR_CHUNK, 0, True, capacity, self.fsync)
                      for k, dt in ((fmt.STEP, "int64"), (fmt.TIME, "float64"), (fmt.EPOCH, "float64"))}
        self._metric_cols: dict[str, _Column] = {}
        self._trace_cols = {"step": _Column(root, fmt.TRACE_STEP, "int64", fmt.TRACE_CHUNK, 0, True, 0,
                                            self.fsync)}
        self._write_root()
        self.last_step: int | None = None
        self._steps: list[int] = []
        self._trace_step_buf = np.zeros(1024, np.int64)

    def _open_existing(self, layout, dtype: str | None) -> None:
        from trajkit.archive.reader import open_archive

        arch = open_archive(self.path)
        meta = arch.metadata
        if meta["model"]["n_params"] != self.n_params:
            raise ArchiveError(f"{self.path}: cannot resume: archive has model.n_params="
                               f"{meta['model']['n_params']} but this run has {self.n_params}")
        if layout is not None and [dict(e) for e in layout] != meta["layout"]:
            raise ArchiveError(f"{self.path}: cannot resume: the model's parameter layout differs from the "
                               "archive's (/layout); record to a new path")
        self.dtype = arch.storage_dtype
        if dtype is not None and dtype != self.dtype:
            raise ArchiveError(f"{self.path}: cannot resume: the archive stores {self.dtype} parameters, this run "
                               f"asks for dtype={dtype}; pass dtype={self.dtype!r} or record to a new path")
        self.metadata, self.layout = meta, meta["layout"]
        pmeta = fmt.read_json(self.path / fmt.PARAMS / "zarr.json")
        self.chunk_cols = int(pmeta["chunk_grid"]["configuration"]["chunk_shape"][1])
        self._sep = fmt.key_separator(pmeta)
        self.compressor = "zstd" if any(c["name"] == "zstd" for c in pmeta["codecs"]) else None
        self._params_shape0 = int(pmeta["shape"][0])
        self.committed, self.trace_committed = arch.n_snapshots, arch.trace_length
        root = self.path
        self._cols = {k: _Column(root, k, dt, fmt.SNAPSHOT_SCALAR_CHUNK, self.committed, False, 0, self.fsync)
                      for k, dt in ((fmt.STEP, "int64"), (fmt.TIME, "float64"), (fmt.EPOCH, "float64"))}
        self._metric_cols = {name: _Column(root, f"{fmt.METRICS}/{name}", "float64", fmt.SNAPSHOT_SCALAR_CHUNK,
                                           self.committed, False, 0, self.fsync) for name in arch.metrics}
        self._trace_cols = {name: _Column(root, f"{fmt.TRACE}/{name}", "int64" if name == "step" else "float64",
                                          fmt.TRACE_CHUNK, self.trace_committed, False, 0, self.fsync)
                            for name in arch.trace}
        self._steps = list(arch.steps.tolist())
        tsteps = arch.trace.get("step", np.zeros(0, np.int64))
        self._trace_step_buf = np.zeros(max(1024, 2 * tsteps.size), np.int64)
        self._trace_step_buf[:tsteps.size] = tsteps
        self.last_step = int(arch.steps[-1]) if self.committed else None
        self._time_offset = float(arch.times[-1]) if self.committed else 0.0

    def _write_params_meta(self, shape0: int) -> None:
        tag = {dtypes.DTYPE_ATTR: self.dtype} if self.dtype == "bfloat16" else None
        doc = fmt.array_json((shape0, self.n_params), (1, self.chunk_cols), dtypes.zarr_data_type(self.dtype),
                             attributes=tag, separator=self._sep)
        if self.compressor == "zstd":
            doc["codecs"].append({"name": "zstd", "configuration": {"level": 3, "checksum": False}})
        self._rewrite(self.path / fmt.PARAMS / "zarr.json", doc)

    def _write_root(self) -> None:
        self._rewrite(self.path / "zarr.json", fmt.group_json({fmt.ROOT_ATTR: self.metadata}))

    def _marker_file(self, path: Path) -> fmt.MarkerFile:
        marker = self._marker_files.get(path)
        if marker is None:
            marker = self._marker_files[path] = fmt.MarkerFile(path, self.fsync)
        return marker

    def _rewrite(self, path: Path, doc: dict[str, Any], compact: bool = False) -> None:
        """Rewrite a metadata document (a commit marker, an array's shape, the root metadata) atomically
        without freeing a disk block (:class:`~trajkit.archive.format.MarkerFile`)."""
        self._marker_file(path).write(fmt.json_bytes(doc, compact))

    def _write_commit(self) -> None:
        """Advance the snapshot commit marker; it carries the trace marker too (one rename per snapshot)."""
        self._write_rows()   # never a marker over rows whose scalars are not on disk
        attrs = {"committed": self.committed, fmt.TRACE_COMMITTED_ATTR: self.trace_committed}
        self._rewrite(self._snapshots_marker, fmt.group_json(attrs), compact=True)

    def _write_trace_commit(self) -> None:
        self._rewrite(self._trace_marker, fmt.group_json({"committed": self.trace_committed}), compact=True)

    def _close_markers(self) -> None:
        """Delete the versions the metadata files kept (:class:`~trajkit.archive.format.MarkerFile`)."""
        for marker in self._marker_files.values():
            marker.close()

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def padded_size(self) -> int:
        return -(-self.n_params // self.chunk_cols) * self.chunk_cols

    @property
    def key_separator(self) -> str:
        """The params chunk key separator (``"."``; ``"/"`` in archives written before that choice)."""
        return self._sep

    @property
    def steps(self) -> list[int]:
        """Steps of the committed snapshots, in row order."""
        return list(self._steps)

    def elapsed(self) -> float:
        """Seconds since this run started (continuing the archive's clock on resume)."""
        return self._time_offset + (_time.perf_counter() - self._t0)

    def append(self, step: int, params: Any, time: float | None = None, epoch: float | None = None,
               metrics: dict[str, float] | None = None) -> int:
        """Append one snapshot: ``params`` is a float array-like or tensor of length N. Returns its row."""
        self._check_open()
        if hasattr(params, "detach"):
            params = params.detach().to("cpu").numpy()
        arr = np.asarray(params)
        if arr.dtype.kind != "f":
            raise ArchiveError(f"{self.path}: snapshots/params needs a float array, got dtype {arr.dtype}; "
                               "convert with .astype(np.float32)")
        if arr.ndim != 1 or arr.size != self.n_params:
            raise ArchiveError(f"{self.path}: snapshots/params row must have length {self.n_params}, got shape "
                               f"{tuple(arr.shape)}; flatten the parameters in layout order")
        self._staging[: self.n_params] = dtypes.encode(arr, self.dtype)
        return self.write_row(step, self._staging, time=time, epoch=epoch, metrics=metrics)

    def write_row(self, step: int, row: np.ndarray, time: float | None = None, epoch: float | None = None,
                  metrics: dict[str, float] | None = None, finite: bool | None = None,
                  after_read: Callable[[], None] | None = None) -> int:
        """Write a snapshot from ``row``, a C-contiguous array of length :attr:`padded_size` in the storage
        dtype (:func:`trajkit.archive.dtypes.storage_numpy` of :attr:`dtype`; float32 by default).

        The zero-copy path used by the Recorder: the entries past N are chunk padding and must be NaN.
        ``finite``: whether the N values are all finite, when the caller already knows (None: checked here).
        ``after_read``: called once ``row`` is no longer read (its chunks written, its finiteness checked),
        before the commit — the Recorder lets the parameters change from then on.
        """
        self._check_open()
        step = self._check_step(step)
        try:
            self.write_chunks(row, range(self.padded_size // self.chunk_cols))
            if finite is None:
                finite = dtypes.all_finite(row[: self.n_params], self.dtype)
        finally:
            if after_read is not None:
                after_read()
        return self.commit_row(step, time, epoch, metrics, finite=finite)

    def write_chunks(self, row: np.ndarray, chunks: Sequence[int]) -> None:
        """Write params chunks ``chunks`` (indices ``j``) of the next snapshot row, uncommitted; ``row`` holds
        them back to back (``len(chunks) * chunk_cols`` float32). Distributed recording writes the other
        chunks of the row from other processes (:mod:`trajkit.record.distributed`) before :meth:`commit_row`."""
        self._check_open()
        k = self.committed
        if k >= self._params_shape0:
            self._params_shape0 = max(2 * self._params_shape0, k + 1)
            self._write_params_meta(self._params_shape0)
        write_params_chunks(self.path / fmt.PARAMS, k, row, chunks, self.chunk_cols, self._sep, self.compressor,
                            self.fsync, self.direct)

    def commit_row(self, step: int, time: float | None = None, epoch: float | None = None,
                   metrics: dict[str, float] | None = None, finite: bool = True) -> int:
        """Write the 1-D rows of the snapshot whose params chunks are written, and commit it (§5 of
        docs/FORMAT.md); ``finite`` False flags the row in ``/nonfinite``. Returns its row."""
        self._check_open()
        step = self._check_step(step)
        k = self.committed
        self._rows_pending.append((step, self.elapsed() if time is None else float(time),
                                   np.nan if epoch is None else float(epoch),
                                   {name: float(value) for name, value in (metrics or {}).items()}))
        self.committed = k + 1
        self._unpublished = True
        if not self.defer_commit:   # deferred (a group commit): the rows' scalars and the marker go at publish()
            self.publish()
        self.last_step = step
        self._steps.append(step)
        if not finite:
            self._flag_nonfinite(step)
        return k

    def add_trace(self, steps: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Buffer per-step scalars (``trace/step`` and ``trace/<name>``); written at the next commit."""
        steps = np.asarray(steps, dtype=np.int64)
        self._trace_steps.append(steps)
        n_before = sum(a.size for a in self._trace_steps) - steps.size
        for name in set(self._trace_pending) | set(columns):
            if name == "step":
                raise ArchiveError(f"{self.path}: 'step' is reserved in trace/; rename the scalar")
            pending = self._trace_pending.setdefault(name, [])
            if not pending and n_before:
                pending.append(np.full(n_before, np.nan))
            vals = columns.get(name)
            pending.append(np.full(steps.size, np.nan) if vals is None else np.asarray(vals, np.float64).ravel())

    def publish(self) -> None:
        """Write the step, time, epoch and metric values and the trace rows of the rows :meth:`commit_row`
        committed with ``defer_commit`` set — one write per array for the group — then the commit marker over
        them."""
        if self._unpublished:
            self._unpublished = False
            self._flush_trace(commit=False)
            self._write_commit()   # writes the pending 1-D values first

    def _write_rows(self) -> None:
        """Write the 1-D values of the committed rows not yet on disk (the last ``len(_rows_pending)`` rows):
        one write per column for all of them."""
        rows, self._rows_pending = self._rows_pending, []
        if not rows:
            return
        k0 = self.committed - len(rows)
        for col, j in ((fmt.STEP, 0), (fmt.TIME, 1), (fmt.EPOCH, 2)):
            self._cols[col].write(k0, [r[j] for r in rows])
        names = {name for r in rows for name in r[3]}
        for name in names:
            self._metric_column(name)
        for name, col in self._metric_cols.items():
            col.write(k0, [r[3].get(name, np.nan) for r in rows])

    def flush(self) -> None:
        """Write buffered trace rows and advance the trace commit marker."""
        self._check_open()
        self.publish()
        self._flush_trace()

    def truncate(self, step: int) -> int:
        """Drop committed snapshot and trace rows with step ``>= step`` (used when resuming). Returns rows dropped."""
        self._check_open()
        keep = int(np.searchsorted(self._committed_steps(), step, side="left"))
        tkeep = int(np.searchsorted(self._trace_committed_steps(), step, side="left"))
        return self.truncate_rows(keep, tkeep)

    def truncate_rows(self, keep: int, trace_keep: int | None = None) -> int:
        """Keep the first ``keep`` committed snapshot rows (and ``trace_keep`` trace rows); returns rows dropped.

        Row-based form of :meth:`truncate`, used by :func:`trajkit.archive.repair` where the rows after a
        damaged chunk cannot be trusted to hold increasing steps.
        """
        self._check_open()
        self.publish()
        steps = self._committed_steps()
        keep = max(0, min(int(keep), self.committed))
        tkeep = self.trace_committed if trace_keep is None else max(0, min(int(trace_keep), self.trace_committed))
        dropped = self.committed - keep
        changed = (keep, tkeep) != (self.committed, self.trace_committed)
        if keep != self.committed:
            self.committed = keep
            for col in (*self._cols.values(), *self._metric_cols.values()):
                col.truncate(keep)
            self.last_step = int(steps[keep - 1]) if keep else None
        if tkeep != self.trace_committed:
            self.trace_committed = tkeep
            self._write_trace_commit()   # first the smaller trace marker, then the snapshot marker with it
            for col in self._trace_cols.values():
                col.truncate(tkeep)
        if changed:
            self._write_commit()
        self._steps = list(steps[:keep].tolist())
        return dropped

    def update_metadata(self, extra: dict[str, Any]) -> None:
        """Merge ``extra`` into the root metadata (validated; written atomically)."""
        self._check_open()
        self.publish()
        meta = deep_merge(self.metadata, fmt.to_jsonable(extra))
        validate_metadata(meta, str(self.path))
        self.metadata = meta
        self._write_root()

    def close(self) -> None:
        """Flush traces, trim every array's shape to its committed length and release the lock."""
        if self._closed:
            return
        try:
            self.publish()
            self._flush_trace(commit=False)
            self._write_trace_commit()   # trace/zarr.json catches up with the last snapshot commit
            self.finalize()
        finally:
            self._closed = True
            self._close_markers()
            self._lock.release()

    def abort(self) -> None:
        """Release the lock and open files without flushing or finalizing; committed rows stay as they are."""
        if self._closed:
            return
        self._closed = True
        self._close_markers()
        for col in (*self._cols.values(), *self._metric_cols.values(), *self._trace_cols.values()):
            col.abandon()
        self._lock.release(closed=False)   # not finalized: the archive reads as interrupted

    def finalize(self) -> None:
        """Shrink the arrays to the committed rows and remove chunk files of uncommitted rows."""
        for col in (*self._cols.values(), *self._metric_cols.values()):
            col.finalize(self.committed)
        for col in self._trace_cols.values():
            col.finalize(self.trace_committed)
        self._params_shape0 = self.committed
        self._write_params_meta(self.committed)
        pdir = self.path / fmt.PARAMS
        for row, p in fmt.params_chunk_files(pdir, self._sep):
            if row >= self.committed:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        cdir = pdir / "c"
        if self._sep == "/" and cdir.is_dir():   # debris in the row directory level
            for p in cdir.iterdir():
                if not p.name.isdigit():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArchiveWriter({str(self.path)!r}, n_params={self.n_params}, committed={self.committed})"

    # -- internals -----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ArchiveError(f"{self.path}: the writer is closed; open a new one with resume='allow'")

    def _committed_steps(self) -> np.ndarray:
        return np.asarray(self._steps, dtype=np.int64)

    def _trace_committed_steps(self) -> np.ndarray:
        return self._trace_step_buf[:self.trace_committed]

    def _check_step(self, step: Any) -> int:
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise ArchiveError(f"{self.path}: snapshots/step must be an integer, got {step!r}")
        step = int(step)
        if step < 0:
            raise ArchiveError(f"{self.path}: snapshots/step must be >= 0, got {step}")
        if self.last_step is not None and step <= self.last_step:
            raise ArchiveError(f"{self.path}: snapshots/step must increase strictly: got {step} after "
                               f"{self.last_step}; to overwrite later rows resume with truncate({step})")
        return step

    def _metric_column(self, name: str) -> _Column:
        col = self._metric_cols.get(name)
        if col is None:
            if not name or "/" in name or name.startswith("."):
                raise ArchiveError(f"{self.path}: metric name {name!r} is not a valid array name")
            col = _Column(self.path, f"{fmt.METRICS}/{name}", "float64", fmt.SNAPSHOT_SCALAR_CHUNK,
                          0, True, max(self.committed + 1, 64), self.fsync)
            self._metric_cols[name] = col
        return col

    def _flush_trace(self, commit: bool = True) -> None:
        """Write buffered trace rows; ``commit`` advances ``trace/zarr.json`` (a snapshot commit instead
        carries the new trace length in ``snapshots/zarr.json``, saving a rename per snapshot)."""
        if not self._trace_steps:
            return
        steps = np.concatenate(self._trace_steps) if len(self._trace_steps) > 1 else self._trace_steps[0]
        n_prev = self.trace_committed
        # (steps[1:] <= steps[:-1]), not np.diff: this runs on the writer thread at every commit, and np.diff's
        # Python wrapper cost ~0.1 ms there
        if steps.size and ((n_prev and steps[0] <= self._trace_step_buf[n_prev - 1])
                           or (steps.size > 1 and bool(np.less_equal(steps[1:], steps[:-1]).any()))):
            self._trace_steps, self._trace_pending = [], {}
            raise ArchiveError(f"{self.path}: trace/step must increase strictly; rec.step() was called with a "
                               "repeated or decreasing step")
        start = self.trace_committed
        self._trace_cols["step"].write(start, steps)
        for name, parts in self._trace_pending.items():
            vals = np.concatenate(parts)
            if vals.size < steps.size:
                vals = np.concatenate([vals, np.full(steps.size - vals.size, np.nan)])
            col = self._trace_cols.get(name)
            if col is None:
                if "/" in name or not name:
                    raise ArchiveError(f"{self.path}: trace name {name!r} is not a valid array name")
                col = _Column(self.path, f"{fmt.TRACE}/{name}", "float64", fmt.TRACE_CHUNK, 0, True,
                              start + steps.size, self.fsync)
                self._trace_cols[name] = col
            col.write(start, vals)
        for name, col in self._trace_cols.items():
            if name != "step" and name not in self._trace_pending:
                col.write(start, np.full(steps.size, np.nan))
        end = start + steps.size
        if end > self._trace_step_buf.size:
            grown = np.zeros(max(2 * self._trace_step_buf.size, end), np.int64)
            grown[:start] = self._trace_step_buf[:start]
            self._trace_step_buf = grown
        self._trace_step_buf[start:end] = steps
        self.trace_committed = end
        if commit:
            self._write_trace_commit()
        self._trace_steps, self._trace_pending = [], {}

    def _flag_nonfinite(self, step: int) -> None:
        if not self._nonfinite:
            warnings.warn(f"{self.path}: NaN or inf in parameters at step {step} (the run diverged); "
                          "flagged in metadata /nonfinite", RuntimeWarning, stacklevel=3)
        self._nonfinite.append(step)
        steps = self._nonfinite[-1000:]
        self.metadata["nonfinite"] = {"first_step": self._nonfinite[0], "count": len(self._nonfinite),
                                      "steps": steps}
        self._write_root()


def write_params_chunks(pdir: Path, k: int, row: np.ndarray, chunks: Sequence[int], chunk_cols: int, sep: str,
                        compressor: str | None, fsync: bool, direct: bool) -> None:
    """Create the chunk files ``chunks`` of params row ``k`` under ``pdir`` from ``row`` (the chunks back to
    back), compressed when ``compressor`` is ``"zstd"``; uncommitted until the marker says so."""
    if sep == "/":
        (pdir / "c" / str(k)).mkdir(parents=True, exist_ok=True)
    for i, j in enumerate(chunks):
        data = memoryview(row[i * chunk_cols:(i + 1) * chunk_cols])
        if compressor == "zstd":
            data = _zstd().encode(bytes(data))
        fmt.write_chunk_file(fmt.params_chunk_path(pdir, k, j, sep), data, fsync, direct=direct)


def _zstd():
    from numcodecs import Zstd

    return Zstd(level=3)


def create(path: str | os.PathLike, n_params: int, metadata: dict[str, Any] | None = None,
           layout: Layout | None = None, **options: Any) -> ArchiveWriter:
    """Create (or, with ``resume="allow"|"must"``, reopen) an archive and return its writer.

    Only ``n_params`` is required: trajkit fills the required metadata (run id, creation time, versions)
    and a single-tensor layout. Options: ``resume`` (``never``/``allow``/``must``), ``capacity`` (initial
    rows), ``compressor`` (None or ``"zstd"``), ``fsync`` (fsync every chunk: survives power loss, slower),
    ``direct`` (write params chunks with ``O_DIRECT``: True, False — the default, right for writes on the
    training thread — or None for "when the rows are large, uncompressed and the file system allows it";
    the Recorder's writer thread uses None, see :mod:`trajkit.archive.directio`), ``dtype`` (storage dtype
    of the params: ``float32`` — the default —, ``float16``, ``bfloat16`` or ``float64``;
    :mod:`trajkit.archive.dtypes`).
    """
    return ArchiveWriter(path, n_params, metadata, layout, **options)
