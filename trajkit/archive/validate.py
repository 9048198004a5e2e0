"""Checking a trajectory archive against format v1 (docs/FORMAT.md) without modifying it.

:func:`validate` returns a list of :class:`Problem` (empty when the archive is valid). The checks, in
order, stop early only when later ones cannot run:

1. it opens, is not of a newer format version, and its root metadata passes
   ``schemas/archive.schema.json`` (one problem per failing JSON pointer);
2. structure: every required group and array exists with the dtype, rank and chunking of FORMAT.md;
   ``committed`` ≤ the first dimension of every snapshot array (and of every trace array for the trace
   marker); the committed ``snapshots/step`` strictly increase;
3. every committed ``snapshots/params`` chunk (``c.<row>.<j>``) exists and holds exactly
   ``chunk_cols × itemsize`` bytes (4 for float32, :mod:`trajkit.archive.dtypes`; local, uncompressed)
   or decodes to that many (compressed, zip, URL);
4. a NaN/inf scan of the committed rows before the first damaged one, streamed in column blocks of at
   most :data:`SCAN_BLOCK_BYTES` (memory ``O(T × block)``), compared with the metadata ``/nonfinite``;
5. online two-time arrays, when the metadata has ``/online``: every ``online/`` array exists with its
   dtype and shape and holds the committed rows (:func:`trajkit.archive.online.online_problems`).

Leftovers that the format tells readers to ignore (temp files, chunks of uncommitted rows, directories
without ``zarr.json`` from an interrupted write) are not problems; :func:`trajkit.archive.repair`
removes them.

>>> for problem in trajkit.archive.validate("run.trajkit"):       # doctest: +SKIP
...     print(problem.message)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import dtypes
from trajkit.archive import format as fmt
from trajkit.archive.layout import check_layout
from trajkit.archive.metadata import schema_problems
from trajkit.archive.online import online_problems
from trajkit.archive.reader import array_names
from trajkit.archive.storage import object_sizes
from trajkit.errors import ArchiveError

#: memory budget of one column block of the NaN/inf scan (bytes of float32 ``[T, block]``)
SCAN_BLOCK_BYTES = 64 * 2**20

#: zarr's warning for a directory without zarr.json inside a group
STRAY_NODE_WARNING = r"Object at .* is not recognized as a component of a Zarr hierarchy"

_SCALARS = ((fmt.STEP, "int64"), (fmt.TIME, "float64"), (fmt.EPOCH, "float64"))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an archive.

    ``message`` is one line naming the archive, the array, the row/step and the fix; ``kind`` is one of
    ``open``, ``version``, ``schema``, ``structure``, ``chunk``, ``nonfinite``; ``array``,
    ``row`` and ``step`` locate it when they apply.
    """

    path: str
    kind: str
    message: str
    array: str | None = None
    row: int | None = None
    step: int | None = None

    def __str__(self) -> str:
        return self.message


class _Checker:
    """Collects problems for one archive; ``first_bad_row`` is the first committed row that cannot be read."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[Problem] = []
        self.first_bad_row: int | None = None

    def add(self, kind: str, text: str, array: str | None = None, row: int | None = None,
            step: int | None = None) -> None:
        self.problems.append(Problem(self.path, kind, f"{self.path}: {text}", array, row, step))

    def bad_row(self, row: int) -> None:
        if self.first_bad_row is None or row < self.first_bad_row:
            self.first_bad_row = row


def validate(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[Problem]:
    """Every problem found in the archive at ``path`` (directory, zip or URL); ``[]`` when it is valid.

    ``storage_options``: fsspec options of a URL (see :func:`trajkit.open_archive`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=STRAY_NODE_WARNING)  # ignorable leftovers, see above
        return _validate(path, storage_options)


