"""A one-screen summary of an archive: what run it is, what it holds, and what it costs on disk.

``compression_ratio = logical params bytes / params bytes on disk`` where the logical size is
``T × N × itemsize`` (4 for float32, 2 for float16/bfloat16, 8 for float64); an uncompressed archive is at
(or, with chunk padding, just under) 1.
Sizes are ``None`` for archives not on a local disk (zip members and URLs are not walked).

:func:`run_state` says whether an archive is ``finished`` (its writer closed it), ``live`` (a writer holds
its lock now: a live view of the rows committed so far) or ``interrupted`` (its writer died without
closing it: the committed rows are valid, the run is unfinished). ``trajkit info``, ``trajkit validate``
and :func:`trajkit.analyze` all ask it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from trajkit.archive.lock import probe
from trajkit.archive.metadata import get_path
from trajkit.archive.online import online_rows
from trajkit.archive.reader import Archive, open_archive

RUN_STATES = ("finished", "live", "interrupted")


class UnfinishedRunWarning(UserWarning):
    """An analysis read archives whose writer is still recording (live) or died (interrupted)."""


@dataclass(frozen=True)
class RunState:
    """Whether an archive's writer finished it.

    ``state`` is one of :data:`RUN_STATES`; ``last_step`` is the step of the last committed snapshot (None
    before the first); ``n_snapshots`` the committed rows; ``writer_pid`` the live or last writer's pid
    when the lock file names one; ``status`` the metadata ``/status`` (``trajkit record`` runs) or None.
    """

    path: str
    state: str
    last_step: int | None
    n_snapshots: int
    writer_pid: int | None = None
    status: str | None = None

    @property
    def unfinished(self) -> bool:
        return self.state != "finished"

    def describe(self) -> str:
        """One line: ``interrupted at step K (no live writer): resume with ...``, ``live ...`` or the status."""
        at = f"at step {self.last_step}" if self.last_step is not None else "before its first snapshot"
        if self.state == "interrupted":
            return f"interrupted {at} (no live writer): resume with resume='allow' or `trajkit repair`"
        if self.state == "live":
            pid = f" (pid {self.writer_pid})" if self.writer_pid is not None else ""
            return f"live: a writer{pid} is recording, last committed snapshot {at.removeprefix('at ')}"
        return self.status or "closed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_state(archive: Archive | str | os.PathLike) -> RunState:
    """Finished, live or interrupted (module doc), from the writer lock and the archive's own markers.

    A live writer holds ``.trajkit.lock`` (probed with a non-blocking shared ``flock``). Without one the
    archive is interrupted when the lock file still says ``open`` (its writer never closed), when the
    metadata ``/status`` is still ``running``, or — for lock files from before the ``open`` mark and for
    zip/URL copies — when ``snapshots/params`` is longer than its committed rows (a closed writer trims
    it, FORMAT.md §5).
    """
    arch = open_archive(archive)
    steps = arch.steps
    last = int(steps[-1]) if steps.size else None
    status = arch.metadata.get("status")
    lock = probe(arch._local) if arch._local is not None else None
    pid = lock.pid if lock is not None else None
    if lock is not None and lock.held:
        return RunState(arch.path, "live", last, arch.n_snapshots, pid, status)
    if lock is not None and lock.open is not None:
        open_ = lock.open
    else:
        open_ = int(arch._params_meta["shape"][0]) > int(arch._snap_attrs.get("committed", 0))
    state = "interrupted" if open_ or status == "running" else "finished"
    return RunState(arch.path, state, last, arch.n_snapshots, pid, status)


def check_unfinished(archives: Iterable[Archive]) -> list[dict[str, Any]]:
    """The unfinished ones among ``archives`` as plain dicts (``path, state, last_step, ...``), after one
    :class:`UnfinishedRunWarning` line naming them (none when every archive is finished)."""
    states = [run_state(a) for a in archives]
    bad = [s for s in states if s.unfinished]
    if bad:
        named = ", ".join(f"{s.path} ({s.describe()})" for s in bad)
        warnings.warn(f"{len(bad)} of {len(states)} inputs unfinished, analysed up to their last committed "
                      f"snapshot: {named}", UnfinishedRunWarning, stacklevel=2)
    return [s.to_json() for s in bad]


def summarize(archive: Archive | str | os.PathLike) -> dict[str, Any]:
    """Plain-JSON summary of ``archive`` (an :class:`Archive` or a path).

    Keys: ``path, run_id, created, format_version, model`` (``class``, ``spec``, ``factory``),
    ``n_params`` (N), ``n_snapshots`` (T), ``steps`` (``first``, ``last`` or None), ``schedule``,
    ``metrics`` and ``trace`` (names), ``trace_length``, ``dynamics``, ``dataset``, ``ensemble``,
    ``seed``, ``size_on_disk``, ``params_bytes_logical``, ``params_bytes_on_disk``,
    ``compression_ratio``, ``nonfinite`` (bool), ``nonfinite_first_step``, ``run_state``
    (:meth:`RunState.to_json`), ``dtype`` (storage dtype), ``select`` (the recorded subset's spec or None),
    ``n_params_model`` (the model's trainable parameters, None when not recorded) and ``online``
    (``waiting_times``, ``lags``, ``select``, ``measurements``, ``reference``; None without online sums).
    """

    arch = open_archive(archive)
    meta = arch.metadata
    steps = arch.steps
    total, logical = arch.disk_usage()
    on_disk = arch.params_disk_bytes()
    flagged = meta.get("nonfinite") or {}
    return {
        "path": str(arch.path),
        "run_id": arch.run_id,
        "created": meta.get("created"),
        "format_version": meta.get("format_version"),
        "model": {k: get_path(meta, f"model.{k}") for k in ("class", "spec", "factory")},
        "n_params": arch.n_params,
        "n_snapshots": arch.n_snapshots,
        "steps": {"first": int(steps[0]), "last": int(steps[-1])} if steps.size else None,
        "schedule": meta.get("schedule"),
        "metrics": sorted(arch.metrics),
        "trace": sorted(k for k in arch.trace if k != "step"),
        "trace_length": arch.trace_length,
        "dynamics": meta.get("dynamics"),
        "dataset": meta.get("dataset"),
        "ensemble": meta.get("ensemble"),
        "seed": meta.get("seed"),
        "size_on_disk": total if total >= 0 else None,
        "params_bytes_logical": logical,
        "params_bytes_on_disk": on_disk if on_disk >= 0 else None,
        "compression_ratio": logical / on_disk if on_disk > 0 and logical else None,
        "nonfinite": bool(flagged),
        "nonfinite_first_step": flagged.get("first_step"),
        "run_state": run_state(arch).to_json(),
        "dtype": arch.storage_dtype,
        "select": arch.storage_select,
        "n_params_model": (meta.get("storage") or {}).get("n_params_model"),
        "online": _online_summary(online_rows(arch)),
    }


def _online_summary(rows: Any) -> dict[str, Any] | None:
    if rows is None:
        return None
    spec = rows.spec
    return {"waiting_times": spec["waiting_times"], "lags": spec["lags"], "select": spec["select"],
            "measurements": rows.n_rows, "reference": spec["reference"]}


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as aligned ``key: value`` lines for a terminal."""
    rows = summary_rows(summary)
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary as ``(key, value)`` text pairs, in ``trajkit info`` order (also its HTML view's rows)."""
    s = summary
    model = s["model"]
    model_text = model.get("class") or (f"spec {model['spec']}" if model.get("spec") else None) \
        or model.get("factory") or "unspecified"
    steps = f"{s['steps']['first']}..{s['steps']['last']}" if s["steps"] else "none"
    rows = [
        ("archive", s["path"]),
        ("run", f"{s['run_id']} (created {s['created']}, format v{s['format_version']})"),
        ("status", RunState(**s["run_state"]).describe()),
        ("model", model_text),
        ("parameters (N)", f"{s['n_params']:,}"),
        ("storage", _storage_text(s)),
        ("snapshots (T)", f"{s['n_snapshots']:,}"),
        ("steps", steps),
        ("schedule", _spec_text(s["schedule"])),
        ("metrics", ", ".join(s["metrics"]) or "none"),
        ("trace", f"{', '.join(s['trace']) or 'step only'} ({s['trace_length']:,} steps)"),
    ]
    for key in ("dynamics", "dataset", "ensemble"):
        if s.get(key):
            rows.append((key, ", ".join(f"{k}={v}" for k, v in s[key].items() if v is not None)))
    if s["size_on_disk"] is not None:
        rows.append(("size on disk", _bytes(s["size_on_disk"])))
    if s["compression_ratio"] is not None:
        ratio = (f"{s['compression_ratio']:.3f} (params {_bytes(s['params_bytes_logical'])} logical / "
                 f"{_bytes(s['params_bytes_on_disk'])} on disk)")
        rows.append(("compression ratio", ratio))
    rows.append(("nonfinite", f"yes, first at step {s['nonfinite_first_step']}" if s["nonfinite"] else "no"))
    if s.get("online"):
        o = s["online"]
        rows.append(("online", f"{len(o['waiting_times'])} waiting times × {len(o['lags'])} lags over "
                               f"select {o['select']!r}: {o['measurements']:,} measurements "
                               f"(t_w vectors kept on the {o['reference']})"))
    return rows


def _storage_text(s: dict[str, Any]) -> str:
    """``float16, all parameters`` or ``bfloat16, subset 'weights' (170 of 178 parameters)``."""
    dtype = s.get("dtype", "float32")
    if not s.get("select"):
        return f"{dtype}, all parameters"
    total = f" of {s['n_params_model']:,}" if s.get("n_params_model") else ""
    return f"{dtype}, subset {s['select']!r} ({s['n_params']:,}{total} parameters)"


def _spec_text(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "unspecified"
    if spec.get("kind") == "union":
        return " | ".join(_spec_text(p) for p in spec.get("parts", []))
    if spec.get("kind") == "explicit":
        steps = spec.get("steps", [])
        return f"explicit ({len(steps)} steps)"
    args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "kind")
    return f"{spec.get('kind')}({args})"


def _bytes(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{n} B" if i == 0 else f"{value:.1f} {units[i]}"
