"""Repairing an archive left damaged by a crash: back to its last readable committed row.

:func:`repair` takes the writer lock (so it refuses while a writer is active), runs
:func:`trajkit.archive.validate.validate` under it, and then

- lowers the commit marker to the first damaged row ``k`` (a missing or torn ``snapshots/params`` chunk,
  a snapshot array shorter than the marker, a non-increasing step): rows ``0..k-1`` are kept bit for bit,
  rows ``k..`` are dropped (a reader cannot skip a row, so good rows after a damaged one go too);
- lowers the trace marker to the first damaged trace row (trace rows are independent per-step scalars,
  so a damaged snapshot does not drop them);
- removes chunk files of uncommitted rows, stray ``.*.tmp*`` files and directories without
  ``zarr.json`` left by interrupted writes, and trims every array's shape to its committed length
  (:meth:`ArchiveWriter.finalize`).

It never lowers the marker below a readable row, and refuses what it cannot fix (invalid metadata, a
newer format version, a missing required array) with one line naming it.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from trajkit.archive import format as fmt
from trajkit.archive.validate import STRAY_NODE_WARNING, Problem, validate
from trajkit.archive.writer import ArchiveWriter
from trajkit.errors import ArchiveError

_TMP = re.compile(r"^\..+\.tmp\d*$")


@dataclass
class RepairReport:
    """What :func:`repair` did: rows before/after, the steps dropped, trace rows dropped, files removed.

    ``dropped_steps`` lists the readable steps of the dropped rows (a row past the end of
    ``snapshots/step`` has none, so it may be shorter than ``rows_dropped``).
    """

    path: str
    committed_before: int
    committed_after: int
    dropped_steps: list[int] = field(default_factory=list)
    trace_before: int = 0
    trace_after: int = 0
    files_removed: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def rows_dropped(self) -> int:
        return self.committed_before - self.committed_after

    @property
    def trace_rows_dropped(self) -> int:
        return self.trace_before - self.trace_after

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"{self.path}: {self.committed_after} committed snapshot(s) kept"]
        if self.rows_dropped:
            steps = self.dropped_steps
            shown = ", ".join(map(str, steps[:10])) + (", ..." if len(steps) > 10 else "")
            unknown = self.rows_dropped - len(steps)
            detail = f"steps {shown}" if steps else "no readable step"
            if steps and unknown:
                detail += f", and {unknown} row(s) with no readable step"
            out.append(f"dropped {self.rows_dropped} snapshot row(s) {self.committed_after}.."
                       f"{self.committed_before - 1} ({detail})")
        if self.trace_rows_dropped:
            out.append(f"dropped {self.trace_rows_dropped} trace row(s) "
                       f"{self.trace_after}..{self.trace_before - 1}")
        if self.files_removed:
            out.append(f"removed {len(self.files_removed)} uncommitted or temporary file(s)/folder(s)")
        out += [f"reason: {r}" for r in self.reasons]
        if not (self.rows_dropped or self.trace_rows_dropped or self.files_removed):
            out.append("nothing to repair: no row or file dropped")
        return out


_FATAL = ("open", "version", "schema")


def repair(path: str | os.PathLike) -> RepairReport:
    """Truncate the archive at ``path`` (a local directory) to its last good committed row (module doc)."""
    root = Path(path)
    if "://" in str(path) or not root.is_dir():
        kind = "a URL" if "://" in str(path) else ("a file" if root.is_file() else "missing")
        raise ArchiveError(f"{path}: repair works on a local archive directory, and this is {kind}; "
                           "unzip or copy it locally first")
    if not (root / "zarr.json").is_file():
        raise ArchiveError(f"{root}: not a trajkit archive (no zarr.json); pass a NAME.trajkit directory")
    meta = fmt.read_json(root / "zarr.json").get("attributes", {}).get(fmt.ROOT_ATTR)
    n_params = (meta or {}).get("model", {}).get("n_params") if isinstance(meta, dict) else None
    if not isinstance(n_params, int):
        problems = validate(root)
        raise ArchiveError(problems[0].message if problems else f"{root}: metadata has no /model/n_params")
    before = _files(root)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=STRAY_NODE_WARNING)  # such directories are removed below
        writer = ArchiveWriter(root, n_params, resume="must")  # takes the lock; refuses while one is active
        try:
            report = _repair_locked(root, writer)
        except BaseException:
            writer.abort()
            raise
    report.files_removed = sorted(str(p.relative_to(root)) for p in before - _files(root))
    return report


def _repair_locked(root: Path, w: ArchiveWriter) -> RepairReport:
    problems = validate(root)
    fatal = [p for p in problems if p.kind in _FATAL or (p.kind == "structure" and p.row is None)]
    if fatal:
        raise ArchiveError(f"cannot repair: {_tail(fatal[0])}")
    snap_rows = [p.row for p in problems if p.row is not None and p.kind != "nonfinite"
                 and not (p.array or "").startswith(fmt.TRACE)]
    trace_rows = [p.row for p in problems if p.row is not None and (p.array or "").startswith(fmt.TRACE)]
    committed = _marker(root / fmt.SNAPSHOTS)
    trace_committed = fmt.committed_trace_rows(_attrs(root / fmt.SNAPSHOTS), _attrs(root / fmt.TRACE))
    keep = min([w.committed, *snap_rows])
    tkeep = min([w.trace_committed, *trace_rows])
    steps = list(w._steps)
    report = RepairReport(str(root), committed, keep, [int(s) for s in steps[keep:]], trace_committed, tkeep,
                          reasons=[_tail(p) for p in problems if p.kind in ("structure", "chunk")])
    w.truncate_rows(keep, tkeep)
    w._write_commit()
    w._write_trace_commit()
    _drop_nonfinite_flags(w, steps[keep:])
    _remove_debris(root)
    if w.metadata.get("status") == "running":   # its `trajkit record` process died: the run stopped here
        w.update_metadata({"status": "failed", "status_reason": f"interrupted at step {w.last_step}; repaired"})
    w.close()
    return report


def _drop_nonfinite_flags(w: ArchiveWriter, dropped: list[int]) -> None:
    """Keep metadata ``/nonfinite`` in step with the rows that remain."""
    flagged = w.metadata.get("nonfinite")
    if not flagged or not dropped:
        return
    kept = [s for s in flagged.get("steps", []) if s < dropped[0]]
    w.metadata.pop("nonfinite")
    flag = {"first_step": kept[0], "count": len(kept), "steps": kept} if kept else None
    w.update_metadata({"nonfinite": flag})


def _remove_debris(root: Path) -> None:
    """Delete ``.*.tmp*`` files anywhere and metric/trace directories without ``zarr.json``."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if _TMP.match(name):
                (Path(dirpath) / name).unlink()
    for parent in (fmt.METRICS, fmt.TRACE):
        d = root / parent
        if d.is_dir():
            for p in d.iterdir():
                if p.is_dir() and not (p / "zarr.json").exists():
                    shutil.rmtree(p)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and p.name != fmt.LOCK_FILE}


def _attrs(group_dir: Path) -> dict:
    try:
        return fmt.read_json(group_dir / "zarr.json").get("attributes", {})
    except (OSError, ValueError):
        return {}


def _marker(group_dir: Path) -> int:
    value = _attrs(group_dir).get("committed", 0)
    return int(value) if isinstance(value, int) else 0


def _tail(p: Problem) -> str:
    """A problem's message without the archive path prefix."""
    prefix = f"{p.path}: "
    text = p.message[len(prefix):] if p.message.startswith(prefix) else p.message
    return text.split("; run `trajkit repair`")[0]

