"""Record a Hugging Face ``transformers.Trainer`` run: ``Trainer(..., callbacks=[TrajkitCallback("run.trajkit")])``.

The callback opens a :class:`trajkit.Recorder` on the world's process 0 when the first step begins, with the
trainer's optimiser (accelerate's wrapper unwrapped; snapshot copies overlap the next forward/backward
pass), and records, per optimiser step k (``state.global_step``, after the step): ``trace/lr`` — the
learning rate that step used, ``trace/loss`` at the steps the trainer logs (``logging_steps``; the trainer's
logged value: the mean training loss since the previous log, averaged over processes — use
``logging_steps=1`` for every step), the fractional epoch, and a snapshot when the schedule selects k.
``trainer.train(resume_from_checkpoint=...)`` resumes the archive at the checkpoint's step (see
:mod:`trajkit.integrations._recording`); a step the trainer will checkpoint is made durable in the archive
before the checkpoint is written. Needs ``pip install 'trajkit[transformers]'``.
"""

from __future__ import annotations

import os
from typing import Any

from trajkit.integrations._recording import Recording, attached_twice, learning_rate, require, torch_optimizers

transformers = require("transformers", "transformers", "Hugging Face transformers (transformers>=4.40, accelerate)")

__all__ = ["TrajkitCallback"]


class TrajkitCallback(transformers.TrainerCallback):
    """Record the trajectory of ``Trainer.train`` into the archive at ``path``.

    ``schedule`` (a :mod:`trajkit.schedules` schedule over ``state.global_step``), ``metadata`` and any other
    keyword (``evaluate``, ``writer``, ``buffers``, ``compressor``, ``fsync``, ``direct``) go to
    :class:`trajkit.Recorder`; ``resume``, ``optimizer`` and ``process_group`` are the callback's (global rank 0
    records alone).
    """

    def __init__(self, path: str | os.PathLike, schedule: Any = None, *, metadata: dict | None = None,
                 **recorder_kwargs: Any):
        self._recording = Recording("TrajkitCallback", path, schedule, metadata, recorder_kwargs,
                                    {"name": "transformers", "version": transformers.__version__})
        self._starting = False   # train() began, its first step not yet: a second on_train_begin = attached twice
        self._lr: float | None = None
        self._pending: tuple[int, float | None, float | None] | None = None   # a step whose loss the log brings

    @property
    def path(self):
        return self._recording.path

    def __repr__(self) -> str:
        return f"TrajkitCallback({str(self.path)!r}, schedule={self._recording.schedule!r})"

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        if self._starting:
            raise attached_twice("TrajkitCallback", self.path)
        self._recording.close()   # left open by an earlier train() that raised
        self._starting = True

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        rec = self._recording
        if self._starting:
            self._starting = False
            if state.is_world_process_zero:
                rec.open(model, torch_optimizers([optimizer]), state.global_step)
        if rec.is_open:
            self._issue(None, control)
            self._lr = learning_rate(torch_optimizers([optimizer]))

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self._recording.is_open:
            self._pending = (state.global_step, self._lr, state.epoch)
            if not control.should_log:
                self._issue(None, control)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if self._pending is not None and logs and "loss" in logs:
            self._issue(logs["loss"], control)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._starting = False
        if self._recording.is_open:
            self._issue(None, control)
        self._recording.close()

    def _issue(self, loss: Any, control) -> None:
        """Record the pending step (with ``loss`` if the trainer logged one); durable now if it is saved next."""
        if self._pending is None:
            return
        (step, lr, epoch), self._pending = self._pending, None
        self._recording.record(step, loss=loss, lr=lr, epoch=epoch)
        if control.should_save:
            self._recording.flush()