def _validate(path: str | os.PathLike, storage_options: dict[str, Any] | None) -> list[Problem]:
    from trajkit.archive.reader import Archive, _open_group

    c = _Checker(str(path))
    try:
        group, _ = _open_group(path, storage_options)
        meta = dict(group.attrs).get(fmt.ROOT_ATTR)
    except ArchiveError as e:
        c.add("open", _strip(str(e), c.path))
        return c.problems
    if not isinstance(meta, dict):
        c.add("open", "not a trajkit archive: root zarr.json has no 'trajkit' attribute; pass a NAME.trajkit "
                      "directory")
        return c.problems
    version = meta.get("format_version")
    if isinstance(version, int) and version > fmt.FORMAT_VERSION:
        c.add("version", f"written in archive format v{version}, newer than this trajkit reads "
                         f"(v{fmt.FORMAT_VERSION}); upgrade: pip install -U trajkit")
        return c.problems
    schema = schema_problems(meta, "archive.schema.json")
    for pointer, msg in schema:
        c.add("schema", f"metadata {pointer or '/'} is invalid: {msg}; fix the root zarr.json attribute "
                        "'trajkit' (see schemas/archive.schema.json)")
    if schema:
        return c.problems
    try:
        check_layout(meta["layout"], int(meta["model"]["n_params"]), "metadata /layout")
    except ArchiveError as e:
        c.add("schema", f"{e}; the layout does not match the parameter vector")
        return c.problems
    try:
        arch = Archive(path, validate=False, storage_options=storage_options)
    except ArchiveError as e:
        c.add("structure", _strip(str(e), c.path))
        return c.problems
    store = _ChunkStore(arch)
    committed, steps = _check_structure(c, arch)
    if committed is None:
        return c.problems
    _check_params_chunks(c, arch, store, committed, steps)
    _scan_nonfinite(c, arch, committed, steps)
    for kind, text, array in online_problems(arch):
        c.add(kind, text, array=array)
    return c.problems


# -- structure ------------------------------------------------------------------------------------------


def _array_meta(c: _Checker, group: Any, name: str) -> dict[str, Any] | None:
    try:
        node = group[name]
    except KeyError:
        c.add("structure", f"missing array {name}; the archive is incomplete (recreate it, or restore "
                           "the file from a copy)", array=name)
        return None
    meta = node.metadata.to_dict()
    if meta.get("node_type") != "array":
        c.add("structure", f"{name} is a group, expected an array", array=name)
        return None
    return meta


def _dtype_ok(c: _Checker, meta: dict[str, Any], name: str, dtype: str, ndim: int) -> bool:
    ok = True
    if str(meta["data_type"]) != dtype:
        c.add("structure", f"{name} has dtype {meta['data_type']}, expected {dtype}", array=name)
        ok = False
    if len(meta["shape"]) != ndim:
        c.add("structure", f"{name} has shape {meta['shape']}, expected {ndim} dimension(s)", array=name)
        ok = False
    return ok


def _committed_attr(c: _Checker, group: Any, name: str) -> int | None:
    try:
        attrs = dict(group[name].attrs)
    except KeyError:
        c.add("structure", f"missing group {name}/; the archive is incomplete", array=name)
        return None
    value = attrs.get("committed")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        c.add("structure", f"{name}/zarr.json attribute 'committed' is {value!r}, expected an integer >= 0 "
                           "(the commit marker); run `trajkit repair`", array=name)
        return None
    return value


def _check_structure(c: _Checker, arch: Any) -> tuple[int | None, np.ndarray]:
    """Check groups, arrays, dtypes and shapes; returns (committed, committed steps) or (None, ...)."""
    g = arch._group
    committed = _committed_attr(c, g, fmt.SNAPSHOTS)
    trace_committed = _committed_attr(c, g, fmt.TRACE)
    if committed is not None and trace_committed is not None:
        extra = dict(g[fmt.SNAPSHOTS].attrs).get(fmt.TRACE_COMMITTED_ATTR, 0)
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            c.add("structure", f"{fmt.SNAPSHOTS}/zarr.json attribute '{fmt.TRACE_COMMITTED_ATTR}' is {extra!r}, "
                               "expected an integer >= 0 (the trace commit marker); run `trajkit repair`",
                  array=fmt.SNAPSHOTS)
        else:
            trace_committed = max(trace_committed, extra)
    empty = np.zeros(0, np.int64)
    if committed is None:
        return None, empty
    pmeta = _array_meta(c, g, fmt.PARAMS)
    if pmeta is None or not _dtype_ok(c, pmeta, fmt.PARAMS, dtypes.zarr_data_type(arch.storage_dtype), 2):
        return None, empty
    chunks = pmeta["chunk_grid"]["configuration"]["chunk_shape"]
    if chunks[0] != 1:
        c.add("structure", f"{fmt.PARAMS} has chunk shape {chunks}, expected [1, C] (one row per chunk)",
              array=fmt.PARAMS)
    if pmeta["shape"][1] != arch.n_params:
        c.add("structure", f"{fmt.PARAMS} has {pmeta['shape'][1]} columns but metadata /model/n_params is "
                           f"{arch.n_params}", array=fmt.PARAMS)
        return None, empty
    lengths = {fmt.PARAMS: pmeta["shape"][0]}
    for name, dtype in _SCALARS:
        m = _array_meta(c, g, name)
        if m is not None and _dtype_ok(c, m, name, dtype, 1):
            lengths[name] = m["shape"][0]
    try:
        metric_names = array_names(g[fmt.METRICS])
    except KeyError:
        c.add("structure", f"missing group {fmt.METRICS}/; the archive is incomplete", array=fmt.METRICS)
        metric_names = []
    for name in metric_names:
        full = f"{fmt.METRICS}/{name}"
        m = _array_meta(c, g, full)
        if m is not None and _dtype_ok(c, m, full, "float64", 1):
            lengths[full] = m["shape"][0]
    for name, n in lengths.items():
        if n < committed:
            c.add("structure", f"{name} holds {n} rows but snapshots/zarr.json says {committed} are "
                               "committed; run `trajkit repair` to truncate to the readable rows", array=name,
                  row=n)
            c.bad_row(n)
    if fmt.STEP not in lengths:
        return None, empty
    n_steps = min(committed, lengths[fmt.STEP])
    steps = np.asarray(g[fmt.STEP][:n_steps]).astype(np.int64)
    bad = np.flatnonzero(np.diff(steps) <= 0)
    if steps.size and steps[0] < 0:
        c.add("structure", f"{fmt.STEP} row 0 is {int(steps[0])}, expected a step >= 0 (unwritten row); run "
                           "`trajkit repair`", array=fmt.STEP, row=0)
        c.bad_row(0)
    elif bad.size:
        r = int(bad[0]) + 1
        c.add("structure", f"{fmt.STEP} does not increase strictly: row {r} has step {int(steps[r])} after "
                           f"{int(steps[r - 1])}; run `trajkit repair` to keep rows 0..{r - 1}",
              array=fmt.STEP, row=r, step=int(steps[r]))
        c.bad_row(r)
    if trace_committed is not None:
        _check_trace(c, g, trace_committed)
    return committed, steps


