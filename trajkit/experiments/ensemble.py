"""The ensemble directory: ``DIR/ensemble.json`` plus one archive per (sweep point, replica).

``ensemble.json`` = ``{"format": "trajkit-ensemble", "version": 1, "id": uuid4, "config": resolved base
config, "sweep": {key: [values]}, "runs": [{"path", "replica", "coords", "run_id", "status", "reason"}]}``
with ``status`` one of ``pending | done | diverged | failed``. It is rewritten atomically whenever a run
changes state, so an interrupted sweep knows what is finished: a second ``trajkit record`` with the same
config and ``--out`` skips ``done`` and ``diverged`` runs and resumes the others from their last snapshot.

Archive names: ``r00.trajkit`` without a sweep, else ``<key>=<value>[_<key>=<value>]_r00.trajkit`` with
each key's last component (e.g. ``temperature=0.0001_r03.trajkit``); the coordinates themselves live in
metadata (``ensemble.coords``), never only in the name.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from trajkit.errors import ConfigError
from trajkit.experiments.config import Config

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "trajkit-ensemble"
VERSION = 1
STATUSES = ("pending", "done", "diverged", "failed")


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
    """The ``ensemble.json`` of ``directory``, or None when there is none."""
    p = Path(directory) / ENSEMBLE_FILE
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: unreadable ({e}); restore it or choose a new --out") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("runs"), list):
        raise ConfigError(f"{p}: not a trajkit ensemble file (format != {FORMAT!r}); choose a new --out")
    return doc


def save_ensemble(directory: str | Path, doc: dict[str, Any]) -> None:
    """Write ``ensemble.json`` atomically (a reader sees the old or the new file)."""
    p = Path(directory) / ENSEMBLE_FILE
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    os.replace(tmp, p)
