"""Reproduction gallery: 2412.10094 (Hertz & Tyrcha 2024) — glassy dynamics of deep tanh RNNs on Bach chorales.

    python examples/repro_2412_10094.py                     # full size (docs/reproductions.md)
    python examples/repro_2412_10094.py --quick             # a tiny size, for the smoke test
    python examples/repro_2412_10094.py --dry-run           # print the resolved configs, train nothing
    python examples/repro_2412_10094.py --figures docs/figures

A scaled-down version of examples/chorales_critical_width.py (whose analysis and figure functions it
imports): records examples/repro_2412_10094.toml (depth 2, 8 widths, SGD) and
examples/repro_2412_10094_aging.toml (depth 2, w = 6 and 24, full-batch heavy-ball descent), then measures
the power-law tail exponent β of the training NLL per width, ``w_c`` with its interval from the fit
``t_learn = A/(w − w_c)`` (the ``critical_width`` analysis) and the aging exponent μ of the weights in
``τ/τ_w`` (the ``aging`` analysis, normalised overlap and raw MSD). Figures and ``summary.json`` go to
``--out`` (default ``examples/out/repro_2412_10094/``).

The data are Bach chorales (music21's bundled corpus; needs the ``trajkit[music]`` extra): the gallery's
"digits or MNIST" clause does not fit this study, and ``--mnist-root`` is refused with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
import chorales_critical_width as chorales  # noqa: E402  (examples/ is not a package)

from trajkit.experiments import load_config, run_experiment  # noqa: E402

STEM = "repro_2412_10094"
GRID = HERE / "repro_2412_10094.toml"
AGING = HERE / "repro_2412_10094_aging.toml"
QUICK_GRID = ["run.steps=400", "run.replicas=2", "model.depth=1", "sweep.model.width=[4, 16, 64]"]
QUICK_AGING = ["model.depth=1", "sweep.model.width=[4, 32]", "run.steps=600", "run.replicas=2",
               "snapshots.n=40"]
THRESHOLDS = [1.2, 1.0, 0.8]
QUICK_THRESHOLDS = [2.0, 1.8, 1.6]
PAPER = {
    "beta": "power-law decay of the NLL at long times, power depending on d and w; "
            "to a positive floor when underparametrised",
    "w_c": "t_learn ∝ 1/(w − w_c) as w → w_c from above; w_c depends on the loss; its zero-loss limit is "
           "the interpolation transition",
    "mu_below": "fluctuations a single function of τ/τ_w (simple aging, μ = 1) in the underparametrised phase",
    "mu_above": "τ/τ_w scaling holds at short times, breaks down at long times",
}


def _f(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _ci(c):
    return [_f(c[0]), _f(c[1])]


def first_losses(out: Path) -> dict[tuple[int, int], float]:
    """Replica-mean training NLL at the first recorded step (initialisation) per (depth, width)."""
    return {key: float(np.mean([np.asarray(a.metrics["train_loss"])[0] for a in group.archives]))
            for key, group in chorales.by_configuration(out).items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "out" / STEM)
    p.add_argument("--figures", type=Path, default=None, help="also copy the figures and the numbers here")
    p.add_argument("--quick", action="store_true", help="a tiny size, for the smoke test")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configs and train nothing")
    p.add_argument("--mnist-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.mnist_root is not None:
        p.error("--mnist-root does not apply to 2412.10094: the study trains on Bach chorales "
                "(data.name = \"bach_chorales\"); run it without --mnist-root")
    grid_over, aging_over = (QUICK_GRID, QUICK_AGING) if args.quick else ([], [])
    configs = {"grid": load_config(GRID, grid_over), "aging": load_config(AGING, aging_over)}
    if args.dry_run:
        print(json.dumps(configs, indent=1, default=str))
        return {"configs": configs}
    thresholds = QUICK_THRESHOLDS if args.quick else THRESHOLDS
    grid_dir, aging_dir = args.out / "grid", args.out / "aging"
    args.out.mkdir(parents=True, exist_ok=True)
    run_experiment(GRID, grid_dir, grid_over, quiet=True, threads=args.threads)
    run_experiment(AGING, aging_dir, aging_over, quiet=True, threads=args.threads)

    res = chorales.loss_analysis(grid_dir, thresholds)
    aging_steps = int(configs["aging"]["run"]["steps"])
    tws = chorales.waiting_times_for(aging_steps)
    aging = {obs: chorales.aging_by_width(aging_dir, tws, obs) for obs in chorales.AGING_OBSERVABLES}
    losses = chorales.final_losses(aging_dir)
    chorales.figures(res, aging, losses, args.out)     # writes chorales_*.png: renamed below
    files = []
    for old, new in (("chorales_loss_tails", "loss_tails"), ("chorales_critical_width", "critical_width"),
                     ("chorales_aging", "aging")):
        dst = args.out / f"{STEM}_{new}.png"
        (args.out / f"{old}.png").replace(dst)
        files.append(dst)

    depth = int(res.coords["depth"][0])
    widths = [int(w) for w in res.coords["width"]]
    grid_losses = chorales.final_losses(grid_dir)
    first = first_losses(grid_dir)
    per_width = [{"width": w, "beta": _f(res["beta"][0][i]), "beta_ci": _ci(res["beta_ci"][0][i]),
                  "loss_inf": _f(res["loss_inf"][0][i]), "final_loss": _f(grid_losses[(depth, w)]),
                  "first_loss": _f(first[(depth, w)]),
                  "t_learn": [_f(t) for t in res["t_learn"][0][i]]}
                 for i, w in enumerate(widths)]
    aging_widths = sorted(w for _, w in losses)
    mu = {obs: {str(w): {"mu": _f(r.scalars["mu_collapse_raw"]), "mu_ci": _ci(r.scalars["mu_collapse_ci"]),
                         "regime": r.scalars["regime"], "collapse_quality": _f(r.scalars["collapse_quality"])}
                for (_, w), r in sorted(by_width.items())}
          for obs, by_width in aging.items()}
    summary = {
        "study": "2412.10094", "depth": depth, "widths": widths, "thresholds": [float(t) for t in thresholds],
        "grid": {"steps": int(configs["grid"]["run"]["steps"]), "replicas": int(configs["grid"]["run"]["replicas"]),
                 "overrides": grid_over},
        "per_width": per_width,
        "w_c": [_f(v) for v in res["w_c"][0]], "w_c_ci": [_ci(c) for c in res["w_c_ci"][0]],
        "w_c0": _f(res["w_c0"][0]), "w_c0_ci": _ci(res["w_c0_ci"][0]),
        "unreached_thresholds": [float(t) for t in res.scalars["unreached_thresholds"]],
        "aging": {"steps": aging_steps, "replicas": int(configs["aging"]["run"]["replicas"]),
                  "overrides": aging_over, "waiting_times": tws, "widths": aging_widths,
                  "final_loss": {str(w): v for (_, w), v in sorted(losses.items())}, "mu": mu},
        "paper": PAPER,
    }
    _common.publish(args.out, summary, files, args.figures, STEM)
    print(table(summary))
    return summary


def _fmt(v, c=None, d=2):
    if v is None:
        return "–"
    if c and c[0] is not None and c[1] is not None:
        return f"{v:.{d}f} [{c[0]:.{d}f}, {c[1]:.{d}f}]"
    return f"{v:.{d}f}"


def table(s: dict) -> str:
    """quantity | this run | paper."""
    lines = ["quantity | this run | paper", "---|---|---"]
    for r in s["per_width"]:
        lines.append(f"β (d={s['depth']}, w={r['width']}; L∞ {_fmt(r['loss_inf'])}) | {_fmt(r['beta'], r['beta_ci'])}"
                     f" | {PAPER['beta']}")
    for t, v, c in zip(s["thresholds"], s["w_c"], s["w_c_ci"], strict=True):
        lines.append(f"w_c(ℓ={t}) | {_fmt(v, c, 1)} | {PAPER['w_c']}")
    lines.append(f"w_c(ℓ→0) | {_fmt(s['w_c0'], s['w_c0_ci'], 1)} | {PAPER['w_c']}")
    lo, hi = s["aging"]["widths"][0], s["aging"]["widths"][-1]
    for obs, by_w in s["aging"]["mu"].items():
        for w, paper in ((lo, PAPER["mu_below"]), (hi, PAPER["mu_above"])):
            m = by_w[str(w)]
            lines.append(f"μ ({obs}, w={w}) | {_fmt(m['mu'], m['mu_ci'])} ({m['regime']}) | {paper}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
