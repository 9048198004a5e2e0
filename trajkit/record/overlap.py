"""Snapshot copies that overlap training: finished before the next optimiser step, not before ``step()`` returns.

Parameters change only inside ``optimizer.step()``. So when the Recorder knows the optimiser
(``Recorder(..., optimizer=opt)``), a snapshot's copy can run while the next forward and backward pass
compute; it only has to be complete when the optimiser next writes the parameters. :class:`StepGate`
registers a ``register_step_pre_hook`` on each optimiser that waits for the copy still in flight:

- CPU: the copy runs on one copy thread (``copy_`` releases the GIL); the hook blocks the training thread
  only if the copy has not finished by then.
- CUDA: the flatten runs on the Recorder's side stream; the hook makes the current stream wait on its
  event (``Stream.wait_event``): the GPU orders the optimiser's kernels after the copy, the host never
  synchronises.

A step with a closure (``opt.step(closure)``, as PyTorch Lightning calls it: the forward and backward pass
run inside ``step``) waits after the closure's first call instead, for torch's own optimisers, which all
evaluate the closure before they update; any other optimiser (SAM-like ones perturb the parameters before
calling it) waits before ``step``.

A loop that changes parameters outside the optimiser's ``step`` (weight clipping, re-normalisation,
``load_state_dict``) between ``rec.step`` and the next optimiser step must not pass ``optimizer=``: without
it the copy is finished before ``rec.step`` returns, as always.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from trajkit.errors import TrajkitError


def as_optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """``optimizer`` (one ``torch.optim.Optimizer``, an iterable of them, or None) as a list; bad values are
    one-line errors."""
    if optimizer is None:
        return []
    opts = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    if not isinstance(opts, Iterable):
        raise TrajkitError(f"Recorder: optimizer must be a torch.optim.Optimizer (or a list of them), "
                           f"got {type(optimizer).__name__}")
    opts = list(opts)
    for o in opts:
        if not isinstance(o, torch.optim.Optimizer):
            raise TrajkitError(f"Recorder: optimizer must be a torch.optim.Optimizer (or a list of them), "
                               f"got {type(o).__name__}; unwrap a wrapper to the torch optimiser it steps")
    return opts


class StepGate:
    """Makes every step of ``optimizers`` wait for the snapshot copy in flight (see the module docstring)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], device: torch.device):
        self.device = device
        self._pending: Any = None   # a CopyJob (CPU) or a CUDA event (the side-stream flatten)
        self._handles = [o.register_step_pre_hook(self._before_step) for o in optimizers]

    def hold(self, params_read: Any) -> None:
        """The copy now in flight: the next optimiser step waits for it."""
        self._pending = params_read

    def _before_step(self, optimizer, args, kwargs):
        if self._pending is None:
            return None
        # torch passes the step's positional arguments with the optimiser first: (opt, closure?)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None or not type(optimizer).__module__.startswith("torch.optim."):
            self.wait()
            return None

        def closure_then_wait():
            try:
                return closure()
            finally:
                self.wait()

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_wait}
        return (args[0], closure_then_wait, *args[2:]), kwargs

    def wait(self) -> None:
        """Let the parameters change: block (CPU) or order the current CUDA stream after the copy."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if isinstance(pending, torch.cuda.Event):
            torch.cuda.current_stream(self.device).wait_event(pending)
        else:
            pending.synchronize()

    def close(self) -> None:
        """Wait for the copy in flight, then remove the hooks."""
        try:
            self.wait()
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []
