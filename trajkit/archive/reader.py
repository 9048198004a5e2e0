"""Reading trajectory archives: metadata, committed rows, and a lazy ``[T, N]`` parameter array.

Only rows ``< committed`` (the commit marker in ``snapshots/zarr.json``) are visible. The archive opens
through zarr, so a directory, a zip of it, or any fsspec URL zarr supports works; for a local,
uncompressed archive ``params`` reads chunk files directly (no decode step), which is what bounds
out-of-core analysis speed; for an uncompressed URL archive (``s3://…``) it reads byte ranges of the chunk
objects, a block's ranges all in flight together (:mod:`trajkit.archive.storage`).

>>> arch = trajkit.open_archive("run.trajkit")                      # doctest: +SKIP
>>> arch.params[:, arch.select("hidden")]                          # doctest: +SKIP

``arch.select(spec)`` is a :class:`~trajkit.archive.layout.Selection` (contiguous tensor ranges); indexing
``params`` with it reads only the chunks of those ranges.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import dtypes
from trajkit.archive import format as fmt
from trajkit.archive.layout import Layout, Selection, select_columns
from trajkit.archive.metadata import validate_metadata
from trajkit.archive.storage import is_url, open_url_group, read_raw_rows
from trajkit.errors import ArchiveError


def _open_group(path: str | os.PathLike, storage_options: dict[str, Any] | None = None):
    """The zarr root group behind ``path`` (dir, zip file or URL), and a local dir Path when there is one.

    ``storage_options`` go to the fsspec file system of a URL (:mod:`trajkit.archive.storage`); local
    paths ignore them."""
    import zarr

    s = str(path)
    if is_url(s):
        return open_url_group(s, storage_options), None
    p = Path(s.removeprefix("file://"))
    if not p.exists():
        raise ArchiveError(f"{p}: no such archive; check the path")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise ArchiveError(f"{p}: is a file, not a trajkit archive (expected a NAME.trajkit directory "
                               "or a zip of one)")
        from zarr.storage import ZipStore

        store = ZipStore(p, mode="r")
        names = zipfile.ZipFile(p).namelist()
        if "zarr.json" in names:
            return zarr.open_group(store, mode="r", zarr_format=3), None
        tops = {n.split("/", 1)[0] for n in names if n.endswith("/zarr.json") and n.count("/") == 1}
        if len(tops) != 1:
            raise ArchiveError(f"{p}: zip holds no archive (no zarr.json at its root or in one top folder)")
        return zarr.open_group(store, path=tops.pop(), mode="r", zarr_format=3), None
    if not (p / "zarr.json").exists():
        raise ArchiveError(f"{p}: not a trajkit archive (no zarr.json); pass a NAME.trajkit directory")
    try:
        return zarr.open_group(str(p), mode="r", zarr_format=3), p
    except Exception as e:
        raise ArchiveError(f"{p}: zarr.json is unreadable ({e}); run `trajkit validate` on it") from None


def array_names(group: Any) -> list[str]:
    """Sorted names of the arrays in ``group``; leftovers of a crashed writer (``.*.tmp*``) are ignored."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return sorted(k for k in group.array_keys() if not k.startswith("."))


