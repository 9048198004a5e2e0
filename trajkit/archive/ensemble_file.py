"""``ensemble.json``: the index of an ensemble directory, read and written here only.

An ensemble directory holds one archive per (sweep point, replica) and ``DIR/ensemble.json``::

    {"format": "trajkit-ensemble", "version": 1, "id": uuid4, "config": {...}, "sweep": {key: [values]},
     "runs": [{"path", "replica", "coords", "run_id", "status", "reason"}, ...]}

with ``status`` one of ``pending | done | diverged | failed`` (schema: ``schemas/ensemble.schema.json``,
draft 2020-12). Every document is validated when written and when read; it is written atomically (a temp
file in the same directory, fsync, ``os.replace``, fsync of the directory), so a reader — or a process
killed mid-write — sees the old file or the new one, never a mix.

>>> write_ensemble_file("runs", doc)            # doctest: +SKIP
>>> read_ensemble_file("runs")["runs"][0]["status"]   # doctest: +SKIP
'done'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trajkit.archive.metadata import schema_problems
from trajkit.archive.storage import is_url, join, read_text
from trajkit.errors import ArchiveError

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "trajkit-ensemble"
VERSION = 1
STATUSES = ("pending", "done", "diverged", "failed")
SCHEMA = "ensemble.schema.json"


class EnsembleFileError(ArchiveError):
    """An ``ensemble.json`` is unreadable, of another format or version, or fails its schema."""


def ensemble_file(directory: str | os.PathLike) -> Path:
    """The path ``directory/ensemble.json``."""
    return Path(directory) / ENSEMBLE_FILE


def check_ensemble(doc: Any, where: str | os.PathLike) -> None:
    """Raise :class:`EnsembleFileError` (one line naming ``where`` and the first failing fields) unless
    ``doc`` is a valid version-1 ensemble document."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise EnsembleFileError(f"{where}: not a trajkit ensemble file (format != {FORMAT!r})")
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise EnsembleFileError(f"{where}: ensemble format v{version} is newer than this trajkit reads "
                                f"(v{VERSION}); upgrade trajkit")
    problems = schema_problems(doc, SCHEMA)
    if problems:
        detail = "; ".join(f"{p or '/'}: {m}" for p, m in problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise EnsembleFileError(f"{where}: invalid ensemble file at {detail}{more}")


def read_ensemble_file(directory: str | os.PathLike, storage_options: dict[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """The validated ``ensemble.json`` of ``directory`` (a path or a URL prefix), or None when it has none."""
    if is_url(directory):
        p: Any = join(directory, ENSEMBLE_FILE)
        text = read_text(p, storage_options)
        if text is None:
            return None
    else:
        p = ensemble_file(directory)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise EnsembleFileError(f"{p}: unreadable ({e.strerror or e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise EnsembleFileError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                                "restore it or record the ensemble again") from None
    check_ensemble(doc, p)
    return doc


def write_ensemble_file(directory: str | os.PathLike, doc: dict[str, Any]) -> Path:
    """Validate ``doc`` and write it atomically to ``directory/ensemble.json``; returns the file's path."""
    p = ensemble_file(directory)
    check_ensemble(doc, p)
    data = json.dumps(doc, indent=2, allow_nan=False).encode()
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return p
