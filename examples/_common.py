"""Shared helpers of the worked examples: record an ensemble once, save a result with its figure, publish
the numbers and figures of a gallery run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import trajkit
from trajkit.experiments import run_experiment


def record(out: Path, config_toml: str, quiet: bool = False) -> Path:
    """Record the ensemble of ``config_toml`` into ``out/ensemble`` (finished runs are skipped on rerun)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "config.toml"
    cfg.write_text(config_toml)
    ens = out / "ensemble"
    run_experiment(cfg, ens, quiet=quiet)
    return ens


def save(result: trajkit.analysis.Result, out: Path, name: str) -> None:
    """Write ``out/name.png`` and the saved result directory ``out/name``."""
    result.plot().savefig(out / f"{name}.png", dpi=110)
    result.save(out / name)


def publish(out: Path, summary: dict, files: list[Path], figures: Path | None, stem: str) -> None:
    """Write ``out/summary.json``; with ``figures``, also copy ``files`` there and the summary as
    ``figures/<stem>.json`` (the committed numbers of a gallery run, docs/reproductions.md)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, figures / f.name)
        shutil.copy(out / "summary.json", figures / f"{stem}.json")
