"""The ensemble directory: ``DIR/ensemble.json`` plus one archive per (sweep point, replica).

``ensemble.json`` (read, validated and written atomically by :mod:`trajkit.archive.ensemble_file`, schema
``schemas/ensemble.schema.json``) lists the runs with ``status`` one of ``pending | done | diverged |
failed``, ``config`` being the resolved base config. It is rewritten whenever a run changes state, so
an interrupted sweep knows what is finished: a second ``trajkit record`` with the same config and
``--out`` skips ``done`` and ``diverged`` runs and resumes the others from their last snapshot.

Archive names: ``r00.trajkit`` without a sweep, else ``<key>=<value>[_<key>=<value>]_r00.trajkit`` with
each key's last component (e.g. ``temperature=0.0001_r03.trajkit``); the coordinates themselves live in
metadata (``ensemble.coords``), never only in the name.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from trajkit.archive.ensemble_file import (
    ENSEMBLE_FILE,
    FORMAT,
    STATUSES,
    VERSION,
    EnsembleFileError,
    read_ensemble_file,
    write_ensemble_file,
)
from trajkit.errors import ConfigError
from trajkit.experiments.config import Config

__all__ = ["ENSEMBLE_FILE", "FORMAT", "STATUSES", "VERSION", "load_ensemble", "new_ensemble", "point_label",
           "run_names", "save_ensemble"]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "-".join(_fmt_value(x) for x in v) or "none"
    return str(v)


def point_label(coords: dict[str, Any], keys: list[str]) -> str:
    """File-name label of a sweep point: ``temperature=0.001_hidden=64-64`` (``""`` without a sweep)."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    names = [t if tails.count(t) == 1 else k for t, k in zip(tails, keys, strict=True)]
    label = "_".join(f"{n}={_fmt_value(coords[k])}" for n, k in zip(names, keys, strict=True))
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", label)


def run_names(points: list[dict[str, Any]], keys: list[str], replicas: int) -> list[list[str]]:
    """Archive file name of each (point, replica); falls back to ``p000`` labels if two points collide."""
    labels = [point_label(c, keys) for c in points]
    if len(set(labels)) != len(labels) or any(len(lab) > 120 for lab in labels):
        labels = [f"p{i:03d}" for i in range(len(points))]
    return [[f"{lab + '_' if lab else ''}r{r:02d}.trajkit" for r in range(replicas)] for lab in labels]


def new_ensemble(config: Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A fresh ``ensemble.json`` document (every run pending)."""
    return {"format": FORMAT, "version": VERSION, "id": str(uuid.uuid4()), "config": config,
            "sweep": config["sweep"], "runs": runs}


def load_ensemble(directory: str | Path) -> dict[str, Any] | None:
    """The validated ``ensemble.json`` of ``directory``, or None when there is none."""
    try:
        return read_ensemble_file(directory)
    except EnsembleFileError as e:
        raise ConfigError(f"{e}; or choose a new --out") from None


def save_ensemble(directory: str | Path, doc: dict[str, Any]) -> None:
    """Validate ``doc`` and write ``ensemble.json`` atomically (a reader sees the old or the new file)."""
    write_ensemble_file(directory, doc)
