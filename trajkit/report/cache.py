"""The report directory: ``report.json`` (the manifest and cache index) and atomic writes into ``DIR``.

Layout of ``DIR``::

    index.html                   the page
    report.json                  {"format": "trajkit-report", "version": 1, "inputs": [...], "entries": {...},
                                  "loss_curves": {...}, "builds": [...]}
    figures/loss_curves.png      the loss curves of all runs
    analyses/NAME/               the result (Result.save: result.json, arrays, CSV tables) and NAME.png

``entries[NAME]``: ``key`` (:func:`trajkit.report.plan.cache_key`), ``status`` (``ok`` or ``failed``),
``error`` (one line), ``figure`` (path in ``DIR``) or ``figure_error``, ``warnings``, ``params``,
``given``, ``command``, ``computed`` (time). ``builds``: the last :data:`MAX_BUILDS` builds, each
``{"at", "computed": [...], "reused": [...], "runs": [[name, snapshots], ...]}`` — what a build recomputed.

A directory is a report's when its ``report.json`` says so and names the same inputs; any other
non-empty directory (another report's cache, unrelated files) and a file are refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trajkit.errors import TrajkitError

FORMAT = "trajkit-report"
VERSION = 1
MANIFEST = "report.json"
MAX_BUILDS = 20


class ReportError(TrajkitError):
    """The output directory of a report cannot be used as asked."""


def empty_manifest(inputs: list[str]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "inputs": list(inputs), "entries": {}, "loss_curves": None,
            "builds": []}


def open_out(out: Path, inputs: list[str], force: bool) -> dict[str, Any]:
    """The manifest of report directory ``out`` for ``inputs`` (a new one for a new directory); refuses a
    file, a directory of other files or another report's cache unless ``force`` (which clears it)."""
    if out.exists() and not out.is_dir():
        if not force:
            raise ReportError(f"--out {out}: is a file, not a directory; choose another --out (or --force to "
                              "replace it)")
        out.unlink()
    if not out.is_dir():
        return empty_manifest(inputs)
    path = out / MANIFEST
    why = None
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            doc, why = None, f"{path} is unreadable ({e})"
        if doc is not None and (not isinstance(doc, dict) or doc.get("format") != FORMAT):
            doc, why = None, f"{path} is not a trajkit report manifest"
        elif doc is not None and doc.get("version") != VERSION:
            doc, why = None, f"{path} is report format v{doc.get('version')}, this trajkit writes v{VERSION}"
        elif doc is not None and doc.get("inputs") != list(inputs):
            doc, why = None, (f"{out} holds the report of other inputs ({' '.join(doc.get('inputs') or [])})")
        if doc is not None:
            return doc
    elif any(out.iterdir()):
        why = f"{out} is not empty and holds no {MANIFEST} (not a trajkit report)"
    else:
        return empty_manifest(inputs)
    if not force:
        raise ReportError(f"--out {out}: {why}; choose another --out, or pass --force to replace it")
    for name in ("index.html", MANIFEST):
        (out / name).unlink(missing_ok=True)
    for name in ("analyses", "figures"):
        shutil.rmtree(out / name, ignore_errors=True)
    return empty_manifest(inputs)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_manifest(out: Path, doc: dict[str, Any]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def staging_dir(out: Path, name: str) -> Path:
    """A fresh temp directory under ``out/analyses`` for analysis ``name``'s files (see :func:`commit_dir`)."""
    base = out / "analyses"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))


def commit_dir(staged: Path, final: Path) -> None:
    """Replace ``final`` by ``staged`` (the old one is removed first; a reader sees old or new files)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
