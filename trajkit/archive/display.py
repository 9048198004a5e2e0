"""HTML views of archives and runs (standard library only): what ``trajkit info`` shows, as tables.

>>> archive = trajkit.open_archive("run.trajkit"); archive            # a notebook shows summary_html  # doctest: +SKIP
>>> html_table(["run", "T"], [["r0", "0.001"]])                                                        # doctest: +SKIP

:func:`run_row` is one row of a run table (the ``trajkit report`` page and ``Ensemble._repr_html_``): the
run, its ensemble coordinates and replica, the final train/test loss and accuracy (the last committed
snapshot's ``metrics``; the training loss falls back to the last ``trace`` loss), last step, committed
snapshots, size on disk and status (:func:`~trajkit.archive.info.run_state`, with the ``ensemble.json``
status when the run is listed there). Cells are plain text; :func:`html_table` escapes them.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive.info import _bytes, run_state, summarize, summary_rows
from trajkit.archive.reader import Archive, open_archive

#: the final metrics of a run table, in column order
FINAL_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "trajkit") -> str:
    """``<table>`` of ``header`` and ``rows`` (every cell ``str()``-ed and escaped; None shows as empty)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{'' if c is None else html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{html.escape(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary_html(archive: Archive | str | os.PathLike) -> str:
    """The ``trajkit info`` summary of ``archive`` as a two-column HTML table (``Archive._repr_html_``)."""
    rows = summary_rows(summarize(archive))
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                   f"{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="trajkit-archive">{body}</table>'


def _last_finite(values: np.ndarray) -> float | None:
    v = np.asarray(values, dtype=float)
    ok = np.flatnonzero(np.isfinite(v))
    return float(v[ok[-1]]) if ok.size else None


def final_metrics(archive: Archive) -> dict[str, float | None]:
    """``{name: last finite value}`` of :data:`FINAL_METRICS` (``train_loss`` falls back to the trace loss)."""
    out = {k: (_last_finite(archive.metrics[k]) if k in archive.metrics else None) for k in FINAL_METRICS}
    if out["train_loss"] is None and "loss" in archive.trace:
        out["train_loss"] = _last_finite(archive.trace["loss"])
    return out


def status_text(state: Any, entry: dict[str, Any] | None = None) -> str:
    """``finished``, ``live (pid 12)`` or ``interrupted``, preceded by the ``ensemble.json`` status when it
    says more (``pending · live (pid 12)``, ``failed: <reason>``)."""
    text = {"finished": "finished", "interrupted": "interrupted"}.get(state.state) or \
        ("live" + (f" (pid {state.writer_pid})" if state.writer_pid is not None else ""))
    if entry is None:
        return text
    listed = entry.get("status", "done")
    if listed in ("failed", "diverged"):
        return f"{listed}: {entry['reason']}" if entry.get("reason") else listed
    return text if listed == "done" else f"{listed} · {text}"


def run_row(archive: Archive | str | os.PathLike, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run of a run table (module doc) as plain JSON: ``path, name, run_id, replica, coords,
    train_loss, test_loss, train_acc, test_acc, last_step, n_snapshots, size_on_disk, state, status``.
    ``entry`` is the run's ``ensemble.json`` entry, when it has one."""
    arch = open_archive(archive)
    state = run_state(arch)
    total, _ = arch.disk_usage()
    ens = arch.metadata.get("ensemble") or {}
    replica = ens.get("replica", entry.get("replica") if entry else None)
    return {"path": str(arch.path), "name": Path(str(arch.path)).name, "run_id": arch.run_id, "replica": replica,
            "coords": dict(ens.get("coords") or (entry or {}).get("coords") or {}), **final_metrics(arch),
            "last_step": state.last_step, "n_snapshots": arch.n_snapshots,
            "size_on_disk": total if total >= 0 else None, "state": state.state,
            "status": status_text(state, entry)}


def missing_row(path: str | os.PathLike, entry: dict[str, Any], why: str = "not started") -> dict[str, Any]:
    """The row of a run listed in ``ensemble.json`` that has no readable archive yet."""
    return {"path": str(path), "name": Path(path).name, "run_id": entry.get("run_id"), "replica": entry.get("replica"),
            "coords": dict(entry.get("coords") or {}), **dict.fromkeys(FINAL_METRICS), "last_step": None,
            "n_snapshots": 0, "size_on_disk": None, "state": "missing",
            "status": f"{entry.get('status', 'pending')} · {why}"}


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"
    return str(v)


def run_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """``(header, cells)`` of :func:`run_row` rows: one column per ensemble coordinate, then the rest."""
    keys = list(dict.fromkeys(k for r in rows for k in r["coords"]))
    header = ["run", *keys, "replica", *FINAL_METRICS, "last step", "snapshots", "size", "status"]
    cells = [[r["name"], *(_num(r["coords"].get(k)) for k in keys), _num(r["replica"]),
              *(_num(r[k]) for k in FINAL_METRICS), _num(r["last_step"]), _num(r["n_snapshots"]),
              _bytes(r["size_on_disk"]) if r["size_on_disk"] is not None else "", r["status"]] for r in rows]
    return header, cells


def runs_html(rows: Sequence[dict[str, Any]], cls: str = "trajkit runs") -> str:
    """The run table of ``rows`` as HTML."""
    header, cells = run_table(rows)
    return html_table(header, cells, cls)
