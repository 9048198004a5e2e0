"""Lossless parameters of ``run.dtype = "float64"`` runs, kept beside the archive's float32 rows.

The archive's ``snapshots/params`` are float32 (what every analysis reads); a float64 run also writes
each snapshot's exact float64 parameters into the zarr v3 array ``<archive>/params_float64`` ``[steps + 1,
N]`` (chunks of one row, uncompressed, row ``s`` = step ``s``; rows of steps that are no snapshot are
never written and read as NaN). ``run.init_from`` and resuming read these rows, so a float64 run chained
or resumed continues from its exact parameters. Metadata: ``dtype = "float64"`` and
``params_float64 = "params_float64"``.

This sits in the experiments layer until the archive writer stores ``snapshots/params`` in float64 itself
(``create(..., dtype="float64")``); then the runner passes its dtype there and this module goes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

ARRAY = "params_float64"


class Float64Params:
    """The ``params_float64`` array of one archive: :meth:`write` a snapshot row, :meth:`read` one back."""

    def __init__(self, archive: str | Path, n_params: int, steps: int):
        path = Path(archive) / ARRAY
        if (path / "zarr.json").exists():
            self.array = zarr.open_array(str(path), mode="r+")
        else:
            self.array = zarr.create_array(str(path), shape=(steps + 1, n_params), chunks=(1, n_params),
                                           dtype="float64", fill_value=np.nan, compressors=None)

    def write(self, step: int, row: np.ndarray) -> None:
        self.array[step] = np.asarray(row, dtype=np.float64)


def read_float64_params(archive: str | Path, step: int) -> np.ndarray | None:
    """The exact float64 parameters ``[N]`` of ``archive`` at snapshot ``step``, or None when the archive has
    no ``params_float64`` row for it (a float32 run)."""
    path = Path(archive) / ARRAY
    if not (path / "zarr.json").exists():
        return None
    arr = zarr.open_array(str(path), mode="r")
    if step >= arr.shape[0]:
        return None
    row = np.asarray(arr[step], dtype=np.float64)
    return row if np.isfinite(row).all() else None
