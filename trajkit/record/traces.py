"""Per-step scalars (minibatch loss, learning rate, ...) gathered without a host sync per step.

Values may be Python numbers, numpy scalars or 0-d tensors on any device. CPU tensors are read at once;
device tensors are kept (detached) and only converted when the buffer is drained at a snapshot: on CUDA
one ``torch.stack`` and one non-blocking copy into pinned memory per column, completed by the writer after
a CUDA event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trajkit.errors import TrajkitError


@dataclass
class TraceBatch:
    """Drained trace rows: ``steps`` int64 ``[S]`` and per-name columns (numpy or pinned tensors)."""

    steps: np.ndarray
    columns: dict[str, Any]
    event: Any = None

    def resolve(self) -> dict[str, np.ndarray]:
        """Wait for pending device copies and return float64 numpy columns."""
        if self.event is not None:
            self.event.synchronize()
        return {k: (v.numpy() if isinstance(v, torch.Tensor) else v).astype(np.float64)
                for k, v in self.columns.items()}


@dataclass
class TraceBuffer:
    """Accumulates ``(step, {name: value})`` rows; :meth:`drain` hands them over as a :class:`TraceBatch`.

    :meth:`add` runs after every optimiser step with the caches cold from the training step, so it only
    appends the row (the caller's own dict) to a list: columns are built at :meth:`drain`, in one hot loop
    (``benchmarks/recorder_overhead.py`` reports the microseconds per plain step inside ``rec.step``)."""

    #: rows added one at a time since the last block or drain: ``(step, {name: value or None})``
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: blocks added by :meth:`extend` (and rows added before them), in order; ``n_blocked`` rows in all
    blocks: list[TraceBatch] = field(default_factory=list)
    n_blocked: int = 0

    def __len__(self) -> int:
        return len(self.rows) + self.n_blocked

    def add(self, step: int, scalars: dict[str, Any]) -> None:
        """Add one row; ``scalars`` (the caller's own dict, kept: not to be reused) gets its tensors replaced
        by what is kept. A bad value raises before anything is added."""
        for name, v in scalars.items():
            if type(v) is not float and isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise TrajkitError(f"trace scalar {name!r} must have one element, got shape {tuple(v.shape)}")
                # a CPU value is read now (no sync to avoid, and a float is lighter to keep than a tensor);
                # device tensors are kept and read in one batch at the next snapshot
                scalars[name] = v.item() if v.is_cpu else v.detach()
        self.rows.append((step, scalars))

    def extend(self, steps: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add a block of rows at once: ``steps`` int ``[k]`` and host columns ``{name: [k]}`` (the batched
        path, whose per-step values reach the host in blocks). Rows added one at a time before it stay first."""
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if self.rows:
            self._rows_to_block()
        self.blocks.append(TraceBatch(steps, {name: np.asarray(v, np.float64).reshape(steps.size)
                                              for name, v in columns.items()}))
        self.n_blocked += int(steps.size)

    def drain(self) -> TraceBatch | None:
        """Everything added since the last drain as one batch (None when empty)."""
        if not self.blocks:
            return self._drain_rows()
        if self.rows:
            self._rows_to_block()
        blocks, self.blocks, self.n_blocked = self.blocks, [], 0
        if len(blocks) == 1:
            return blocks[0]
        names = list(dict.fromkeys(name for b in blocks for name in b.columns))
        columns = {name: np.concatenate([b.columns[name] if name in b.columns else np.full(b.steps.size, np.nan)
                                         for b in blocks]) for name in names}
        return TraceBatch(np.concatenate([b.steps for b in blocks]), columns)

    def _rows_to_block(self) -> None:
        batch = self._drain_rows()
        if batch is not None:
            self.blocks.append(TraceBatch(batch.steps, batch.resolve()))
            self.n_blocked += int(batch.steps.size)

    def _drain_rows(self) -> TraceBatch | None:
        rows = self.rows
        if not rows:
            return None
        self.rows = []
        steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        names = list(dict.fromkeys(name for _, sc in rows for name, v in sc.items() if v is not None))
        columns: dict[str, Any] = {}
        event = None
        for name in names:
            vals = [sc.get(name) for _, sc in rows]
            devs = {v.device for v in vals if isinstance(v, torch.Tensor)}
            cuda = next((d for d in devs if d.type == "cuda"), None)
            if cuda is None:
                columns[name] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
                continue
            nan = torch.tensor(float("nan"), device=cuda)
            stacked = torch.stack([nan if v is None else torch.as_tensor(v, device=cuda).reshape(()).to(torch.float32)
                                   for v in vals]).to(torch.float32)
            host = torch.empty(stacked.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(stacked, non_blocking=True)
            columns[name] = host
            event = torch.cuda.Event()
            event.record()
        return TraceBatch(steps, columns, event)
