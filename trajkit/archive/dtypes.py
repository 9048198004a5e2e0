"""Storage dtypes of ``snapshots/params``: what an archive stores and how readers decode it.

=============  ====================  ==================  =========================================
dtype          zarr ``data_type``    bytes / parameter   read as
=============  ====================  ==================  =========================================
``float32``    ``float32``           4                   float32 (the default)
``float16``    ``float16``           2                   float32 (exact widening)
``bfloat16``   ``uint16`` + tag      2                   float32 (exact widening)
``float64``    ``float64``           8                   float64 (a float64 run, losslessly)
=============  ====================  ==================  =========================================

zarr v3 has no bfloat16 data type, so a bfloat16 archive stores the raw 16-bit patterns as ``uint16`` and
tags the array (``snapshots/params/zarr.json`` attribute ``trajkit_dtype: "bfloat16"``; root metadata
``/storage/dtype``). A bfloat16 value is the upper half of a float32: :func:`decode` shifts it back
exactly; :func:`encode` rounds float32 to nearest even as ``torch.Tensor.to(torch.bfloat16)`` does (NaN
stays a quiet NaN, ``0x7FC0``, which is also the fill value of padding). Kernels accumulate in float64
whatever the storage dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.errors import ArchiveError

STORAGE_DTYPES = ("float32", "float16", "bfloat16", "float64")
DEFAULT_DTYPE = "float32"
#: array attribute that tags a ``uint16`` params array as bfloat16
DTYPE_ATTR = "trajkit_dtype"
#: the bfloat16 quiet NaN (fill value of bfloat16 padding)
BF16_NAN = 0x7FC0


def check_dtype(dtype: Any, where: str = "Recorder") -> str:
    """The storage dtype name of ``dtype`` (a name, numpy dtype or torch dtype); an error naming the choices."""
    name = str(dtype).removeprefix("torch.") if dtype is not None else DEFAULT_DTYPE
    if name not in STORAGE_DTYPES:
        from trajkit.validation import did_you_mean

        raise ArchiveError(f"{where}: dtype={dtype!r} is not a storage dtype of the archive format; use one of "
                           f"{', '.join(STORAGE_DTYPES)}{did_you_mean(name, STORAGE_DTYPES)}")
    return name


def itemsize(name: str) -> int:
    """Bytes per stored parameter."""
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[name]


def storage_numpy(name: str) -> np.dtype:
    """The numpy dtype of the bytes on disk (``uint16`` for bfloat16)."""
    return np.dtype("<u2") if name == "bfloat16" else np.dtype(name).newbyteorder("<")


def zarr_data_type(name: str) -> str:
    """The zarr v3 ``data_type`` of the params array."""
    return "uint16" if name == "bfloat16" else name


def read_dtype(name: str) -> np.dtype:
    """What readers return: float64 for float64 archives, float32 otherwise."""
    return np.dtype(np.float64) if name == "float64" else np.dtype(np.float32)


def fill_value(name: str) -> Any:
    """The stored NaN used as chunk padding (bit pattern for bfloat16)."""
    return BF16_NAN if name == "bfloat16" else np.nan


def decode(raw: np.ndarray, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values ``raw`` as the read dtype (into ``out`` when given)."""
    if name == "bfloat16":
        wide = (np.asarray(raw, dtype=np.uint32) << 16).view(np.float32)
    else:
        wide = raw
    if out is None:
        return np.asarray(wide, dtype=read_dtype(name))
    out[...] = wide
    return out


def encode(values: np.ndarray, name: str) -> np.ndarray:
    """Float values as stored (bfloat16: round to nearest even from float32, as torch does)."""
    if name != "bfloat16":
        return np.asarray(values, dtype=storage_numpy(name))
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    return np.where(np.isnan(u.view(np.float32)), np.uint16(BF16_NAN), rounded)


def all_finite(stored: np.ndarray, name: str) -> bool:
    """Whether every stored value is finite (bfloat16: exponent bits not all ones)."""
    if name == "bfloat16":
        return bool(((stored & 0x7F80) != 0x7F80).all())
    return bool(np.isfinite(stored).all())


def torch_dtype(name: str) -> Any:
    """The torch dtype a host buffer of this storage dtype holds."""
    import torch

    return getattr(torch, name)
