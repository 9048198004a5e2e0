"""Parameter layout: where each tensor of a model lives in the flat parameter vector.

A layout is a list of entries ``{name, shape, offset, size, role, layer}`` in flattening order:
``w[offset:offset+size].reshape(shape)`` is tensor ``name``. ``role`` is ``bias`` for tensors whose name
ends in ``bias`` and ``weight`` otherwise; ``layer`` numbers the owning modules in order of first
appearance (0 = first layer). :func:`select_columns` turns a selection spec into column indices.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from trajkit.errors import ArchiveError

Layout = list[dict[str, Any]]

SELECT_HELP = ("'all', 'weights', 'biases', 'hidden' (all but the output layer), 'layer:K', "
               "or a tensor-name glob such as '0.*' (several joined by '+')")


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


def select_columns(layout: Layout, spec: str = "all", where: str = "archive") -> np.ndarray:
    """Column indices (int64, sorted) of the parameters chosen by ``spec``.

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
    cols = np.concatenate([np.arange(e["offset"], e["offset"] + e["size"], dtype=np.int64) for e in entries])
    return np.unique(cols)


def layer_slices(layout: Layout) -> dict[int, slice]:
    """Contiguous column range of each layer index, for per-layer sums (layers are contiguous)."""
    out: dict[int, list[int]] = {}
    for e in layout:
        lo, hi = out.get(e["layer"], [e["offset"], e["offset"]])
        out[e["layer"]] = [min(lo, e["offset"]), max(hi, e["offset"] + e["size"])]
    return {k: slice(lo, hi) for k, (lo, hi) in sorted(out.items())}
