"""Shared helpers of the worked examples: record an ensemble once, save a result with its figure."""

from __future__ import annotations

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
