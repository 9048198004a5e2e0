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
    72 ms and one that replaces the marker this way no more than 40 ms. Here the previous version's inode
    is kept under a hidden name (``.zarr.json.tmp<pid><n>``, a hard link made before the rename) and,
    once it has been out of use for :data:`MARKER_REUSE_S`, written over in place for a later version: no
    block is freed while the archive is recorded. Readers and crashes still see the old or the new file
    whole — the new version is complete before the rename, and a file is written over only after it
    stopped being the marker a second ago (a reader that opened it then has long read it). :meth:`close`
    deletes the kept files; a crash leaves them (ignored by every reader, removed by ``trajkit repair``
    and by the next writer). Where the file system has no hard links, it falls back to a plain replace."""

    def __init__(self, path: Path, fsync: bool = False):
        import collections

        self.path, self.fsync = Path(path), fsync
        self._prefix = f".{self.path.name}.tmp"
        self._retired: collections.deque[tuple[Path, float]] = collections.deque()
        self._seq = 0
        if self.path.parent.is_dir():   # leftovers of a crashed writer (this one holds the lock)
            for p in self.path.parent.iterdir():
                if p.name.startswith(self._prefix) and p.name[len(self._prefix):].isdigit():
                    p.unlink(missing_ok=True)

    def _name(self) -> Path:
        self._seq += 1
        return self.path.with_name(f"{self._prefix}{os.getpid()}{self._seq}")

    def write(self, data: bytes) -> None:
        """Replace the file's content by ``data`` (atomically; see the class docstring)."""
        import time

        if not self.path.exists():
            atomic_write_bytes(self.path, data, self.fsync)
            return
        now = time.monotonic()
        if self._retired and now - self._retired[0][1] >= MARKER_REUSE_S:
            spare = self._retired.popleft()[0]
            fd = os.open(spare, os.O_WRONLY)
        else:
            spare = self._name()
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            mv, off = memoryview(data).cast("B"), 0
            while off < len(mv):
                off += os.pwrite(fd, mv[off:], off)
            os.ftruncate(fd, len(mv))   # a shorter version keeps the block
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        keep = self._name()
        try:
            os.link(self.path, keep)   # the version being replaced keeps a name, so its block is not freed
        except OSError:   # no hard links here: a plain replace (the block is freed)
            keep = None
        os.replace(spare, self.path)
        if keep is not None:
            self._retired.append((keep, now))
        if self.fsync:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def close(self) -> None:
        """Delete the kept versions (their blocks are freed now, once)."""
        while self._retired:
            self._retired.popleft()[0].unlink(missing_ok=True)


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


def json_bytes(doc: dict[str, Any]) -> bytes:
    """A ``zarr.json`` document's bytes, as :func:`write_json` writes them."""
    return json.dumps(doc, indent=2, allow_nan=False).encode()


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