def _check_trace(c: _Checker, g: Any, trace_committed: int) -> None:
    m = _array_meta(c, g, fmt.TRACE_STEP)
    if m is None or not _dtype_ok(c, m, fmt.TRACE_STEP, "int64", 1):
        return
    names = [k for k in array_names(g[fmt.TRACE]) if k != "step"]
    for name in ["step", *names]:
        full = f"{fmt.TRACE}/{name}"
        meta = m if name == "step" else _array_meta(c, g, full)
        if meta is None or (name != "step" and not _dtype_ok(c, meta, full, "float64", 1)):
            continue
        if meta["shape"][0] < trace_committed:
            c.add("structure", f"{full} holds {meta['shape'][0]} rows but the trace commit marker says "
                               f"{trace_committed} are committed (trace arrays must all be as long as "
                               "trace/step); run `trajkit repair`", array=full, row=meta["shape"][0])
    n = min(trace_committed, m["shape"][0])
    tsteps = np.asarray(g[fmt.TRACE_STEP][:n]).astype(np.int64)
    bad = np.flatnonzero(np.diff(tsteps) <= 0)
    if bad.size:
        r = int(bad[0]) + 1
        c.add("structure", f"{fmt.TRACE_STEP} does not increase strictly: row {r} has step {int(tsteps[r])} "
                           f"after {int(tsteps[r - 1])}; run `trajkit repair`", array=fmt.TRACE_STEP, row=r)


# -- chunks ---------------------------------------------------------------------------------------------


class _ChunkStore:
    """Chunk presence, size and decoding for a local directory (by ``stat``) or any zarr store."""

    def __init__(self, arch: Any):
        self.arch = arch
        self.local: Path | None = arch._local
        pm = arch._params_meta
        self.chunk_cols = int(pm["chunk_grid"]["configuration"]["chunk_shape"][1])
        self.raw = [cd["name"] for cd in pm["codecs"]] == ["bytes"]
        self.sep = fmt.key_separator(pm)
        self._params_array: Any = None
        # a URL archive: the sizes of all params chunk objects from one listing, instead of a request each
        self.remote_sizes = object_sizes(arch._group.store_path, fmt.PARAMS) if arch.is_url and self.raw else None

    def params_chunk_problem(self, row: int, j: int) -> str | None:
        """None when chunk ``(row, j)`` of snapshots/params is whole, else what is wrong with it."""
        want = self.chunk_cols * dtypes.itemsize(self.arch.storage_dtype)
        key = fmt.params_chunk_key(row, j, self.sep)
        if self.local is not None and self.raw:
            try:
                size: int | None = fmt.params_chunk_path(self.local / fmt.PARAMS, row, j, self.sep).stat().st_size
            except FileNotFoundError:
                size = None
            return _size_problem(key, size, want)
        if self.remote_sizes is not None:
            return _size_problem(key, self.remote_sizes.get(key), want)
        if not self._exists(f"{fmt.PARAMS}/{key}"):
            return f"chunk {key} is missing"
        cc = self.chunk_cols
        try:
            lo, hi = j * cc, min((j + 1) * cc, self.arch.n_params)
            if self._params_array is None:
                self._params_array = self.arch._group[fmt.PARAMS]
            np.asarray(self._params_array[row:row + 1, lo:hi])
        except Exception as e:
            return f"chunk {key} does not decode ({type(e).__name__}: {_first_line(str(e))})"
        return None

    def _exists(self, key: str) -> bool:
        from zarr.core.sync import sync

        sp = self.arch._group.store_path
        full = f"{sp.path}/{key}" if sp.path else key
        return bool(sync(sp.store.exists(full)))


