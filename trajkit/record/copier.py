"""Device copies: snapshot a model's parameters into preallocated host buffers.

``ParamCopier.copy_into(slot)`` flattens the trainable parameters, in layout order, into host buffer
``slot`` (float32 by default, length ``padded_size``; entries past N stay NaN as zarr chunk padding).
With ``dtype`` (the archive's storage dtype, :mod:`trajkit.archive.dtypes`) the host buffers hold that
dtype and the cast happens in the copy into them (``Tensor.copy_``: round to nearest even, as
``Tensor.to`` does); a bfloat16 slot's ``host`` is the uint16 view of the same bytes. With
``replicas=R`` every tensor carries a leading replica axis (``[R', *shape]``, R' ≤ R: the replicas still
training) and a slot is ``R`` such rows, ``host[r]`` page-aligned, replica r's row — the batched path of
``trajkit record`` (:class:`~trajkit.record.batch.BatchRecorder`).

- CPU: straight into views of the numpy-backed buffer, on the training thread or, overlapped, on a copy
  thread (:func:`copy_row`: large tensors by ``memcpy`` — 256 KiB and up inline, 8 MiB and up on the copy
  thread —, the rest in one ``torch._foreach_copy_``; a ``copy_`` per tensor for the batched path).
- CUDA: a device-to-device flatten on the current stream (microseconds, so the next optimiser step can
  overwrite the parameters), then a non-blocking device-to-host copy into *pinned* memory on a side
  stream, and a CUDA event the writer thread waits on. The training thread never synchronises the host.

``copy_into(k, overlap=True)`` (the Recorder with ``optimizer=``, :mod:`trajkit.record.overlap`) returns
before the parameters are read: on CPU the copy runs on one copy thread (one call that releases the GIL),
on CUDA the flatten too goes to the side stream. ``slot.params_read`` is then what must complete before the
parameters change — a :class:`CopyJob` (CPU) or a CUDA event (the flatten) — and
``slot.event`` what the writer waits on before it reads ``host``.

Zero copy (:class:`FlatParams`, CPU, the Recorder with ``optimizer=``): the parameters themselves are moved
into one page-aligned row in the archive's layout (``p.data`` becomes a view of it), so a snapshot needs no
copy at all: the writer thread writes the chunk files straight from the parameters' memory (``O_DIRECT``:
the device reads them by DMA) and checks their finiteness, and the next optimiser step waits on the row's
:class:`RowRead` until it has.
"""

from __future__ import annotations

import ctypes
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trajkit.archive import directio, dtypes


