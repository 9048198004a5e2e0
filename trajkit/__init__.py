"""trajkit: record neural-network training trajectories and analyse them like glasses.

>>> import trajkit
>>> with trajkit.Recorder("run.trajkit", model, schedule=trajkit.schedules.log(1, 5000, 100)) as rec:  # doctest: +SKIP
...     for step in range(5001):
...         loss = train_step()
...         rec.step(step, loss=loss)
>>> arch = trajkit.open_archive("run.trajkit")                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from trajkit import schedules
from trajkit.archive import open_archive
from trajkit.errors import TrajkitError
from trajkit.version import __version__

__all__ = ["Recorder", "TrajkitError", "__version__", "analyze", "estimate_size", "list_analyses", "load_result",
           "open_archive", "open_ensemble", "schedules"]

_LAZY = {
    "Recorder": ("trajkit.record", "Recorder"),
    "analyze": ("trajkit.analysis", "analyze"),
    "estimate_size": ("trajkit.archive.estimate", "estimate_size"),
    "list_analyses": ("trajkit.analysis", "list_analyses"),
    "load_result": ("trajkit.analysis", "load_result"),
    "open_ensemble": ("trajkit.analysis", "open_ensemble"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in ("archive", "record", "analysis", "experiments", "testing", "landscape", "online"):
        import importlib

        return importlib.import_module(f"trajkit.{name}")
    raise AttributeError(f"module 'trajkit' has no attribute {name!r}")