class Params:
    """Lazy ``[T, N]`` view of ``snapshots/params`` limited to committed rows.

    ``dtype`` is what reads return: float64 for a float64 archive, float32 for float32, float16 and
    bfloat16 ones (widened exactly; ``storage_dtype`` names what is on disk, :mod:`trajkit.archive.dtypes`).

    Index with ``params[rows, cols]``: rows by an int, slice or int array; cols by an int, slice, int array
    or a :class:`~trajkit.archive.layout.Selection` (``archive.select(...)``, read range by range, equal to
    numpy fancy indexing with ``sel.indices()``). Only the chunks touched are read.
    """

    #: A selection with more ranges than this is read as one span and gathered (fewer file opens).
    SPAN_READ_RANGES = 64

    def __init__(self, archive: Archive):
        self._a = archive
        self.shape = (archive.n_snapshots, archive.n_params)
        self.storage_dtype = archive.storage_dtype
        self.dtype = dtypes.read_dtype(self.storage_dtype)
        self._stored = dtypes.storage_numpy(self.storage_dtype)
        meta = archive._params_meta
        self.chunk_cols = int(meta["chunk_grid"]["configuration"]["chunk_shape"][1])
        uncompressed = [c["name"] for c in meta["codecs"]] == ["bytes"]
        raw = archive._local is not None and uncompressed
        self._raw_dir = archive._local / fmt.PARAMS if raw else None
        # chunk paths as plain strings: a pathlib join per chunk would be slower and intern every part
        self._raw_prefix = os.path.join(str(self._raw_dir), "") if raw else ""
        self._sep = fmt.key_separator(meta)
        # an uncompressed URL archive: column blocks are read as concurrent byte ranges of the chunk objects
        self._remote = archive._group.store_path if archive.is_url and uncompressed else None

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key, slice(None))
        if len(key) != 2:
            raise IndexError("params takes [rows, cols]")
        rkey, ckey = key
        rows = np.arange(self.shape[0])[rkey]
        scalar_row = np.ndim(rows) == 0
        rows = np.atleast_1d(rows)
        if isinstance(ckey, Selection):
            out = self.read_selection(rows, ckey)
        elif isinstance(ckey, slice):
            start, stop, stride = ckey.indices(self.shape[1])
            out = self.read_rows(rows, start, stop)
            if stride != 1:
                out = out[:, ::stride]
        else:
            cols = np.arange(self.shape[1])[ckey]
            scalar_col = np.ndim(cols) == 0
            cols = np.atleast_1d(cols)
            if cols.size == 0:
                out = np.empty((rows.size, 0), self.dtype)
            else:
                lo, hi = int(cols.min()), int(cols.max()) + 1
                out = self.read_rows(rows, lo, hi)[:, cols - lo]
            if scalar_col:
                out = out[:, 0]
        return out[0] if scalar_row else out

    def read_rows(self, rows: np.ndarray, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """``params[rows, start:stop]`` as a new (or the given) array ``[len(rows), stop-start]`` of
        :attr:`dtype` (float16 and bfloat16 archives are decoded to float32 here)."""
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = np.empty((rows.size, max(stop - start, 0)), dtype=self.dtype)
        if stop <= start or rows.size == 0:
            return out
        if self._remote is not None:
            bad = read_raw_rows(self._remote, fmt.PARAMS, rows, start, stop, self.chunk_cols,
                                lambda r, j: fmt.params_chunk_key(r, j, self._sep), out, self._a.path)
            if bad is not None:
                row, key, what = bad
                raise ArchiveError(f"{self._a.path}: snapshots/params row {row} chunk {key} is {what}; "
                                   "run `trajkit validate` on the local copy and push it again")
            return out
        if self._raw_dir is None:
            arr = self._a._group[fmt.PARAMS]
            raw = arr.oindex[rows, start:stop] if hasattr(arr, "oindex") else arr[rows][:, start:stop]
            dtypes.decode(raw, self.storage_dtype, out)
            return out
        if self._stored != self.dtype:
            raw = np.empty((rows.size, stop - start), dtype=self._stored)
            self._read_raw(rows, start, stop, raw)
            return dtypes.decode(raw, self.storage_dtype, out)
        return self._read_raw(rows, start, stop, out)

    def _read_raw(self, rows: np.ndarray, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Stored bytes of ``params[rows, start:stop]`` read straight from the chunk files into ``out``."""
        isz = out.dtype.itemsize
        cc = self.chunk_cols
        for i, r in enumerate(rows):
            j0, j1 = start // cc, (stop - 1) // cc
            for j in range(j0, j1 + 1):
                lo, hi = max(start, j * cc), min(stop, (j + 1) * cc)
                path = self._raw_prefix + fmt.params_chunk_key(int(r), j, self._sep)
                try:
                    with open(path, "rb", buffering=0) as f:
                        f.seek((lo - j * cc) * isz)
                        dst = out[i, lo - start:hi - start]
                        n = f.readinto(memoryview(dst).cast("B"))
                except FileNotFoundError:
                    key = fmt.params_chunk_key(int(r), j, self._sep)
                    raise ArchiveError(f"{self._a.path}: snapshots/params row {int(r)} chunk {key} is missing; "
                                       "run `trajkit validate` then `trajkit repair`") from None
                if n != (hi - lo) * isz:
                    key = fmt.params_chunk_key(int(r), j, self._sep)
                    raise ArchiveError(f"{self._a.path}: snapshots/params row {int(r)} chunk {key} is truncated "
                                       "(torn write); run `trajkit repair` to keep the rows before it")
        return out

    def read_selection(self, rows: np.ndarray, sel: Selection, out: np.ndarray | None = None) -> np.ndarray:
        """``params[rows, sel]``: ``[len(rows), sel.size]`` of :attr:`dtype`, the ranges side by side in column order.

        Each range is read on its own (only its chunks); a selection of more than :data:`SPAN_READ_RANGES`
        ranges (e.g. from a scattered index array) is read as one span and gathered instead.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if sel.n_params != self.shape[1]:
            raise ArchiveError(f"{self._a.path}: selection is over {sel.n_params} parameters but the archive has "
                               f"{self.shape[1]}; select on this archive")
        if out is None:
            out = np.empty((rows.size, sel.size), dtype=self.dtype)
        ranges = sel.ranges
        if len(ranges) > self.SPAN_READ_RANGES:
            lo, hi = ranges[0][0], ranges[-1][1]
            out[:] = self.read_rows(rows, lo, hi)[:, sel.indices() - lo]
            return out
        off = 0
        for a, b in ranges:
            self.read_rows(rows, a, b, out=out[:, off:off + b - a])
            off += b - a
        return out

    def iter_column_blocks(self, block_cols: int, rows: np.ndarray | None = None
                           ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start, stop, block)`` with ``block = params[rows, start:stop]`` for consecutive blocks."""
        rows = np.arange(self.shape[0]) if rows is None else np.asarray(rows)
        for start in range(0, self.shape[1], block_cols):
            stop = min(start + block_cols, self.shape[1])
            yield start, stop, self.read_rows(rows, start, stop)

    def __repr__(self) -> str:
        return f"<trajkit params {self.shape[0]}x{self.shape[1]} {self.storage_dtype} (lazy)>"


class Archive:
    """A trajectory archive opened for reading (see :func:`open_archive`).

    Attributes: ``metadata`` (nested dict), ``layout`` (list of tensor entries), ``n_params`` (N),
    ``n_snapshots`` (T, committed rows), ``steps`` int64 ``[T]``, ``times`` float64 ``[T]``, ``epochs``
    float64 ``[T]``, ``params`` lazy ``[T, N]`` (float32, or float64 for a float64 archive), ``metrics``
    name → float64 ``[T]``, ``trace`` name → array ``[S]`` (``trace["step"]`` int64), ``storage_dtype``
    (``float32``, ``float16``, ``bfloat16`` or ``float64``) and ``storage_select`` (the ``select=`` spec of a
    recorded parameter subset, None for all).
    """

    def __init__(self, path: str | os.PathLike, validate: bool = True,
                 storage_options: dict[str, Any] | None = None):
        self.path = str(path)
        self.is_url = is_url(self.path)
        self.storage_options = storage_options
        self._group, self._local = _open_group(path, storage_options)
        attrs = dict(self._group.attrs)
        meta = attrs.get(fmt.ROOT_ATTR)
        if not isinstance(meta, dict):
            raise ArchiveError(f"{self.path}: not a trajkit archive (root zarr.json has no 'trajkit' attribute)")
        version = meta.get("format_version")
        if isinstance(version, int) and version > fmt.FORMAT_VERSION:
            raise ArchiveError(f"{self.path}: written in archive format v{version}, newer than this trajkit "
                               f"reads (v{fmt.FORMAT_VERSION}); upgrade: pip install -U trajkit")
        if validate:
            validate_metadata(meta, self.path)
        self.metadata: dict[str, Any] = meta
        self.layout: Layout = meta["layout"]
        self.n_params = int(meta["model"]["n_params"])
        try:
            snap_attrs = dict(self._group[fmt.SNAPSHOTS].attrs)
            self._params_meta = self._group[fmt.PARAMS].metadata.to_dict()
        except KeyError as e:
            raise ArchiveError(f"{self.path}: missing {e.args[0] if e.args else 'snapshots'} group/array; "
                               "not a complete trajkit archive") from None
        shape = tuple(self._params_meta["shape"])
        if len(shape) != 2 or shape[1] != self.n_params:
            raise ArchiveError(f"{self.path}: snapshots/params has shape {shape}, expected [T, {self.n_params}]")
        self.n_snapshots = min(int(snap_attrs.get("committed", 0)), shape[0])
        self._snap_attrs = snap_attrs
        self.params = Params(self)

    # -- 1-D arrays -----------------------------------------------------------------------------------------

    def _read1d(self, name: str, n: int) -> np.ndarray:
        try:
            arr = self._group[name]
        except KeyError:
            raise ArchiveError(f"{self.path}: missing array {name}") from None
        n = min(n, arr.shape[0])
        return np.asarray(arr[:n])

    @cached_property
    def steps(self) -> np.ndarray:
        return self._read1d(fmt.STEP, self.n_snapshots).astype(np.int64)

    @cached_property
    def times(self) -> np.ndarray:
        return self._read1d(fmt.TIME, self.n_snapshots)

    @cached_property
    def epochs(self) -> np.ndarray:
        return self._read1d(fmt.EPOCH, self.n_snapshots)

    @cached_property
    def metrics(self) -> dict[str, np.ndarray]:
        try:
            g = self._group[fmt.METRICS]
        except KeyError:
            return {}
        return {name: self._read1d(f"{fmt.METRICS}/{name}", self.n_snapshots) for name in array_names(g)}

    @cached_property
    def trace_length(self) -> int:
        try:
            trace_attrs = dict(self._group[fmt.TRACE].attrs)
        except KeyError:
            return 0
        return fmt.committed_trace_rows(self._snap_attrs, trace_attrs)

    @cached_property
    def trace(self) -> dict[str, np.ndarray]:
        try:
            g = self._group[fmt.TRACE]
        except KeyError:
            return {}
        return {name: self._read1d(f"{fmt.TRACE}/{name}", self.trace_length) for name in array_names(g)}

    # -- conveniences ---------------------------------------------------------------------------------------

    @cached_property
    def storage_dtype(self) -> str:
        """The params' storage dtype: metadata ``/storage/dtype``, else the array's (bfloat16 by its tag)."""
        name = (self.metadata.get("storage") or {}).get("dtype")
        if name is None:
            doc = self._params_meta
            name = (doc.get("attributes") or {}).get(dtypes.DTYPE_ATTR) or str(doc.get("data_type", "float32"))
        return dtypes.check_dtype(name, f"{self.path}: snapshots/params")

    @property
    def storage_select(self) -> str | None:
        """The ``select=`` spec the parameters were recorded with (None: every trainable parameter)."""
        return (self.metadata.get("storage") or {}).get("select")

    @property
    def run_id(self) -> str:
        return self.metadata["run_id"]

    def select(self, spec: str = "all") -> Selection:
        """A parameter subset as tensor ranges; see :func:`trajkit.archive.layout.select_columns`."""
        return select_columns(self.layout, spec, self.path)

    def row(self, step: int, nearest: bool = False) -> int:
        """Row index of snapshot ``step``; with ``nearest`` the closest snapshot, else an error naming it."""
        steps = self.steps
        if steps.size == 0:
            raise ArchiveError(f"{self.path}: archive has no committed snapshots")
        i = int(np.searchsorted(steps, step))
        if i < steps.size and steps[i] == step:
            return i
        cand = [j for j in (i - 1, i) if 0 <= j < steps.size]
        best = min(cand, key=lambda j: abs(int(steps[j]) - step))
        if nearest:
            return best
        raise ArchiveError(f"{self.path}: step {step} is not a snapshot; nearest snapshot is step "
                           f"{int(steps[best])} (or pass snap=nearest)")

    def state_dict(self, row: int = -1) -> dict[str, Any]:
        """Tensors of snapshot ``row`` keyed by layout name (load with ``model.load_state_dict(..., strict=False)``)."""
        import torch

        if self.n_snapshots == 0:
            raise ArchiveError(f"{self.path}: archive has no committed snapshots")
        flat = self.params[row, :]
        return {e["name"]: torch.from_numpy(flat[e["offset"]:e["offset"] + e["size"]].reshape(e["shape"]).copy())
                for e in self.layout}

    def disk_usage(self) -> tuple[int, int]:
        """(bytes on disk, logical bytes of committed params) for a local archive; (-1, logical) otherwise."""
        logical = self.n_snapshots * self.n_params * dtypes.itemsize(self.storage_dtype)
        if self._local is None:
            return -1, logical
        total = sum(f.stat().st_size for f in self._local.rglob("*") if f.is_file())
        return total, logical

    def params_disk_bytes(self) -> int:
        """Bytes of the ``snapshots/params`` chunk files on disk (data only), or -1 when not local."""
        if self._local is None:
            return -1
        total = 0
        for _, p in fmt.params_chunk_files(self._local / fmt.PARAMS, fmt.key_separator(self._params_meta)):
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        return total

    def __repr__(self) -> str:
        return (f"Archive({self.path!r}, run_id={self.run_id[:8]}, N={self.n_params}, T={self.n_snapshots})")


def open_archive(path: str | os.PathLike, validate: bool = True,
                 storage_options: dict[str, Any] | None = None) -> Archive:
    """Open an archive (directory, zip, or fsspec URL) for reading; metadata is schema-validated.

    ``storage_options``: fsspec options of a URL (``{"anon": True}``, ``{"endpoint_url": ...}``); without
    them an ``s3://`` URL takes its credentials and endpoint from the AWS environment variables."""
    if isinstance(path, Archive):
        return path
    return Archive(path, validate=validate, storage_options=storage_options)
