"""Rebuild a run of ``trajkit record``: its network at a snapshot, its data, and a batched loss.

>>> run = rebuild("runs/digits-r0.trajkit")               # last snapshot       # doctest: +SKIP
>>> run.module                                             # nn.Module, snapshot loaded
>>> run.loss(W, split="test")                              # W float32 [B, N] -> float64 [B]

This is :func:`trajkit.models.rebuild` with the built-in datasets: the data is rebuilt from the archive's
``dataset.spec`` by :func:`~trajkit.experiments.datasets.build_dataset` unless ``data=`` is given. See
:mod:`trajkit.models.rebuilding` for the model registry, the batched evaluation and the RNG guarantee.
"""

from __future__ import annotations

from typing import Any

from trajkit.experiments.datasets import build_dataset
from trajkit.models.rebuilding import Rebuilt
from trajkit.models.rebuilding import rebuild as rebuild_model

__all__ = ["Rebuilt", "rebuild"]


def rebuild(archive: Any, step: int | None = None, *, data: Any = None, loss: str | None = None,
            device: str | None = "cpu", sample_batch: int = 4096) -> Rebuilt:
    """The run of ``archive`` (path or open Archive) at snapshot ``step`` (None: the last one).

    ``data`` (a :class:`~trajkit.experiments.Dataset` or a dict with ``X_train, y_train, X_test, y_test``)
    replaces the data rebuilt from ``dataset.spec``. The caller's torch and numpy global RNG states are
    left as they were. Raises :class:`~trajkit.errors.TrajkitError` with a one-line fix when the step is
    not a snapshot, the model is not registered (the message says how to register it), or the layouts
    disagree.
    """
    return rebuild_model(archive, step, data=data, loss=loss, device=device, sample_batch=sample_batch,
                         build_dataset=build_dataset)
