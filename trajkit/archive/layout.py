"""Parameter layout: where each tensor of a model lives in the flat parameter vector.

A layout is a list of entries ``{name, shape, offset, size, role, layer}`` in flattening order:
``w[offset:offset+size].reshape(shape)`` is tensor ``name``. ``role`` is ``bias`` for tensors whose name
ends in ``bias`` and ``weight`` otherwise; ``layer`` numbers the owning modules in order of first
appearance (0 = first layer). :func:`select_columns` turns a selection spec into a :class:`Selection`: the
chosen columns as contiguous ranges (tensors are contiguous in the flat vector), never a dense index array.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from trajkit.errors import ArchiveError

Layout = list[dict[str, Any]]

SELECT_HELP = ("'all', 'weights', 'biases', 'hidden' (all but the output layer), 'layer:K', "
               "or a tensor-name glob such as '0.*' (several joined by '+')")


class Selection:
    """A set of parameter columns held as sorted, disjoint, non-adjacent ranges ``[(start, stop), ...]``.

    What :func:`select_columns` / ``Archive.select`` return: ``size`` columns in all, in ``len(ranges)``
    contiguous runs, so a selection of N = 10⁸ columns costs a few integers, not an 800 MB index array.
    Iterating yields the column indices in increasing order; ``sel.indices()`` or ``np.asarray(sel)``
    materialises them as int64 ``[size]`` (only when asked). ``arch.params[rows, sel]`` reads only the
    chunks the ranges touch and equals ``X[rows][:, sel.indices()]``; the kernels read the ranges directly.
    ``Selection.from_indices`` turns any int index array into ranges (sorted, duplicates dropped).
    """

    __slots__ = ("_ranges", "n_params", "size", "spec")

    def __init__(self, ranges: Iterable[tuple[int, int]], n_params: int, spec: str | None = None):
        merged: list[tuple[int, int]] = []
        for a, b in sorted((int(a), int(b)) for a, b in ranges if int(b) > int(a)):
            if a < 0 or b > n_params:
                raise ArchiveError(f"column range [{a}, {b}) is outside 0..{n_params - 1}")
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._ranges = tuple(merged)
        self.n_params = int(n_params)
        self.size = sum(b - a for a, b in merged)
        self.spec = spec

    @classmethod
    def from_indices(cls, indices: Any, n_params: int) -> Selection:
        """The ranges of an int index array (any order; duplicates dropped); an error outside ``0..N-1``."""
        idx = np.unique(np.asarray(indices, dtype=np.int64).ravel())
        if idx.size and (idx[0] < 0 or idx[-1] >= n_params):
            raise ArchiveError(f"column selection has indices outside 0..{n_params - 1}")
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = np.concatenate([idx[:1], idx[breaks]])
        stops = np.concatenate([idx[breaks - 1] + 1, idx[-1:] + 1]) if idx.size else starts
        return cls(zip(starts.tolist(), stops.tolist(), strict=True), n_params)

    @classmethod
    def all(cls, n_params: int) -> Selection:
        """Every column ``[0, n_params)``."""
        return cls([(0, n_params)], n_params, "all")

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` half-open, sorted, disjoint and non-adjacent."""
        return list(self._ranges)

    @property
    def is_all(self) -> bool:
        """True when every column of ``[0, n_params)`` is selected."""
        return self.size == self.n_params

    @property
    def shape(self) -> tuple[int]:
        return (self.size,)

    @property
    def ndim(self) -> int:
        return 1

    def indices(self) -> np.ndarray:
        """The selected column indices, int64 ``[size]``, increasing (allocates ``8·size`` bytes)."""
        if not self._ranges:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self._ranges])

    def within(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges clipped to ``[lo, hi)``."""
        return [(max(a, lo), min(b, hi)) for a, b in self._ranges if a < hi and b > lo]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.indices()
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        for a, b in self._ranges:
            yield from range(a, b)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return self._ranges == other._ranges and self.n_params == other.n_params

    def __hash__(self) -> int:
        return hash((self._ranges, self.n_params))

    def __repr__(self) -> str:
        shown = ", ".join(f"{a}:{b}" for a, b in self._ranges[:4]) + (", ..." if len(self._ranges) > 4 else "")
        spec = f"{self.spec!r}, " if self.spec is not None else ""
        return f"Selection({spec}{self.size} of {self.n_params} columns in {len(self._ranges)} ranges [{shown}])"


def layout_from_named_parameters(named: list[tuple[str, Any]]) -> Layout:
    """Layout of ``model.named_parameters()`` (trainable ones), flattened in that order."""
    layout: Layout = []
    owners: dict[str, int] = {}
    offset = 0
    for name, p in named:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        layer = owners.setdefault(owner, len(owners))
        shape = [int(s) for s in p.shape]
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        layout.append({"name": name, "shape": shape, "offset": offset, "size": size,
                       "role": "bias" if name.endswith("bias") else "weight", "layer": layer})
        offset += size
    return layout


def single_tensor_layout(n_params: int) -> Layout:
    """The layout of a trajectory with no structure: one tensor ``params`` of shape ``[N]``."""
    return [{"name": "params", "shape": [n_params], "offset": 0, "size": n_params, "role": "weight",
             "layer": 0}]


def check_layout(layout: Layout, n_params: int, where: str) -> None:
    """Raise unless the entries tile ``[0, n_params)`` contiguously with consistent shapes."""
    offset = 0
    for i, e in enumerate(layout):
        size = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        if e["offset"] != offset or e["size"] != size:
            raise ArchiveError(f"{where}: layout entry {i} ({e['name']!r}) has offset {e['offset']} and size "
                               f"{e['size']}, expected offset {offset} and size {size} from its shape; "
                               "entries must tile the flat vector in order")
        offset += size
    if offset != n_params:
        raise ArchiveError(f"{where}: layout covers {offset} parameters but model.n_params is {n_params}")


def select_columns(layout: Layout, spec: str = "all", where: str = "archive") -> Selection:
    """The parameters chosen by ``spec``, as a :class:`Selection` of tensor ranges (no index array).

    ``spec`` is one of ``all``, ``weights``, ``biases``, ``hidden`` (every layer but the last),
    ``layer:K``, or a glob over tensor names; several specs joined by ``+`` are united.
    """
    entries: list[dict[str, Any]] = []
    last_layer = max(e["layer"] for e in layout)
    for part in str(spec).split("+"):
        part = part.strip()
        if part == "all":
            chosen = layout
        elif part in ("weights", "weight"):
            chosen = [e for e in layout if e["role"] == "weight"]
        elif part in ("biases", "bias"):
            chosen = [e for e in layout if e["role"] == "bias"]
        elif part == "hidden":
            chosen = [e for e in layout if e["layer"] < last_layer] if last_layer > 0 else []
        elif part.startswith("layer:"):
            try:
                k = int(part.split(":", 1)[1])
            except ValueError:
                raise ArchiveError(f"{where}: selection {part!r} is not layer:<integer>") from None
            chosen = [e for e in layout if e["layer"] == k]
        else:
            chosen = [e for e in layout if fnmatch.fnmatchcase(e["name"], part)]
        entries.extend(chosen)
    if not entries:
        names = ", ".join(e["name"] for e in layout[:8])
        raise ArchiveError(f"{where}: selection {spec!r} matches no parameters (tensors: {names}"
                           f"{', ...' if len(layout) > 8 else ''}); use {SELECT_HELP}")
    n_params = max(e["offset"] + e["size"] for e in layout)
    return Selection(((e["offset"], e["offset"] + e["size"]) for e in entries), n_params, str(spec))


def layer_slices(layout: Layout) -> dict[int, slice]:
    """Contiguous column range of each layer index, for per-layer sums (layers are contiguous)."""
    out: dict[int, list[int]] = {}
    for e in layout:
        lo, hi = out.get(e["layer"], [e["offset"], e["offset"]])
        out[e["layer"]] = [min(lo, e["offset"]), max(hi, e["offset"] + e["size"])]
    return {k: slice(lo, hi) for k, (lo, hi) in sorted(out.items())}
