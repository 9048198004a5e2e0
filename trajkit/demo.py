"""The README demo: record a small ensemble, show what was recorded, and analyse it.

    python -m trajkit.demo [--out DIR]

1. ``trajkit record``: overdamped Langevin on scikit-learn's digits (MLP 64-32-10), 3 temperatures ×
   4 replicas trained together, 1,000 steps, ~40 log-spaced snapshots per run (under a minute on 2 cores);
2. ``trajkit info`` of one run;
3. ``trajkit analyze``: two-time overlaps and χ4 at the lowest temperature, relaxation times and τ(T)
   across the sweep; results and PNG figures under ``DIR/analysis``.

Everything is written under ``DIR`` (default: a new directory in the system's temp folder, printed first);
the only other writes are trajkit's caches (``$TRAJKIT_CACHE_DIR``, see the README).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

DEMO_CONFIG: dict[str, Any] = {
    "model": {"kind": "mlp", "hidden": [32], "activation": "relu"},
    "data": {"name": "digits"},
    "loss": {"name": "cross_entropy"},
    "dynamics": {"kind": "langevin", "lr": 0.1, "weight_decay": 1e-4},
    "run": {"steps": 1000, "seed": 0, "replicas": 4},
    "snapshots": {"schedule": "log", "n": 40},
    "sweep": {"dynamics.temperature": [1e-4, 1e-3, 1e-2]},
}


def _cli(*args: str) -> None:
    from trajkit.cli import cli

    print(f"\n$ trajkit {' '.join(args)}")
    cli.main(list(args), prog_name="trajkit", standalone_mode=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="trajkit demo: record a small ensemble and analyse it")
    ap.add_argument("--out", default=None, help="output directory (default: a new temp dir)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    from trajkit.cli import one_line_warnings

    with one_line_warnings():
        _demo(args)


def _demo(args: argparse.Namespace) -> None:
    out = Path(args.out or tempfile.mkdtemp(prefix="trajkit-demo-"))
    ens, res = out / "ensemble", out / "analysis"
    chosen = "" if args.out else " (a new temporary directory; choose one with --out DIR)"
    print(f"trajkit demo: writing under {out}{chosen}: the ensemble in {ens}, results and figures in {res}")
    from trajkit.experiments import run_experiment

    print(f"recording a Langevin temperature sweep into {ens}")
    summary = run_experiment(DEMO_CONFIG, ens, quiet=args.quiet, threads=1)
    runs = sorted(summary["runs"], key=lambda r: (r["coords"]["dynamics.temperature"], r["replica"]))
    coldest = [str(ens / r["path"]) for r in runs if r["coords"] == runs[0]["coords"]]
    _cli("info", coldest[0])
    _cli("analyze", "--plugin", "overlaps", "-p", "n_waiting_times=4", "--out", str(res / "overlaps"), "--json",
         *coldest)
    _cli("analyze", "--plugin", "chi4", "-p", "n_waiting_times=3", "--out", str(res / "chi4"), *coldest)
    _cli("analyze", "--plugin", "relaxation", "--out", str(res / "relaxation"), str(ens))
    print(f"\nresults and figures: {res}")


if __name__ == "__main__":
    main()
