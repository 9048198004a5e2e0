"""On-disk constants of trajectory archive format v1 and the atomic file primitives the writer uses.

The archive is a zarr v3 directory group; see docs/FORMAT.md for the full specification. The writer
bypasses zarr's array API on the hot path and writes uncompressed chunk bytes straight to their zarr v3
chunk keys (``<array>/c/<i>/<j>``); these helpers build the matching ``zarr.json`` documents so zarr
itself, and any other zarr v3 reader, reads the arrays unchanged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import directio

FORMAT_NAME = "trajkit"
FORMAT_VERSION = 1
ROOT_ATTR = "trajkit"
LOCK_FILE = ".trajkit.lock"

PARAMS = "snapshots/params"
STEP = "snapshots/step"
TIME = "snapshots/time"
EPOCH = "snapshots/epoch"
METRICS = "snapshots/metrics"
SNAPSHOTS = "snapshots"
TRACE = "trace"
TRACE_STEP = "trace/step"

#: attribute of ``snapshots/zarr.json`` that also commits the trace (see :func:`committed_trace_rows`)
TRACE_COMMITTED_ATTR = "trace_committed"


def committed_trace_rows(snapshot_attrs: dict[str, Any], trace_attrs: dict[str, Any]) -> int:
    """Committed trace rows: the larger of ``trace/zarr.json``'s ``committed`` (advanced by trace-only
    flushes) and ``snapshots/zarr.json``'s ``trace_committed`` (advanced with each snapshot commit).
    Both only grow, except when a writer truncates, which rewrites both; a value of the wrong type counts 0."""
    values = [trace_attrs.get("committed", 0), snapshot_attrs.get(TRACE_COMMITTED_ATTR, 0)]
    return max(int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0 for v in values)


#: rows per chunk of the 1-D per-snapshot arrays (step, time, epoch, metrics)
SNAPSHOT_SCALAR_CHUNK = 1024
#: rows per chunk of the per-step trace arrays
TRACE_CHUNK = 8192
#: a params row is split along N into chunks of at most this many bytes
PARAMS_CHUNK_BYTES = 8 * 2**20


def atomic_write_bytes(path: Path, data: bytes | memoryview, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # os-level calls, not open(): a writer thread then releases the GIL 4 times per marker, not 7 (open()
    # adds an fstat, an isatty ioctl and an lseek), each release a hand-over with the training thread
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        mv = memoryview(data).cast("B")
        while mv:
            mv = mv[os.write(fd, mv):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class MarkerFile:
    """A ``zarr.json`` rewritten at every commit (a commit marker), replaced atomically without freeing a
    disk block.

    :func:`atomic_write_bytes` renames a new file over the old one, which frees the old file's block. On
    ext4 mounted with ``discard`` (common on cloud VMs, and this project's machine) the journal then
    discards the freed blocks at its next commit, and every file operation waits for it: with ``O_DIRECT``
    row writes keeping the disk busy, a marker rename every 16 rows stalled the writer for 1.2–2.6 s at a
    time (1 to 4 such stalls per 1,000 rows), where the same loop without renames never waited more than
    72 ms and one that replaces the marker this way no more than 40 ms. Here the new version is written
    into a spare file under a hidden name (``.zarr.json.tmp<pid><n>``) and the two names are swapped in one
    atomic ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere, or on a file system that refuses it, a hard
    link keeps the replaced version and a rename puts the new one in place): the previous version keeps
    its inode under the spare's name and, once it has been out of use for :data:`MARKER_REUSE_S`, is written
    over in place for a later version. No block is freed while the archive is recorded. Readers and crashes
    still see the old or the new file whole — the new version is complete before the swap, and a file is
    written over only after it stopped being the marker a second ago (a reader that opened it then has long
    read it). :meth:`close` deletes the kept files; a crash leaves them (ignored by every reader, removed by
    ``trajkit repair`` and by the next writer).

    A version costs four system calls (open, pwrite, close, the swap; an ftruncate only when it is shorter
    than the bytes it writes over) and no ``pathlib`` work: it runs on the writer thread at every commit,
    where each Python step holds the GIL the training thread is waiting for
    (``benchmarks/recorder_overhead.py``)."""

    def __init__(self, path: Path, fsync: bool = False):
        import collections

        self.path, self.fsync = Path(path), fsync
        self._target = os.fsencode(self.path)
        self._prefix = f".{self.path.name}.tmp"
        self._dir = os.fsencode(self.path.parent)
        #: kept versions, oldest first: (name as bytes, its size in bytes, when it stopped being the marker)
        self._retired: collections.deque[tuple[bytes, int, float]] = collections.deque()
        self._seq = 0
        self._size = -1   # bytes of the version at ``path`` (-1: not known, or not there yet)
        self._exchange = _renameat2() is not None
        if self.path.parent.is_dir():   # leftovers of a crashed writer (this one holds the lock)
            for p in self.path.parent.iterdir():
                if p.name.startswith(self._prefix) and p.name[len(self._prefix):].isdigit():
                    p.unlink(missing_ok=True)

    def _name(self) -> bytes:
        self._seq += 1
        return os.path.join(self._dir, os.fsencode(f"{self._prefix}{os.getpid()}{self._seq}"))

    def write(self, data: bytes) -> None:
        """Replace the file's content by ``data`` (atomically; see the class docstring)."""
        if self._size < 0 and not os.path.exists(self._target):
            atomic_write_bytes(self.path, data, self.fsync)
            self._size = len(data)
            return
        now = time.monotonic()
        if self._retired and now - self._retired[0][2] >= MARKER_REUSE_S:
            spare, size, _ = self._retired.popleft()
            fd = os.open(spare, os.O_WRONLY)
        else:
            spare, size = self._name(), 0
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        n = len(data)
        try:
            off = os.pwrite(fd, data, 0)
            if off < n:
                mv = memoryview(data).cast("B")
                while off < n:
                    off += os.pwrite(fd, mv[off:], off)
            if not 0 <= size <= n:   # a longer version was there: cut its tail (a shorter one is overwritten)
                os.ftruncate(fd, n)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        old = self._size
        if self._exchange and _swap(spare, self._target):
            self._retired.append((spare, old, now))   # the replaced version now lives under the spare's name
        else:
            self._exchange = False
            keep = self._name()
            try:
                os.link(self._target, keep)   # the version being replaced keeps a name: its block is not freed
            except OSError:   # no hard links here: a plain replace (the block is freed)
                keep = None
            os.replace(spare, self._target)
            if keep is not None:
                self._retired.append((keep, old, now))
        self._size = n
        if self.fsync:
            dfd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def close(self) -> None:
        """Delete the kept versions (their blocks are freed now, once)."""
        while self._retired:
            try:
                os.unlink(self._retired.popleft()[0])
            except FileNotFoundError:
                pass


