"""What a report reads: every run of its inputs for the run table, and the runs its analyses analyse.

Inputs are archives, ensemble directories, directories of ``*.trajkit`` archives and glob patterns, as
``trajkit analyze`` takes them (:func:`trajkit.analysis.ensemble.resolve_paths`). An ensemble directory
contributes every run its ``ensemble.json`` lists to the run table — a run still recording shows its
committed snapshots, a run not started yet its planned place — and only its runs with status ``done`` to
the analyses, as ``trajkit analyze`` does. Archives given directly are analysed as they are (a live or
interrupted one up to its last committed snapshot). Each archive is opened once, so a report sees one
consistent set of committed rows even while a writer goes on.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.analysis.ensemble import Ensemble, resolve_paths
from trajkit.archive import Archive, open_archive
from trajkit.archive.display import missing_row, run_row
from trajkit.archive.ensemble_file import ensemble_file, read_ensemble_file
from trajkit.errors import AnalysisError, TrajkitError


@dataclass
class Inputs:
    """``args`` (the inputs as absolute paths or patterns), ``rows`` (the run table,
    :func:`~trajkit.archive.display.run_row` dicts), ``archives`` (the analysed runs, opened once),
    ``opened`` (each row's archive, None for a run without one yet), ``infos`` (the ``ensemble.json``
    documents), ``waiting`` (runs listed but not done: not analysed)."""

    args: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    opened: list[Archive | None] = field(default_factory=list)
    archives: list[Archive] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    waiting: int = 0

    def add(self, row: dict[str, Any], archive: Archive | None) -> None:
        self.rows.append(row)
        self.opened.append(archive)

    def ensemble(self) -> Ensemble:
        """The analysed runs as an unchecked :class:`Ensemble` (each analysis checks what it needs)."""
        return Ensemble(self.archives, self.infos, check=False)

    def fingerprint(self) -> list[list[Any]]:
        """``[[run_id, committed snapshots], ...]`` of the analysed runs: what an analysis result depends on."""
        return [[a.run_id, a.n_snapshots] for a in self.archives]


def absolute_args(args: list[str]) -> list[str]:
    """The inputs as absolute paths (glob patterns stay patterns)."""
    return [os.path.abspath(os.path.expanduser(a)) if "://" not in a else a for a in args]


def _expand(arg: str) -> list[str]:
    if any(ch in arg for ch in "*?[") and not Path(arg).exists():
        found = sorted(glob.glob(arg))
        if not found:
            raise AnalysisError(f"{arg}: glob matches nothing; check the pattern")
        return found
    return [arg]


def resolve_inputs(args: list[str]) -> Inputs:
    """Open what ``args`` name (module doc); one-line error when nothing matches."""
    if not args:
        raise AnalysisError("no archives given; usage: trajkit report ARCHIVES... --out DIR")
    out = Inputs(absolute_args(args))
    seen: set[str] = set()
    for arg in out.args:
        for path in _expand(arg):
            if Path(path).is_dir() and ensemble_file(path).is_file():
                _add_ensemble(out, Path(path), seen)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")         # skipped runs of nested ensembles: counted, not printed
                found, infos = resolve_paths([path])
            out.infos += infos
            for p in found:
                if _first(p, seen):
                    arch = open_archive(p)
                    out.archives.append(arch)
                    out.add(run_row(arch), arch)
    if not out.rows:
        raise AnalysisError(f"no archives matched {' '.join(args)}; pass archives, ensemble directories or globs")
    return out


def _first(path: str | os.PathLike, seen: set[str]) -> bool:
    key = os.path.realpath(path)
    if key in seen:
        return False
    seen.add(key)
    return True


def _add_ensemble(out: Inputs, directory: Path, seen: set[str]) -> None:
    doc = read_ensemble_file(directory)
    if doc is None:                      # removed since is_file()
        return
    out.infos.append(doc)
    for entry in doc["runs"]:
        path = directory / entry["path"]
        if not _first(path, seen):
            continue
        done = entry.get("status", "done") == "done"
        if not path.exists():
            if done:
                raise AnalysisError(f"{ensemble_file(directory)}: run {entry['path']} is done but its archive is "
                                    "missing; record the ensemble again")
            out.add(missing_row(path, entry), None)
            out.waiting += 1
            continue
        try:
            arch = open_archive(path)
        except TrajkitError as e:
            if done:
                raise
            out.add(missing_row(path, entry, f"not readable yet ({e})"), None)
            out.waiting += 1
            continue
        out.add(run_row(arch, entry), arch)
        if done:
            out.archives.append(arch)
        else:
            out.waiting += 1
