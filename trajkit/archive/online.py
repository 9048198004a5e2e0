"""Online two-time arrays of an archive: the ``online/`` group (docs/FORMAT.md, "Online two-time observables").

A run recorded with ``Recorder(..., online=trajkit.online.TwoTime(...))`` measures, at each step
``tw + t`` of its grid, sums between the parameters ``a = w(tw)`` kept from the waiting time and
``b = w(tw + t)``, over the selected columns (float64 accumulation). Each measurement is one row ``m``:

=============================  =========  ===============================================
``online/tw_step``             int64      ``[M]`` waiting time t_w of the row
``online/step``                int64      ``[M]`` step t_w + t where it was measured
``online/epsilon``             float64    ``[M]`` cutoff ε of ``theta``
``online/<sum>``               float64    ``[M]`` ``dot`` Σa·b, ``sq`` Σ(b−a)², ``quart`` Σ(b−a)⁴,
                                          ``theta`` ΣΘ(ε−|b−a|), ``norm_a`` Σa², ``norm_b`` Σb²
``online/<sum>_per_layer``     float64    ``[M, L]`` the same per layer (when ``per_layer``)
=============================  =========  ===============================================

Rows are appended with the protocol of the snapshots (FORMAT.md §5): the values are written in place
past the committed rows, then ``committed`` in ``online/zarr.json`` is advanced by one atomic rename;
readers trust rows ``< committed``. What was measured (waiting times, lags, selection, ε rule, layers,
where the reference vectors were kept) is the root metadata ``/online``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import format as fmt
from trajkit.archive.writer import _Column
from trajkit.errors import ArchiveError

ONLINE = "online"
#: the sums of one measurement, in the order of the arrays' last axis
SUMS = ("dot", "sq", "quart", "theta", "norm_a", "norm_b")
#: rows per chunk of the online arrays
ONLINE_CHUNK = 1024


class _RowColumn(_Column):
    """A growable 2-D float64 array ``[M, width]`` written whole rows at a time (chunks ``[C, width]``,
    keys ``c.<i>.0``), by the same in-place writes as :class:`trajkit.archive.writer._Column`."""

    def __init__(self, root: Path, name: str, width: int, capacity: int, fsync: bool, length: int = 0,
                 create: bool = True):
        self.width = int(width)
        super().__init__(root, name, "float64", ONLINE_CHUNK * self.width, length * self.width, create,
                         capacity * self.width, fsync)
        if not create:   # the base read the shape's rows; it counts elements
            self.shape0 *= self.width

    def _write_meta(self, shape0: int | None = None) -> None:
        rows = (shape0 if shape0 is not None else self.shape0) // self.width
        doc = fmt.array_json((rows, self.width), (ONLINE_CHUNK, self.width), "float64", separator=".")
        self._meta.write(fmt.json_bytes(doc))

    def _chunk_path(self, c: int) -> Path:
        return self.dir / f"c.{c}.0"

    def write_rows(self, start: int, values: np.ndarray) -> None:
        self.write(start * self.width, np.asarray(values, np.float64).reshape(-1))

    def truncate(self, length: int) -> None:
        self.length = length * self.width

    def finalize(self, length: int) -> None:
        self.release()
        self.shape0 = length * self.width
        self._write_meta()
        self._meta.close()
        last = (length - 1) // ONLINE_CHUNK if length else -1
        for p in self.dir.iterdir():
            parts = p.name.split(".")
            if p.name.startswith(".") or (len(parts) == 3 and parts[0] == "c" and parts[1].isdigit()
                                          and int(parts[1]) > last):
                p.unlink()


class OnlineWriter:
    """Appends measurement rows to ``online/`` of the archive at ``root`` and commits them.

    ``n_layers``: width of the ``*_per_layer`` arrays (None: no per-layer arrays). ``existing``: the ``step``
    of the committed rows of an ``online/`` group to continue (a resumed run, :meth:`truncate` then drops
    the rows from the resume step on); None creates the group afresh.
    """

    def __init__(self, root: Path, n_layers: int | None, fsync: bool = False, capacity: int = 1024,
                 existing: np.ndarray | None = None):
        self.root, self.fsync = Path(root), fsync
        self.dir = self.root / ONLINE
        create = existing is None
        self._marker = fmt.MarkerFile(self.dir / "zarr.json", fsync)   # committed at every measured step
        self._steps: list[int] = [] if create else [int(x) for x in np.asarray(existing).reshape(-1)]
        self.committed = len(self._steps)
        if create:
            self.dir.mkdir(exist_ok=True)
            self._commit()
        cap, n = max(1, capacity), self.committed
        self._cols = {name: _Column(self.root, f"{ONLINE}/{name}", dtype, ONLINE_CHUNK, n, create, cap, fsync)
                      for name, dtype in (("tw_step", "int64"), ("step", "int64"), ("epsilon", "float64"),
                                          *((name, "float64") for name in SUMS))}
        self._layer_cols = ({} if n_layers is None else
                            {name: _RowColumn(self.root, f"{ONLINE}/{name}_per_layer", n_layers, cap, fsync, n,
                                              create) for name in SUMS})

    def truncate(self, step: int) -> int:
        """Drop the committed rows measured at ``step`` or later (one atomic commit, before any of them is
        overwritten); returns how many rows remain."""
        keep = int(np.searchsorted(np.asarray(self._steps, np.int64), step, side="left"))
        if keep < self.committed:
            self.committed = keep
            self._commit()
            for col in (*self._cols.values(), *self._layer_cols.values()):
                col.truncate(keep)
        del self._steps[keep:]
        return keep

    def _commit(self) -> None:
        self._marker.write(fmt.json_bytes(fmt.group_json({"committed": self.committed}), compact=True))

    def append(self, tw_step: np.ndarray, step: int, epsilon: np.ndarray, sums: np.ndarray) -> None:
        """Append and commit ``m`` rows measured at ``step``: ``tw_step [m]``, ``epsilon [m]`` and ``sums``
        float64 ``[m, 6, L]`` (:data:`SUMS` × layers; the totals are the sums over the last axis)."""
        m = int(np.asarray(tw_step).size)
        k = self.committed
        self._cols["tw_step"].write(k, np.asarray(tw_step, np.int64))
        self._cols["step"].write(k, np.full(m, step, np.int64))
        self._cols["epsilon"].write(k, np.asarray(epsilon, np.float64))
        totals = sums.sum(axis=2)
        for j, name in enumerate(SUMS):
            self._cols[name].write(k, totals[:, j])
            if name in self._layer_cols:
                self._layer_cols[name].write_rows(k, sums[:, j, :])
        self.committed = k + m
        self._commit()
        self._steps.extend([int(step)] * m)

    def close(self) -> None:
        """Trim every array to the committed rows and close the files."""
        for col in (*self._cols.values(), *self._layer_cols.values()):
            col.finalize(self.committed)
        self._marker.close()


@dataclass(frozen=True)
class OnlineRows:
    """The committed online measurements of an archive (see the module docstring for the arrays).

    ``spec`` is the metadata ``/online``; ``sums[name]`` float64 ``[M]``; ``per_layer[name]`` ``[M, L]``
    (empty without per-layer sums).
    """

    spec: dict[str, Any]
    tw_step: np.ndarray
    step: np.ndarray
    epsilon: np.ndarray
    sums: dict[str, np.ndarray]
    per_layer: dict[str, np.ndarray]

    @property
    def n_rows(self) -> int:
        return int(self.step.size)


def online_rows(archive: Any) -> OnlineRows | None:
    """The online measurements of an opened :class:`~trajkit.archive.Archive`, or None when it has none."""
    spec = archive.metadata.get(ONLINE)
    if not spec:
        return None
    g = archive._group
    try:
        committed = int(dict(g[ONLINE].attrs).get("committed", 0))
        read = {name: np.asarray(g[f"{ONLINE}/{name}"][:committed])
                for name in ("tw_step", "step", "epsilon", *SUMS)}
        per_layer = ({name: np.asarray(g[f"{ONLINE}/{name}_per_layer"][:committed]) for name in SUMS}
                     if spec.get("per_layer") else {})
    except KeyError as e:
        raise ArchiveError(f"{archive.path}: metadata /online is set but {e.args[0] if e.args else 'online/'} is "
                           "missing; run `trajkit validate`") from None
    return OnlineRows(spec, read["tw_step"].astype(np.int64), read["step"].astype(np.int64), read["epsilon"],
                      {k: read[k] for k in SUMS}, per_layer)


def online_problems(archive: Any) -> list[tuple[str, str, str]]:
    """``(kind, message, array)`` for each problem of the ``online/`` arrays (none without ``/online``)."""
    spec = archive.metadata.get(ONLINE)
    if not spec:
        return []
    g = archive._group
    try:
        committed = dict(g[ONLINE].attrs).get("committed")
    except KeyError:
        return [("structure", f"metadata /online is set but group {ONLINE}/ is missing", ONLINE)]
    if isinstance(committed, bool) or not isinstance(committed, int) or committed < 0:
        return [("structure", f"{ONLINE}/zarr.json attribute 'committed' is {committed!r}, expected an integer "
                              ">= 0", ONLINE)]
    want = {"tw_step": ("int64", 1), "step": ("int64", 1), "epsilon": ("float64", 1)}
    want.update({name: ("float64", 1) for name in SUMS})
    if spec.get("per_layer"):
        want.update({f"{name}_per_layer": ("float64", 2) for name in SUMS})
    out = []
    for name, (dtype, ndim) in want.items():
        full = f"{ONLINE}/{name}"
        try:
            meta = g[full].metadata.to_dict()
        except KeyError:
            out.append(("structure", f"missing array {full}", full))
            continue
        shape = meta["shape"]
        if str(meta["data_type"]) != dtype or len(shape) != ndim:
            out.append(("structure", f"{full} is {meta['data_type']} of rank {len(shape)}, expected {dtype} of "
                                     f"rank {ndim}", full))
        elif shape[0] < committed:
            out.append(("structure", f"{full} holds {shape[0]} rows but {ONLINE}/zarr.json says {committed} are "
                                     "committed", full))
        elif ndim == 2 and shape[1] != len(spec.get("layers", [])):
            out.append(("structure", f"{full} has {shape[1]} layer columns, metadata /online/layers lists "
                                     f"{len(spec.get('layers', []))}", full))
    return out
