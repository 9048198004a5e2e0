"""Record a PyTorch Lightning run: ``Trainer(callbacks=[TrajkitCallback("run.trajkit", schedule=...)])``.

The callback opens a :class:`trajkit.Recorder` on global rank 0 when training starts, with the trainer's
optimisers (snapshot copies overlap the next forward/backward pass), and records, per optimiser step k
(``trainer.global_step``, after the step): ``trace/loss`` — the loss ``training_step`` returned for the
batch that completed the step (as Lightning hands it to ``on_train_batch_end``: divided by
``accumulate_grad_batches``), ``trace/lr`` — the learning rate that step used (first parameter group of the
first optimiser), the fractional epoch, and a snapshot when the schedule selects k. ``trainer.fit(model,
ckpt_path=...)`` resumes the archive at the checkpoint's step (see :mod:`trajkit.integrations._recording`);
each checkpoint save first makes the archive durable up to its step. Needs ``pip install 'trajkit[lightning]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from trajkit.errors import TrajkitError
from trajkit.integrations._recording import Recording, attached_twice, learning_rate, require, torch_optimizers

lightning = require("lightning", "lightning", "PyTorch Lightning (lightning>=2.2)")
pl = require("lightning.pytorch", "lightning", "PyTorch Lightning (lightning>=2.2)")

__all__ = ["TrajkitCallback"]


class TrajkitCallback(pl.Callback):
    """Record the trajectory of ``Trainer.fit`` into the archive at ``path``.

    ``schedule`` (a :mod:`trajkit.schedules` schedule over ``trainer.global_step``), ``metadata`` and any other
    keyword (``evaluate``, ``writer``, ``buffers``, ``compressor``, ``fsync``, ``direct``) go to
    :class:`trajkit.Recorder`; ``resume``, ``optimizer`` and ``process_group`` are the callback's (global rank 0
    records alone).
    """

    def __init__(self, path: str | os.PathLike, schedule: Any = None, *, metadata: dict | None = None,
                 **recorder_kwargs: Any):
        self._recording = Recording("TrajkitCallback", path, schedule, metadata, recorder_kwargs,
                                    {"name": "lightning", "version": lightning.__version__})
        self._lr: float | None = None

    @property
    def path(self):
        return self._recording.path

    def __repr__(self) -> str:
        return f"TrajkitCallback({str(self.path)!r}, schedule={self._recording.schedule!r})"

    def setup(self, trainer, pl_module, stage: str) -> None:
        mine = [cb for cb in trainer.callbacks if isinstance(cb, TrajkitCallback)
                and (cb is self or os.path.abspath(cb.path) == os.path.abspath(self.path))]
        if len(mine) > 1:
            raise attached_twice("TrajkitCallback", self.path)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            if self._recording.is_open:
                raise TrajkitError(f"TrajkitCallback: {self.path} is already being recorded by this callback; "
                                   f"use one callback per Trainer.fit")
            self._recording.open(pl_module, torch_optimizers(trainer.optimizers), trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._recording.is_open:
            self._lr = learning_rate(trainer.optimizers)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rec = self._recording
        step = trainer.global_step
        if not rec.is_open or step == rec.last_step:   # not rank 0, or a batch accumulating gradients
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        n = trainer.num_training_batches
        epoch = trainer.current_epoch + ((batch_idx + 1) / n if math.isfinite(n) and n else 0.0)
        rec.record(step, loss=loss, lr=self._lr, epoch=epoch)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._recording.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        self._recording.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._recording.close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._recording.close()
