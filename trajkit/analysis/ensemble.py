"""Ensembles: replicas of one configuration, opened together and checked for consistency.

``open_ensemble(paths)`` accepts archive directories (or zips), ensemble directories (``ensemble.json``,
format ``trajkit-ensemble`` v1: only runs with status ``done`` are used, the others are skipped with a
warning naming them), directories holding ``*.trajkit`` archives, and glob patterns — local, or fsspec
URLs (``s3://b/ens/``). Replicas must share N, the parameter layout and the snapshot steps; a mismatch is
an error naming the two runs — schedules are never interpolated. ``ensemble.groups("dynamics.temperature")``
splits an ensemble by a metadata key (each group checked on its own, so a width sweep may differ in N
between groups). The analysis core splits an ensemble by sweep point before an ``ensemble`` analysis sees
it (:mod:`trajkit.analysis.grouping`).

>>> ens = trajkit.open_ensemble(["sweep/"])                              # doctest: +SKIP
>>> ens.steps, ens.n_params, len(ens)                                    # doctest: +SKIP
>>> {T: len(g) for T, g in ens.groups("dynamics.temperature").items()}   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import glob
import html
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive import Archive, Selection, open_archive
from trajkit.archive.ensemble_file import ENSEMBLE_FILE, ensemble_file, read_ensemble_file
from trajkit.archive.metadata import get_path
from trajkit.archive.storage import glob_urls, is_url, join, list_archives, object_exists
from trajkit.errors import AnalysisError

_MISSING = object()
#: archives of an ensemble given as URLs that are opened at once
URL_OPEN_THREADS = 8


def _label(a: Archive) -> str:
    return f"{a.path} (run {str(a.metadata.get('run_id', '?'))[:8]})"


def check_consistent(archives: Sequence[Archive], same_steps: bool = True) -> None:
    """Raise :class:`AnalysisError` naming the first two runs that differ in N, layout or (with
    ``same_steps``) steps."""
    ref = archives[0]
    for a in archives[1:]:
        if a.n_params != ref.n_params:
            raise AnalysisError(f"runs differ in parameter count: {_label(ref)} has N={ref.n_params}, "
                                f"{_label(a)} has N={a.n_params}; analyse them separately or group them")
        if a.layout != ref.layout:
            raise AnalysisError(f"runs differ in parameter layout: {_label(ref)} and {_label(a)}; "
                                "replicas must share one architecture")
        if same_steps and (a.steps.shape != ref.steps.shape or not np.array_equal(a.steps, ref.steps)):
            if a.steps.size != ref.steps.size:
                what = f"{ref.steps.size} vs {a.steps.size} snapshots"
            else:
                i = int(np.flatnonzero(a.steps != ref.steps)[0])
                what = f"row {i} is step {int(ref.steps[i])} vs {int(a.steps[i])}"
            raise AnalysisError(f"runs differ in snapshot steps: {_label(ref)} and {_label(a)} ({what}); "
                                "replicas must share the schedule (no interpolation is done)")


class Ensemble:
    """A list of archives of one configuration (see the module docstring).

    Attributes: ``archives`` (list of :class:`~trajkit.archive.Archive`), ``steps`` int64 ``[T]``,
    ``n_params``, ``layout``, ``run_ids``, ``paths``, ``info`` (the ``ensemble.json`` documents read).
    With ``same_steps=False`` the runs' schedules may differ (N and layout are still checked) and
    ``steps`` are the snapshot steps every run has; a run's row of one is ``archive.row(step)``.
    """

    def __init__(self, archives: Sequence[Archive], info: list[dict[str, Any]] | None = None,
                 check: bool = True, same_steps: bool = True):
        if not archives:
            raise AnalysisError("an ensemble needs at least one archive")
        self.archives = list(archives)
        self.info = list(info or [])
        self.checked = check
        self.same_steps = same_steps
        if check:
            check_consistent(self.archives, same_steps)

    def _require_checked(self) -> None:
        if not self.checked:
            check_consistent(self.archives, self.same_steps)
            self.checked = True

    @property
    def steps(self) -> np.ndarray:
        self._require_checked()
        if self.same_steps:
            return self.archives[0].steps
        return functools.reduce(np.intersect1d, [a.steps for a in self.archives]).astype(np.int64)

    @property
    def n_params(self) -> int:
        self._require_checked()
        return self.archives[0].n_params

    @property
    def n_snapshots(self) -> int:
        return int(self.steps.size)

    @property
    def layout(self) -> list[dict[str, Any]]:
        self._require_checked()
        return self.archives[0].layout

    @property
    def run_ids(self) -> list[str]:
        return [str(a.metadata.get("run_id")) for a in self.archives]

    @property
    def paths(self) -> list[str]:
        return [a.path for a in self.archives]

    def select(self, spec: str = "all") -> Selection:
        """The columns of a parameter subset as contiguous ranges (same for every replica)."""
        self._require_checked()
        return self.archives[0].select(spec)

    def metadata(self, key: str) -> list[Any]:
        """The value of dotted metadata ``key`` in each run (error naming a run that lacks it)."""
        out = []
        for a in self.archives:
            v = get_path(a.metadata, key, _MISSING)
            if v is _MISSING:
                raise AnalysisError(f"{_label(a)} has no metadata key {key!r}; `trajkit info` lists its keys")
            out.append(v)
        return out

    def groups(self, key: str) -> dict[Any, Ensemble]:
        """``{value: Ensemble}`` by the value of metadata ``key``, sorted by value; each group is checked."""
        by: dict[Any, list[Archive]] = {}
        for a, v in zip(self.archives, self.metadata(key), strict=True):
            by.setdefault(_hashable(v), []).append(a)
        try:
            keys = sorted(by)
        except TypeError:
            keys = list(by)
        return {k: Ensemble(by[k], self.info) for k in keys}

    def __len__(self) -> int:
        return len(self.archives)

    def __iter__(self) -> Iterator[Archive]:
        return iter(self.archives)

    def __getitem__(self, i: int) -> Archive:
        return self.archives[i]

    def __repr__(self) -> str:
        a = self.archives[0]
        return f"Ensemble({len(self.archives)} runs, N={a.n_params}, T={a.n_snapshots})"

    def _repr_html_(self) -> str:
        """The runs as a table for Jupyter: coordinates, final losses and accuracies, steps, snapshots, size,
        status (:func:`trajkit.archive.display.run_row`, what ``trajkit info`` shows of each)."""
        from trajkit.archive.display import run_row, runs_html

        return f"<p>{html.escape(repr(self))}</p>" + runs_html([run_row(a) for a in self.archives])


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def _read_ensemble_json(d: Path | str, storage_options: dict[str, Any] | None = None
                        ) -> tuple[list[Path | str], dict[str, Any]]:
    path = join(d, ENSEMBLE_FILE) if is_url(d) else ensemble_file(d)
    doc = read_ensemble_file(d, storage_options)
    if doc is None:
        raise AnalysisError(f"{path}: missing; it should be written by `trajkit record`")
    out: list[Path | str] = []
    skipped = []
    for run in doc["runs"]:
        status = run.get("status", "done")
        if status != "done":
            reason = f": {run['reason']}" if run.get("reason") else ""
            skipped.append(f"{run.get('path')} ({status}{reason})")
            continue
        out.append(join(d, run["path"]) if is_url(d) else Path(d) / run["path"])
    if skipped:
        warnings.warn(f"{path}: skipping runs not done: {', '.join(skipped)}", stacklevel=3)
    if not out:
        raise AnalysisError(f"{path}: no run has status 'done'; nothing to analyse")
    return out, doc


def _resolve_url(url: str, storage_options: dict[str, Any] | None
                 ) -> tuple[list[Path | str], list[dict[str, Any]]]:
    """The archives behind a URL: a glob, an ensemble prefix (``ensemble.json``), an archive (``zarr.json``)
    or a prefix holding ``*.trajkit`` archives (one listing)."""
    if any(ch in url.split("://", 1)[1] for ch in "*?["):
        matches = glob_urls(url, storage_options)
        if not matches:
            raise AnalysisError(f"{url}: glob matches nothing; check the pattern")
        return resolve_paths(matches, storage_options)
    if object_exists(join(url, ENSEMBLE_FILE), storage_options):
        runs, doc = _read_ensemble_json(url.rstrip("/"), storage_options)
        return runs, [doc]
    if object_exists(join(url, "zarr.json"), storage_options):
        return [url.rstrip("/")], []
    runs = list_archives(url, storage_options)
    if not runs:
        return [url.rstrip("/")], []          # opening it says what is missing (bucket, zarr.json)
    return list(runs), []


def protocol_stages(path: Path) -> list[str]:
    """The stage names of a ``[[stages]]`` protocol's output directory (its subdirectories holding an
    ``ensemble.json``), sorted; empty for any other directory."""
    return sorted(q.name for q in path.iterdir() if q.is_dir() and (q / ENSEMBLE_FILE).is_file())


def resolve_paths(paths: str | os.PathLike | Sequence[str | os.PathLike],
                  storage_options: dict[str, Any] | None = None, stage: str | None = None
                  ) -> tuple[list[Path | str], list[dict[str, Any]]]:
    """Archive paths behind files, ensemble directories, directories of archives and globs (deduplicated);
    URLs (``s3://bucket/ens/``) the same way, listed through fsspec with ``storage_options``.

    A local ``[[stages]]`` protocol's output (``OUT/<stage>/ensemble.json`` for each stage) stands for the
    runs of its stage ``stage``; without ``stage`` it is refused in one line naming its stages."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path | str] = []
    infos: list[dict[str, Any]] = []
    for p in paths:
        s = str(p)
        if is_url(s):
            sub, inf = _resolve_url(s, storage_options)
            found += sub
            infos += inf
            continue
        if any(ch in s for ch in "*?[") and not Path(s).exists():
            matches = sorted(glob.glob(s))
            if not matches:
                raise AnalysisError(f"{s}: glob matches nothing; check the pattern")
            sub, inf = resolve_paths(matches)
            found += sub
            infos += inf
            continue
        path = Path(s)
        if path.is_dir() and (path / "ensemble.json").is_file():
            runs, doc = _read_ensemble_json(path)
            found += runs
            infos.append(doc)
        elif path.is_dir() and not (path / "zarr.json").exists():
            runs = sorted(q for q in path.glob("*.trajkit") if q.is_dir() or q.is_file())
            stages = [] if runs else protocol_stages(path)
            if stages:
                names = ", ".join(stages)
                if stage is None:
                    raise AnalysisError(f"{path} is the output of a [[stages]] protocol (stages {names}); pass "
                                        f"one stage's directory ({path / stages[-1]}) or stage=NAME to an "
                                        "analysis that takes it")
                if stage not in stages:
                    raise AnalysisError(f"stage={stage!r}: {path} has no such stage; its stages are {names}")
                sub, inf = resolve_paths([path / stage], storage_options)
                found += sub
                infos += inf
                continue
            if not runs:
                raise AnalysisError(f"{path}: directory holds no archive (no zarr.json, ensemble.json or "
                                    "*.trajkit inside)")
            found += runs
        else:
            found.append(path)
    seen, unique = set(), []
    for q in found:
        key = str(q).rstrip("/") if is_url(q) else os.path.realpath(q)
        if key not in seen:
            seen.add(key)
            unique.append(q)
    return unique, infos


def open_ensemble(paths: str | os.PathLike | Sequence[Any], check: bool = True,
                  storage_options: dict[str, Any] | None = None, stage: str | None = None) -> Ensemble:
    """Open archives (files, ensemble directories, directories of archives, globs) as an :class:`Ensemble`.

    With ``check`` (default) the runs must share N, layout and steps; pass ``check=False`` to group a
    sweep first (``ens.groups(key)`` checks each group). URLs (``s3://bucket/ens/``) are listed and opened
    through fsspec with ``storage_options`` (:func:`trajkit.open_archive`). ``stage`` picks one stage of a
    ``[[stages]]`` protocol's output directory (:func:`resolve_paths`).
    """
    if isinstance(paths, Archive):
        return Ensemble([paths], check=check)
    if isinstance(paths, Sequence) and not isinstance(paths, str) and paths and \
            all(isinstance(p, Archive) for p in paths):
        return Ensemble(list(paths), check=check)
    found, infos = resolve_paths(paths, storage_options, stage=stage)
    if not found:
        raise AnalysisError("no archives given")
    if len(found) > 1 and any(is_url(p) for p in found):      # each open is a few round trips: overlap them
        with ThreadPoolExecutor(min(URL_OPEN_THREADS, len(found)), thread_name_prefix="trajkit-open") as pool:
            archives = list(pool.map(lambda p: open_archive(p, storage_options=storage_options), found))
    else:
        archives = [open_archive(p, storage_options=storage_options) for p in found]
    return Ensemble(archives, infos, check=check)