_RENAMEAT2: Any = None   # libc's renameat2 (ctypes), False where there is none; looked up once


def _renameat2() -> Any:
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        _RENAMEAT2 = False
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
            except (AttributeError, OSError):   # glibc < 2.28, or another libc without it
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _RENAMEAT2 = fn
    return _RENAMEAT2 or None


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _swap(a: bytes, b: bytes) -> bool:
    """Exchange the files named ``a`` and ``b`` atomically; False (nothing changed) where the file system or
    kernel does not support it, an OSError for any other failure."""
    import ctypes
    import errno

    if _renameat2()(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), os.fsdecode(b))


#: seconds a replaced marker version stays untouched before its inode is written over (see MarkerFile)
MARKER_REUSE_S = 1.0


#: bytes per ``write`` syscall for chunk files. Measured inside a training loop on this machine: one 2.6 MiB
#: ``write`` cost 6.9 ms, the same bytes in 1 MiB pieces 1.2 ms (torch.save: 2.3 ms).
WRITE_PIECE = 1 << 20


def write_chunk_file(path: Path, data: bytes | memoryview, fsync: bool = False, direct: bool = False) -> bool:
    """Create ``path`` holding ``data`` (not atomic: chunk files of uncommitted rows only).

    With ``direct`` and page-aligned ``data`` one ``O_DIRECT`` write (:mod:`trajkit.archive.directio`);
    otherwise buffered, in :data:`WRITE_PIECE` pieces. Returns True when the write was direct.
    """
    mv = memoryview(data).cast("B")
    if direct and directio.can_write_direct(mv) and directio.write_direct(path, mv, fsync):
        return True
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in range(0, len(mv), WRITE_PIECE):
            piece = mv[start:start + WRITE_PIECE]
            while piece:
                piece = piece[os.write(fd, piece):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return False


def json_bytes(doc: dict[str, Any], compact: bool = False) -> bytes:
    """A ``zarr.json`` document's bytes, as :func:`write_json` writes them; ``compact``: on one line, for the
    commit markers rewritten at every commit (json's C encoder: an indented document takes the pure-Python
    one, ~0.1 ms on the writer thread)."""
    if compact:
        return _COMPACT.encode(doc).encode()
    return json.dumps(doc, indent=2, allow_nan=False).encode()


#: one encoder for every compact document (``json.dumps`` with options builds a new one per call)
_COMPACT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def write_json(path: Path, doc: dict[str, Any], fsync: bool = False) -> None:
    """Atomically write a JSON document (used for every ``zarr.json``)."""
    atomic_write_bytes(path, json_bytes(doc), fsync)


def group_json(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` of a zarr v3 group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}


#: fill values (uint16 is only used for bfloat16 params: its quiet NaN, see :mod:`trajkit.archive.dtypes`)
_FILL = {"float32": "NaN", "float64": "NaN", "float16": "NaN", "int64": -1, "uint16": 0x7FC0}


def array_json(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
               attributes: dict[str, Any] | None = None, separator: str = "/") -> dict[str, Any]:
    """The ``zarr.json`` of an uncompressed little-endian zarr v3 array with a regular chunk grid."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": separator}},
        "fill_value": _FILL[dtype],
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": attributes or {},
        "storage_transformers": [],
    }


#: chunk-key separator of the params arrays trajkit writes: with "." every chunk file (``c.<row>.<j>``) sits in
#: the array's own directory, so a snapshot costs no ``mkdir`` (≈0.25 ms of CPU per snapshot inside a training
#: loop, measured). Archives written with "/" (``c/<row>/<j>``, before this choice) are read and resumed as is.
PARAMS_SEPARATOR = "."


def key_separator(array_doc: dict[str, Any]) -> str:
    """The chunk-key separator of an array's ``zarr.json`` (zarr v3 ``default`` encoding)."""
    return str(array_doc.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/"))


def params_chunk_key(row: int, j: int, separator: str) -> str:
    """The key of chunk ``(row, j)`` of ``snapshots/params`` (``c.<row>.<j>`` or ``c/<row>/<j>``)."""
    return f"c{separator}{row}{separator}{j}"


def params_chunk_path(params_dir: Path, row: int, j: int, separator: str) -> Path:
    """The file of chunk ``(row, j)`` under the ``snapshots/params`` directory."""
    return params_dir.joinpath(*params_chunk_key(row, j, separator).split("/"))


def params_chunk_files(params_dir: Path, separator: str) -> list[tuple[int, Path]]:
    """``(row, path)`` of every chunk file (for "/", every row directory) of ``snapshots/params``."""
    if separator == "/":
        cdir = params_dir / "c"
        return [(int(p.name), p) for p in cdir.iterdir() if p.name.isdigit()] if cdir.is_dir() else []
    out = []
    for p in params_dir.iterdir() if params_dir.is_dir() else ():
        parts = p.name.split(separator)
        if len(parts) == 3 and parts[0] == "c" and parts[1].isdigit():
            out.append((int(parts[1]), p))
    return out


def params_chunk_cols(n_params: int, chunk_bytes: int = PARAMS_CHUNK_BYTES, itemsize: int = 4) -> int:
    """Columns per params chunk: the whole row when it fits in ``chunk_bytes``, else equal splits.

    Rows of at least :data:`~trajkit.archive.directio.DIRECT_MIN_BYTES` get a width that is a multiple of
    a page of the stored dtype (1,024 float32 columns), so that every chunk can be written with ``O_DIRECT``.
    ``itemsize``: bytes per stored parameter (:mod:`trajkit.archive.dtypes`).
    """
    n_chunks = max(1, -(-n_params * itemsize // chunk_bytes))
    cols = -(-n_params // n_chunks)
    if n_params * itemsize >= directio.DIRECT_MIN_BYTES:
        page = directio.ALIGN // itemsize
        cols = -(-cols // page) * page
    return cols


def read_json(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return json.loads(f.read())


def to_jsonable(obj: Any, strict: bool = False) -> Any:
    """Convert numpy scalars/arrays and tuples inside ``obj`` into plain JSON types.

    Other objects pass through (metadata validation names them) — unless ``strict``: then non-finite
    floats become None and anything else its ``str()``, so the result always serialises (result files).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, strict) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), strict)
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return None if strict and not math.isfinite(f) else f
    if strict and not (obj is None or isinstance(obj, str | int)):
        return str(obj)
    return obj
