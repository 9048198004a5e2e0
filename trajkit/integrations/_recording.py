"""What the Lightning and Hugging Face callbacks share: a Recorder opened at the trainer's step.

A trainer's step counts optimiser steps, like ``Recorder.step``: the callback calls ``record(k, ...)`` once
the model holds w(k). A fresh run (step 0 at the start) records step 0 and refuses an existing archive; a
run resumed from the trainer's checkpoint at step G (``Trainer.fit(ckpt_path=...)``,
``Trainer.train(resume_from_checkpoint=...)``) reopens the archive and its first row is G + 1, which drops
every archived row after the checkpoint (rows up to G were committed by :meth:`Recording.flush` before the
checkpoint was saved), so the archive continues exactly as the trainer does. Only the process of global rank
0 records (under DDP the parameters are replicated); the others open nothing.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from trajkit.archive.metadata import deep_merge
from trajkit.errors import TrajkitError
from trajkit.record.recorder import Recorder
from trajkit.validation import did_you_mean

#: Recorder arguments a callback sets itself
OWN_ARGUMENTS = ("model", "resume", "optimizer", "process_group")


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise one line naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrajkitError(f"trajkit.integrations.{extra} needs {what}, which is not installed: "
                           f"pip install 'trajkit[{extra}]'") from None


def torch_optimizers(optimizers: Any) -> list[torch.optim.Optimizer]:
    """The torch optimisers whose ``step`` actually runs, unwrapping wrappers such as accelerate's
    ``AcceleratedOptimizer`` (its ``.optimizer``)."""
    out = []
    for opt in optimizers or []:
        while isinstance(getattr(opt, "optimizer", None), torch.optim.Optimizer):
            opt = opt.optimizer
        if opt is not None:
            out.append(opt)
    return out


def learning_rate(optimizers: list[torch.optim.Optimizer]) -> float | None:
    """The learning rate of the first parameter group of the first optimiser (None without one)."""
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None


def attached_twice(owner: str, path: Path) -> TrajkitError:
    return TrajkitError(f"{owner}: a TrajkitCallback recording into {path} is attached to this trainer twice; "
                        f"attach it once (or give each callback its own path)")


class Recording:
    """One callback's recording: the Recorder's arguments until :meth:`open`, then the Recorder."""

    def __init__(self, owner: str, path: str | os.PathLike, schedule: Any, metadata: dict | None,
                 recorder_kwargs: dict[str, Any], integration: dict[str, str]):
        allowed = [n for n in inspect.signature(Recorder).parameters if n not in ("path", "schedule", "metadata")]
        for name in recorder_kwargs:
            if name in OWN_ARGUMENTS:
                raise TrajkitError(f"{owner}: {name}= is set by the callback (the trainer's model, optimiser, "
                                   f"process group and checkpoint resume); leave it out")
            if name not in allowed:
                raise TrajkitError(f"{owner}: unknown argument {name!r}{did_you_mean(name, allowed)}")
        self.owner = owner
        self.path = Path(path)
        self.schedule = schedule
        self.metadata = deep_merge({"integration": integration}, metadata or {})
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None
        self.last_step: int | None = None

    @property
    def is_open(self) -> bool:
        return self.recorder is not None

    def open(self, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer], step: int) -> None:
        """Open the archive for a run now at optimiser step ``step`` (0: a fresh run, > 0: resumed)."""
        self.close()
        if step == 0 and self.path.exists():
            raise TrajkitError(f"{self.owner}: {self.path} already exists and this run starts at step 0; choose "
                               f"another path or delete it (a run resumed from the trainer's checkpoint continues it)")
        self.recorder = Recorder(self.path, model, schedule=self.schedule, metadata=self.metadata,
                                 resume="allow" if step > 0 else "never", optimizer=optimizers or None,
                                 process_group=False,   # DDP: global rank 0 alone records (replicated params)
                                 **self.recorder_kwargs)
        self.last_step = step
        if step == 0:
            self.record(0, epoch=0.0)

    def record(self, step: int, loss: Any = None, lr: float | None = None, epoch: float | None = None) -> None:
        assert self.recorder is not None
        self.recorder.step(step, loss=loss, lr=lr, epoch=epoch)
        self.last_step = step

    def flush(self) -> None:
        """Make everything recorded so far durable (before the trainer writes a checkpoint)."""
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> None:
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close()
