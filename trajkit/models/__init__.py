"""What a recorded run is made of, and how to rebuild it: the layer under ``trajkit.experiments`` and
``trajkit.landscape``.

Modules: :mod:`~trajkit.models.architectures` (the built-in ``mlp``/``cnn``/``rnn`` and
:func:`build_model`), :mod:`~trajkit.models.losses` (per-sample losses and accuracy),
:mod:`~trajkit.models.data` (:class:`Dataset`), :mod:`~trajkit.models.registry` (rebuildable
architectures: the built-ins and the ``trajkit_register_models`` plugin hook, read by its own plugin
manager), :mod:`~trajkit.models.rebuilding` (:func:`rebuild`: a run's module at a snapshot and a
batched loss). This package imports neither ``trajkit.analysis``, ``trajkit.experiments`` nor
``trajkit.landscape``; ``import trajkit.models`` alone does not import torch (the names below that need
it load on first use).

>>> from trajkit.models import rebuild                                            # doctest: +SKIP
>>> rebuild("run.trajkit", data={"X_train": ..., ...}).loss(W)                    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from trajkit.models.data import Dataset
from trajkit.models.registry import ModelEntry, model_entry, model_spec_of, registered_models

__all__ = ["Dataset", "ModelEntry", "Rebuilt", "build_model", "model_entry", "model_spec_of", "rebuild",
           "registered_models"]

_LAZY = {"Rebuilt": "trajkit.models.rebuilding", "rebuild": "trajkit.models.rebuilding",
         "build_model": "trajkit.models.architectures"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trajkit.models' has no attribute {name!r}")
