"""How many bytes a recording will write, before training: :func:`estimate_size` (``trajkit.estimate_size``).

The estimate counts the data files the writer creates, byte for byte: every snapshot row of
``snapshots/params`` in whole chunks (``ceil(N / C) · C · itemsize``, C the chunk width of
:func:`trajkit.archive.format.params_chunk_cols`), the 1-D arrays in whole chunk files (1,024 rows of
``snapshots/step``, ``time``, ``epoch`` and each metric, 8,192 rows of ``trace/step`` and each trace
scalar, 8 bytes a row), and the ``online/`` arrays (1,024 rows each). It leaves out the metadata
overhead — the ``zarr.json`` documents and the lock file, ≈ 10 KiB plus ≈ 0.3 KiB per layout tensor —
and, with a compressor, is an upper bound for the params chunks.

>>> est = trajkit.estimate_size(model, trajkit.schedules.log(1, 10**5, 200), last_step=10**5,
...                             dtype="bfloat16")                                    # doctest: +SKIP
>>> print(est)                                                                        # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trajkit.archive import dtypes
from trajkit.archive import format as fmt
from trajkit.archive.layout import Layout, select_columns, single_tensor_layout
from trajkit.archive.online import ONLINE_CHUNK, SUMS
from trajkit.errors import ArchiveError

#: upper bound of the metadata overhead left out of the estimate: fixed part and per layout tensor (bytes)
METADATA_BYTES = (16 * 1024, 400)


@dataclass(frozen=True)
class SizeEstimate:
    """Bytes a run will write: ``params``, ``snapshot_arrays`` (step, time, epoch, metrics), ``trace`` and
    ``online``; ``total`` their sum (``int(est)`` too). ``n_snapshots``, ``n_params`` (N kept), ``dtype``."""

    params: int
    snapshot_arrays: int
    trace: int
    online: int
    n_snapshots: int
    n_params: int
    dtype: str

    @property
    def total(self) -> int:
        return self.params + self.snapshot_arrays + self.trace + self.online

    def __int__(self) -> int:
        return self.total

    def __str__(self) -> str:
        return (f"{self.total:,} bytes: {self.n_snapshots} snapshots × {self.n_params:,} {self.dtype} parameters "
                f"({self.params:,} B), snapshot arrays {self.snapshot_arrays:,} B, trace {self.trace:,} B, "
                f"online {self.online:,} B (plus metadata, < {METADATA_BYTES[0] // 1024} KiB + "
                f"{METADATA_BYTES[1]} B per tensor)")


def estimate_size(model: Any, schedule: Any, last_step: int, *, dtype: str = "float32", select: str | None = None,
                  metrics: Sequence[str] = (), trace: Sequence[str] = ("loss",), online: Any = None) -> SizeEstimate:
    """Bytes written by recording ``model`` with ``schedule`` over steps ``0..last_step`` (module docstring).

    ``model``: a ``torch.nn.Module`` (its trainable parameters), a layout (list of entries) or the number
    of parameters N. ``dtype``, ``select`` and ``online`` as for :class:`trajkit.Recorder`; ``metrics``:
    the names ``evaluate`` returns at each snapshot; ``trace``: the per-step scalars passed to
    ``rec.step`` (``loss`` by default; ``trajkit record`` logs three).
    """
    name = dtypes.check_dtype(dtype, "estimate_size")
    full = layout = _layout(model)
    if select is not None:
        sel = select_columns(full, str(select), "estimate_size select")
        layout = [e for e in full if sel.within(e["offset"], e["offset"] + e["size"])]
    if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < 0:
        raise ArchiveError(f"estimate_size: last_step={last_step!r} must be an integer >= 0 (the run's last step)")
    n = sum(int(e["size"]) for e in layout)
    t = int(schedule.count(last_step))
    cc = fmt.params_chunk_cols(n, fmt.PARAMS_CHUNK_BYTES, dtypes.itemsize(name))
    params = t * (-(-n // cc) * cc) * dtypes.itemsize(name)
    snap = (3 + len(metrics)) * _chunked(t, fmt.SNAPSHOT_SCALAR_CHUNK)
    traced = (1 + len(trace)) * _chunked(last_step + 1, fmt.TRACE_CHUNK)
    return SizeEstimate(params, snap, traced, _online_bytes(online, full, last_step), t, n, name)


def _chunked(rows: int, chunk: int, width: int = 1) -> int:
    """Bytes of a float64/int64 array of ``rows`` rows in whole chunk files."""
    return math.ceil(rows / chunk) * chunk * 8 * width


def _online_bytes(online: Any, layout: Layout, last_step: int) -> int:
    if online is None:
        return 0
    rows = sum(1 for tw in online.waiting_times for t in (0, *online.lags) if tw + t <= last_step)
    total = (3 + len(SUMS)) * _chunked(rows, ONLINE_CHUNK)
    if online.per_layer:
        sel = select_columns(layout, online.select, "estimate_size online select")
        layers = {e["layer"] for e in layout if sel.within(e["offset"], e["offset"] + e["size"])}
        total += len(SUMS) * _chunked(rows, ONLINE_CHUNK, len(layers))
    return total


def _layout(model: Any) -> Layout:
    if isinstance(model, int) and not isinstance(model, bool):
        if model < 1:
            raise ArchiveError(f"estimate_size: n_params={model} must be >= 1")
        return single_tensor_layout(model)
    if isinstance(model, list):
        return model
    if hasattr(model, "named_parameters"):
        from trajkit.archive.layout import layout_from_named_parameters

        return layout_from_named_parameters([(k, p) for k, p in model.named_parameters() if p.requires_grad])
    raise ArchiveError(f"estimate_size: model must be a torch.nn.Module, a layout or a number of parameters, "
                       f"got {type(model).__name__}")
