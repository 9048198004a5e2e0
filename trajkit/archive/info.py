"""A one-screen summary of an archive: what run it is, what it holds, and what it costs on disk.

``compression_ratio = logical params bytes / params bytes on disk`` where the logical size is
``T × N × 4`` (float32); an uncompressed archive is at (or, with chunk padding, just under) 1.
Sizes are ``None`` for archives not on a local disk (zip members and URLs are not walked).
"""

from __future__ import annotations

import os
from typing import Any

from trajkit.archive.metadata import get_path
from trajkit.archive.reader import Archive, open_archive


def summarize(archive: Archive | str | os.PathLike) -> dict[str, Any]:
    """Plain-JSON summary of ``archive`` (an :class:`Archive` or a path).

    Keys: ``path, run_id, created, format_version, model`` (``class``, ``spec``, ``factory``),
    ``n_params`` (N), ``n_snapshots`` (T), ``steps`` (``first``, ``last`` or None), ``schedule``,
    ``metrics`` and ``trace`` (names), ``trace_length``, ``dynamics``, ``dataset``, ``ensemble``,
    ``seed``, ``size_on_disk``, ``params_bytes_logical``, ``params_bytes_on_disk``,
    ``compression_ratio``, ``nonfinite`` (bool) and ``nonfinite_first_step``.
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
    }


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as aligned ``key: value`` lines for a terminal."""
    s = summary
    model = s["model"]
    model_text = model.get("class") or (f"spec {model['spec']}" if model.get("spec") else None) \
        or model.get("factory") or "unspecified"
    steps = f"{s['steps']['first']} .. {s['steps']['last']}" if s["steps"] else "none"
    rows = [
        ("archive", s["path"]),
        ("run", f"{s['run_id']} (created {s['created']}, format v{s['format_version']})"),
        ("model", model_text),
        ("parameters (N)", f"{s['n_params']:,}"),
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
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]


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
