"""Device copies: snapshot a model's parameters into preallocated host buffers.

``ParamCopier.copy_into(slot)`` flattens the trainable parameters, in layout order, into host buffer
``slot`` (float32, length ``padded_size``; entries past N stay NaN as zarr chunk padding).

- CPU: one ``copy_`` per tensor straight into the numpy-backed buffer, on the training thread.
- CUDA: a device-to-device flatten on the current stream (microseconds, so the next optimiser step can
  overwrite the parameters), then a non-blocking device-to-host copy into *pinned* memory on a side
  stream, and a CUDA event the writer thread waits on. The training thread never synchronises the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trajkit.archive import directio


def host_buffer(n: int, pin_memory: bool = False) -> torch.Tensor:
    """A NaN-filled float32 host tensor ``[n]`` starting on a page boundary, so the writer can hand it to
    the device with ``O_DIRECT`` (:mod:`trajkit.archive.directio`); pinned for CUDA copies if asked."""
    if not pin_memory:
        return torch.from_numpy(directio.aligned_empty(n))
    base = torch.full((n + directio.SLACK,), float("nan"), dtype=torch.float32, pin_memory=True)
    skip = directio.aligned_start(base.data_ptr())
    return base[skip:skip + n]


@dataclass
class Slot:
    """One preallocated snapshot buffer: ``host`` float32 ``[padded]`` and, on CUDA, its device twin."""

    host: np.ndarray
    host_tensor: torch.Tensor
    device_flat: torch.Tensor | None = None
    event: Any = None


class ParamCopier:
    """Copies ``params`` (a list of tensors, layout order) into ``n_slots`` host buffers."""

    def __init__(self, params: list[torch.Tensor], padded_size: int, n_slots: int):
        self.params = params
        self.n = sum(p.numel() for p in params)
        self.device = params[0].device
        self.cuda = self.device.type == "cuda"
        self._offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
        self.slots: list[Slot] = []
        for _ in range(n_slots):
            host_t = host_buffer(padded_size, pin_memory=self.cuda)
            slot = Slot(host=host_t.numpy(), host_tensor=host_t)
            if self.cuda:
                slot.device_flat = torch.empty(self.n, dtype=torch.float32, device=self.device)
                slot.event = torch.cuda.Event()
            self.slots.append(slot)
        self._stream = torch.cuda.Stream(device=self.device) if self.cuda else None

    @torch.no_grad()
    def copy_into(self, k: int) -> Slot:
        """Snapshot the parameters into slot ``k`` (asynchronously on CUDA: wait on ``slot.event``)."""
        slot = self.slots[k]
        offs = self._offsets
        if not self.cuda:
            dst = slot.host_tensor
            for i, p in enumerate(self.params):
                dst[offs[i]:offs[i + 1]].copy_(p.detach().reshape(-1))
            return slot
        flat = slot.device_flat
        for i, p in enumerate(self.params):
            flat[offs[i]:offs[i + 1]].copy_(p.detach().reshape(-1))
        main = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(main)
        with torch.cuda.stream(self._stream):
            slot.host_tensor[: self.n].copy_(flat, non_blocking=True)
            slot.event.record(self._stream)
        # the next snapshot into this slot must not overwrite ``flat`` before the copy finished
        main.wait_event(slot.event)
        return slot