def _size_problem(key: str, size: int | None, want: int) -> str | None:
    """What is wrong with a raw params chunk of ``size`` bytes (None: absent) that should have ``want``."""
    if size is None:
        return f"chunk {key} is missing"
    if size < want:
        return f"chunk {key} is truncated ({size} of {want} bytes: a torn write)"
    if size > want:
        return f"chunk {key} has {size} bytes, expected {want}"
    return None


def _check_params_chunks(c: _Checker, arch: Any, store: _ChunkStore, committed: int,
                         steps: np.ndarray) -> None:
    n_chunks = -(-arch.n_params // store.chunk_cols)
    limit = committed if c.first_bad_row is None else min(committed, c.first_bad_row)
    for row in range(limit):
        for j in range(n_chunks):
            what = store.params_chunk_problem(row, j)
            if what is None:
                continue
            step = int(steps[row]) if row < steps.size else None
            kept = {0: "no rows", 1: "row 0"}.get(row, f"rows 0..{row - 1}")
            c.add("chunk", f"{fmt.PARAMS} row {row} (step {step}) {what}; run `trajkit repair` to keep "
                           f"{kept} and drop the rest", array=fmt.PARAMS, row=row, step=step)
            c.bad_row(row)
            return


# -- NaN / inf scan -------------------------------------------------------------------------------------


def nonfinite_rows(params: Any, rows: int, block_bytes: int = SCAN_BLOCK_BYTES) -> tuple[np.ndarray, int]:
    """Rows ``< rows`` of a lazy params array ``[T, N]`` holding NaN/inf, and the number of such values.

    Streams column blocks ``params[:rows, a:b]`` of at most ``block_bytes`` (whole chunks when they fit),
    so memory is ``O(block_bytes)`` whatever ``T × N``. Returns (row flags bool ``[rows]``, count).
    """
    flags = np.zeros(rows, dtype=bool)
    count = 0
    if rows == 0:
        return flags, 0
    n = params.shape[1]
    block = max(1, block_bytes // (4 * rows))
    cc = params.chunk_cols
    if block >= cc:
        block -= block % cc
    block = min(block, n)
    for _, _, values in params.iter_column_blocks(block, rows=np.arange(rows)):
        bad = ~np.isfinite(values)
        flags |= bad.any(axis=1)
        count += int(bad.sum())
    return flags, count


def _scan_nonfinite(c: _Checker, arch: Any, committed: int, steps: np.ndarray) -> None:
    rows = committed if c.first_bad_row is None else min(committed, c.first_bad_row)
    rows = min(rows, steps.size)
    flags, count = nonfinite_rows(arch.params, rows)
    flagged = arch.metadata.get("nonfinite") or {}
    bad_steps = steps[:rows][flags]
    if bad_steps.size:
        r = int(np.flatnonzero(flags)[0])
        first = int(bad_steps[0])
        if not flagged:
            note = "; metadata /nonfinite does not flag it (set it with update_metadata)"
        elif flagged.get("first_step") != first:
            note = f"; metadata /nonfinite/first_step is {flagged.get('first_step')}, expected {first}"
        else:
            note = " (flagged in metadata /nonfinite)"
        c.add("nonfinite", f"{fmt.PARAMS} holds {count} NaN/inf values in {bad_steps.size} snapshot(s), "
                           f"first at row {r} (step {first}): the run diverged{note}; analyses refuse or "
                           "mask these rows", array=fmt.PARAMS, row=r, step=first)
        return
    listed = [s for s in flagged.get("steps", []) if s in set(steps[:rows].tolist())]
    if listed:
        c.add("nonfinite", f"metadata /nonfinite flags step {listed[0]} but {fmt.PARAMS} is finite there; "
                           "remove the stale /nonfinite flag", array=fmt.PARAMS, step=int(listed[0]))


def _strip(message: str, path: str) -> str:
    """``message`` without a leading ``"<path>: "`` (Problem messages add it themselves)."""
    for prefix in (f"{path}: ", f"{Path(path)}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) < 120 else line[:117] + "..."