def host_buffer(n: int, pin_memory: bool = False, dtype: str = "float32") -> torch.Tensor:
    """A NaN-filled host tensor ``[n]`` of storage dtype ``dtype`` starting on a page boundary, so the writer
    can hand it to the device with ``O_DIRECT`` (:mod:`trajkit.archive.directio`); pinned for CUDA copies
    if asked."""
    tdtype = dtypes.torch_dtype(dtype)
    if not pin_memory:
        raw = directio.aligned_empty(n, dtypes.fill_value(dtype), dtypes.storage_numpy(dtype))
        return torch.from_numpy(raw.view(np.int16)).view(tdtype) if dtype == "bfloat16" else torch.from_numpy(raw)
    isz = dtypes.itemsize(dtype)
    base = torch.full((n + directio.ALIGN // isz,), float("nan"), dtype=tdtype, pin_memory=True)
    skip = (-base.data_ptr() % directio.ALIGN) // isz
    return base[skip:skip + n]


def host_array(host_t: torch.Tensor) -> np.ndarray:
    """The numpy view of a host buffer (bfloat16, which numpy lacks: its uint16 bit patterns)."""
    if host_t.dtype == torch.bfloat16:
        return host_t.view(torch.int16).numpy().view(np.uint16)
    return host_t.numpy()


@dataclass
class Slot:
    """One preallocated snapshot buffer: ``host`` ``[padded]`` (storage dtype) and, on CUDA, its device twin.

    ``event``: what the writer waits on before reading ``host`` (a CUDA event, a :class:`CopyJob`, or None);
    ``params_read``: with ``overlap=True``, what must finish before the parameters may change; ``finite``:
    whether the row's N values are all finite, when the copy thread already checked (None: not checked)."""

    host: np.ndarray
    host_tensor: torch.Tensor
    device_flat: torch.Tensor | None = None
    event: Any = None
    params_read: Any = None
    finite: bool | None = None


class CopyJob:
    """A snapshot copy running on the copy thread; :meth:`synchronize` waits for it and re-raises its error
    (the same method name as a CUDA event's, so the writer waits on either alike)."""

    def __init__(self, future: Future):
        self._future = future

    def synchronize(self) -> None:
        self._future.result()


class RowRead:
    """Set once the writer has read a snapshot row (its chunk files written, its finiteness checked); the
    next optimiser step waits on it (:meth:`synchronize`, the method name of :class:`CopyJob`). Also set when
    the writer skips the row after an earlier error, so nothing waits forever."""

    def __init__(self):
        self._event = threading.Event()
        #: seconds the optimiser step spent waiting for this row in :meth:`synchronize` (0.0: not at all)
        self.waited = 0.0

    def set(self) -> None:
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def synchronize(self) -> None:
        if not self._event.is_set():
            t0 = time.perf_counter()
            self._event.wait()
            self.waited += time.perf_counter() - t0


class FlatParams:
    """The parameters ``params`` moved into one page-aligned host row of ``padded_size`` entries (storage
    dtype ``dtype``), in layout order: each ``p.data`` becomes a view of ``slot.host_tensor``, whose entries
    past N stay NaN (the chunk padding). The row then *is* the snapshot: :attr:`slot` goes to the writer
    without a copy.

    Only for plain CPU tensors already of the storage dtype, no two sharing memory
    (:meth:`eligible`). :meth:`intact` tells whether the parameters still live there: a loop that rebinds
    ``p.data`` (``model.to``, ``model.half()``) or swaps a parameter out makes it False, and the Recorder goes
    back to copying.
    """

    def __init__(self, params: list[torch.Tensor], padded_size: int, dtype: str = "float32"):
        host_t = host_buffer(padded_size, dtype=dtype)
        self.params = params
        self.slot = Slot(host=host_array(host_t), host_tensor=host_t)
        off = 0
        with torch.no_grad():
            for p in params:
                view = host_t[off:off + p.numel()].view(p.shape)
                view.copy_(p)
                p.data = view
                off += p.numel()
        self._where = [(p.data_ptr(), p.stride()) for p in params]

    @staticmethod
    def eligible(params: list[torch.Tensor], dtype: str) -> bool:
        """Whether ``params`` can be moved into one row of storage dtype ``dtype``."""
        want = dtypes.torch_dtype(dtype)
        storages = set()
        for p in params:
            if (p.device.type != "cpu" or p.dtype != want or p.layout != torch.strided
                    or type(p.data) is not torch.Tensor):
                return False
            storages.add(p.untyped_storage().data_ptr())
        return len(storages) == len(params)   # tied views of one storage keep their own memory

    def intact(self) -> bool:
        """Whether every parameter still lives in the row, as placed."""
        return all((p.data_ptr(), p.stride()) == w for p, w in zip(self.params, self._where, strict=True))


class ParamCopier:
    """Copies ``params`` (a list of tensors, layout order) into ``n_slots`` host buffers.

    ``replicas=R``: the tensors are ``[R', *shape]`` and each slot holds ``R`` rows (``host`` ``[R, stride]``,
    ``stride`` ≥ ``padded_size`` a whole number of pages, so every row can go out with ``O_DIRECT``).
    """

    def __init__(self, params: list[torch.Tensor], padded_size: int, n_slots: int, replicas: int | None = None,
                 dtype: str = "float32"):
        self.replicas = replicas
        lead = 0 if replicas is None else 1
        sizes = [int(np.prod(p.shape[lead:], dtype=np.int64)) for p in params]
        self.params = params
        self.n = sum(sizes)
        self.device = params[0].device
        self.cuda = self.device.type == "cuda"
        self._offsets = np.cumsum([0, *sizes]).tolist()
        page = directio.ALIGN // dtypes.itemsize(dtype)
        stride = padded_size if replicas is None else -(-padded_size // page) * page
        self.padded_size = padded_size
        self.dtype = dtype
        self.slots: list[Slot] = []
        for _ in range(n_slots):
            host_t = host_buffer(stride * (replicas or 1), pin_memory=self.cuda, dtype=dtype)
            if replicas is not None:
                host_t = host_t.view(replicas, stride)
            slot = Slot(host=host_array(host_t), host_tensor=host_t)
            if self.cuda:
                shape = (self.n,) if replicas is None else (replicas, self.n)
                slot.device_flat = torch.empty(shape, dtype=host_t.dtype, device=self.device)
                slot.event = torch.cuda.Event()
            self.slots.append(slot)
        self._stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self._copy_thread: ThreadPoolExecutor | None = None
        self._view_cache: dict[int, tuple[tuple, list[torch.Tensor]]] = {}

    @torch.no_grad()
    def copy_into(self, k: int, params: list[torch.Tensor] | None = None, overlap: bool = False) -> Slot:
        """Snapshot the parameters (``params``, default those given at construction) into slot ``k``
        (asynchronously on CUDA: wait on ``slot.event``). Batched: rows ``0..R'-1`` of the slot.

        ``overlap=True``: return before the parameters are read; ``slot.params_read`` must complete before
        they change (see the module docstring)."""
        slot = self.slots[k]
        slot.finite = None
        offs = self._offsets
        params = self.params if params is None else params
        if self.replicas is None:
            host, flat = slot.host_tensor, slot.device_flat
            shape: tuple[int, ...] = (-1,)
        else:
            r = int(params[0].shape[0])
            host = slot.host_tensor[:r]
            flat = slot.device_flat[:r] if slot.device_flat is not None else None
            shape = (r, -1)
        if not self.cuda:
            views = self._views(k, params) if self.replicas is None else None
            if not overlap:
                if views is not None:
                    copy_row(views, params)
                else:
                    _copy_all(params, host, offs, shape)
                return slot
            if self._copy_thread is None:
                self._copy_thread = ThreadPoolExecutor(1, thread_name_prefix="trajkit-copy")
            if views is not None:   # check the row while it is hot in the copy thread's cache
                job = self._copy_thread.submit(_copy_checked, params, views, slot, self.n, self.dtype)
            else:
                job = self._copy_thread.submit(_copy_all, params, host, offs, shape)
            slot.event = slot.params_read = CopyJob(job)
            return slot
        assert flat is not None
        main = torch.cuda.current_stream(self.device)
        if overlap:   # flatten on the side stream too; the next optimiser step's stream waits for it
            self._stream.wait_stream(main)
            with torch.cuda.stream(self._stream):
                _copy_all(params, flat, offs, shape)
                slot.params_read = torch.cuda.Event()
                slot.params_read.record(self._stream)
                host[..., : self.n].copy_(flat, non_blocking=True)
                slot.event.record(self._stream)
            return slot   # the next flatten into ``flat`` is queued behind this copy on the same stream
        _copy_all(params, flat, offs, shape)
        self._stream.wait_stream(main)
        with torch.cuda.stream(self._stream):
            host[..., : self.n].copy_(flat, non_blocking=True)
            slot.event.record(self._stream)
        # the next snapshot into this slot must not overwrite ``flat`` before the copy finished
        main.wait_event(slot.event)
        return slot

    def _views(self, k: int, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Slot ``k``'s host row as one view per tensor, shaped like ``params`` (kept while the shapes stay),
        for :func:`copy_row`."""
        shapes = tuple(tuple(p.shape) for p in params)
        cached = self._view_cache.get(k)
        if cached is None or cached[0] != shapes:
            host, offs = self.slots[k].host_tensor, self._offsets
            cached = self._view_cache[k] = (shapes, [host[offs[i]:offs[i + 1]].view(shapes[i])
                                                     for i in range(len(params))])
        return cached[1]

    def close(self) -> None:
        """Wait for copies still running on the copy thread and stop it."""
        if self._copy_thread is not None:
            self._copy_thread.shutdown(wait=True)
            self._copy_thread = None


#: tensors of at least this many bytes are copied by ``memcpy`` (:func:`copy_row`) on the training thread
MEMCPY_MIN_BYTES = 256 << 10
#: the same on the copy thread of an overlapped copy, where each ``memcpy`` is one more release and
#: re-acquisition of the GIL shared with the training thread: only tensors whose copy takes a millisecond
#: or more (at 8 GB/s) go by ``memcpy`` there. Measured on the 2-core VM (MLP of 2.7 MB rows, batch 32,
#: copy waited on before ``opt.step``): snapshotting every step, foreach +12.8 % vs ``memcpy`` of its
#: three 256 KiB+ tensors +22.2 %; every 10 steps +9.8 % vs +7.9 % — no clear gain at that size, where a
#: 400 MB row copies at 6.3 vs 3.7 GB/s (benchmarks/snapshot_throughput.py).
THREAD_MEMCPY_MIN_BYTES = 8 << 20


@torch.no_grad()
def copy_row(views: list[torch.Tensor], params: list[torch.Tensor], min_bytes: int = MEMCPY_MIN_BYTES) -> None:
    """``views[i].copy_(params[i])`` for every tensor (CPU), as fast as this machine copies memory.

    A contiguous tensor of the view's dtype and at least ``min_bytes`` goes through libc ``memcpy``
    (``ctypes.memmove``, which releases the GIL): its ``rep movsb`` writes whole cache lines without reading
    them first, where torch's vectorised copy kernel reads every destination line it writes. Measured on the
    2-core VM with torch on one thread: 2.7 MB 9 vs 7 GB/s, 67 MB 8 vs 3.9 GB/s, 419 MB 7.3 vs 2.3 GB/s; a
    670 k-parameter MLP's row right after a training step 0.51 vs 0.68 ms. The rest (small tensors, casts
    to another storage dtype, strided or subclassed tensors) goes in one ``torch._foreach_copy_``: one
    dispatch and one release of the GIL for all of them, where a loop of ``copy_`` calls would hand the GIL
    back and forth with the training thread once per tensor. The overlapped copy thread passes
    :data:`THREAD_MEMCPY_MIN_BYTES`."""
    rest_v: list[torch.Tensor] = []
    rest_p: list[torch.Tensor] = []
    for v, p in zip(views, params, strict=True):
        nbytes = v.nbytes
        if (nbytes >= min_bytes and p.dtype == v.dtype and type(p) in _PLAIN and p.is_cpu
                and p.is_contiguous() and p.shape == v.shape):
            ctypes.memmove(v.data_ptr(), p.data_ptr(), nbytes)
        else:
            rest_v.append(v)
            rest_p.append(p)
    if rest_v:
        torch._foreach_copy_(rest_v, rest_p)


_PLAIN = (torch.Tensor, torch.nn.Parameter)


@torch.no_grad()
def _copy_checked(params: list[torch.Tensor], views: list[torch.Tensor], slot: Slot, n: int, dtype: str) -> None:
    """One row's copy into ``views`` (:meth:`ParamCopier._views`), then ``slot.finite``: the finiteness
    check the writer would otherwise make by reading the row back from memory (0.4 ms of the other core
    per 2.6 MiB row, cache-cold; a fraction of that here, where the row was just written)."""
    copy_row(views, params, THREAD_MEMCPY_MIN_BYTES)
    slot.finite = dtypes.all_finite(slot.host[:n], dtype)


@torch.no_grad()   # grad mode is per thread: the copy thread needs its own
def _copy_all(params: list[torch.Tensor], dest: torch.Tensor, offs: list[int], shape: tuple[int, ...]) -> None:
    """``dest[..., offs[i]:offs[i+1]] = params[i]`` flattened, for every tensor."""
    for i, p in enumerate(params):
        dest[..., offs[i]:offs[i + 1]].copy_(p.detach().reshape(shape))
