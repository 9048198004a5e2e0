"""Bach chorales, deep recurrent nets and the critical width (issue 7; the write-up is docs/chorales.md).

Records the (depth, width) grid of examples/chorales_critical_width.toml — tanh RNNs trained with SGD on
next-step prediction of the four voices of Bach chorales (music21's corpus) — then measures:

1. the power-law tail of the training NLL per time step, ``L∞ + A t^−β``, per (depth, width);
2. per depth, ``1/t_learn(ℓ)`` against the width and the fit ``t_learn = A/(w − w_c)`` for each threshold ℓ,
   with ``w_c(ℓ)`` extrapolated to ℓ → 0 (the ``critical_width`` analysis);
3. the aging of the weights, from a second, longer ensemble (depth 2, w = 6 below ``w_c`` and w = 24 above,
   full-batch heavy-ball gradient descent, 80,000 steps): the normalised overlap ``C(τ_w, τ_w + τ)`` and the
   mean square displacement ``Δ(τ_w, τ_w + τ)`` against ``τ/τ_w`` (the ``aging`` analysis gives μ; simple
   aging is μ = 1).

Needs the music21 extra (``pip install "trajkit[music]"``). Runs on 2 CPU cores::

    python examples/chorales_critical_width.py                      # the full grid (docs/chorales.md)
    python examples/chorales_critical_width.py --quick              # a reduced grid, for a smoke test
    python examples/chorales_critical_width.py --out DIR --figures docs/figures

The grid goes to ``--out`` (default ``chorales-out``), the aging ensemble to ``--out`` + ``-aging``
(an interrupted run resumes; ``--skip-aging`` leaves the second stage out); the figures
``chorales_loss_tails.png``, ``chorales_critical_width.png`` and ``chorales_aging.png`` and their numbers
(``chorales_numbers.json``) go to ``--figures``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

import trajkit
from trajkit.analysis import open_ensemble
from trajkit.experiments import run_experiment

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "chorales_critical_width.toml"
QUICK = ["run.steps=400", "run.replicas=2", "sweep.model.width=[4, 16, 64]", "sweep.model.depth=[1]"]
#: the aging stage: the grid's config at depth 2, one width below w_c and one above, trained longer with
#: full-batch heavy-ball gradient descent (batch = all 48 windows), where the aging of docs/chorales.md shows
AGING = ["sweep.model.depth=[2]", "sweep.model.width=[6, 24]", "run.steps=80000", "dynamics.batch_size=48",
         "dynamics.lr=0.01", "snapshots.n=90"]
QUICK_AGING = ["sweep.model.depth=[1]", "sweep.model.width=[4, 32]", "run.steps=600", "run.replicas=2",
               "dynamics.batch_size=48", "dynamics.lr=0.01", "snapshots.n=40"]
#: the observables of the aging figure: the normalised overlap (scale-free) and the raw displacement
AGING_OBSERVABLES = ("overlap_normalized", "msd")


def record(out: Path, overrides: list[str], threads: int) -> dict:
    """Train and record the config with ``overrides`` into ``out`` (resumes an interrupted run)."""
    return run_experiment(CONFIG, out, overrides, quiet=False, threads=threads)


def waiting_times_for(steps: int) -> list[int]:
    """Four log-spaced waiting times from ``steps/40`` to ``steps/2`` (the aging analysis snaps them to the
    nearest snapshots), so that ``τ/τ_w`` reaches 1 for the latest."""
    return [int(s) for s in np.geomspace(max(steps // 40, 1), steps // 2, 4).round()]


def loss_analysis(out: Path, thresholds: list[float]) -> trajkit.analysis.Result:
    """Loss tails, learning times and w_c(ℓ) per depth."""
    with warnings.catch_warnings(record=True):   # thresholds no run reaches are listed in the result
        warnings.simplefilter("always")
        return trajkit.analyze("critical_width", [out], thresholds=thresholds)


def by_configuration(out: Path) -> dict[tuple[int, int], trajkit.analysis.Ensemble]:
    """The replica groups of the ensemble in ``out``, keyed by (depth, width)."""
    groups = {}
    for group in open_ensemble([out], check=False).groups("config.model").values():
        model = group.archives[0].metadata["config"]["model"]
        groups[(int(model["depth"]), int(model["width"]))] = group
    return groups


def aging_by_width(out: Path, waiting_times: list[int], observable: str = "msd",
                   ) -> dict[tuple[int, int], trajkit.analysis.Result]:
    """The ``aging`` analysis of ``observable`` for every (depth, width) group of replicas in ``out``."""
    return {key: trajkit.analyze("aging", group, waiting_times=waiting_times, observable=observable, n_boot=50,
                                 max_ratio=None, snap="nearest")
            for key, group in by_configuration(out).items()}


def final_losses(out: Path) -> dict[tuple[int, int], float]:
    """Replica-mean final training NLL per (depth, width) of the ensemble in ``out``."""
    return {key: float(np.mean([np.asarray(a.metrics["train_loss"])[-1] for a in group.archives]))
            for key, group in by_configuration(out).items()}


def figures(res, aging: dict[str, dict[tuple[int, int], trajkit.analysis.Result]],
            losses: dict[tuple[int, int], float], fig_dir: Path) -> None:
    """The three figures of docs/chorales.md; ``aging`` maps an observable to its per-(depth, width) results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from trajkit_dynamics.critical_width import plot_inverse_learning_time, plot_loss_tails

    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=90)
    plot_loss_tails(res, ax)
    ax.set_title("training NLL per time step and voice")
    fig.tight_layout()
    fig.savefig(fig_dir / "chorales_loss_tails.png")
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=90)
    plot_inverse_learning_time(res, ax)
    ax.set_title("1/t_learn vs width; lines: t_learn = A/(w − w_c)")
    fig.tight_layout()
    fig.savefig(fig_dir / "chorales_critical_width.png")
    fig, axes = plt.subplots(1, len(aging), figsize=(4.4 * len(aging), 3.6), dpi=90, squeeze=False)
    for ax, (obs, by_width) in zip(axes[0], aging.items(), strict=True):
        depth = max(d for d, _ in by_width)
        widths = sorted(w for d, w in by_width if d == depth)
        for w, color in zip((widths[0], widths[-1]), ("tab:blue", "tab:red"), strict=True):
            r = by_width[(depth, w)]
            step, y = r.coords["step"], r.arrays[obs]
            y = 1.0 - y if obs == "overlap_normalized" else y   # 1 − C decays on a log scale like Δ grows
            for k, tw in enumerate(r.coords["tw_step"]):
                lag = (step - tw).astype(float)
                ok = (lag > 0) & np.isfinite(y[k]) & (y[k] > 0)
                shade = 0.35 + 0.65 * k / max(len(r.coords["tw_step"]) - 1, 1)
                lo, hi = r.scalars["mu_collapse_ci"]
                label = (f"w={w} (final NLL {losses[(depth, w)]:.2f}): μ={r.scalars['mu_collapse_raw']:.2f} "
                         f"[{lo:.2f}, {hi:.2f}]") if k == 0 else None
                ax.loglog(lag[ok] / tw, y[k][ok], color=color, alpha=shade, lw=1, label=label)
        ax.set_xlabel("τ / τ_w")
        ax.set_ylabel("1 − C(τ_w, τ_w + τ) (normalised overlap)" if obs == "overlap_normalized"
                      else "Δ(τ_w, τ_w + τ)")
        name = "normalised overlap" if obs == "overlap_normalized" else "mean square displacement"
        ax.set_title(f"depth {depth}, {name}; darker = later τ_w", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(fig_dir / "chorales_aging.png")
    plt.close("all")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("chorales-out"))
    p.add_argument("--figures", type=Path, default=Path("chorales-figures"))
    p.add_argument("--quick", action="store_true", help="reduced grids and short runs (a smoke test)")
    p.add_argument("--skip-aging", action="store_true",
                   help="leave out the aging ensemble (the aging figure then uses the grid)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--thresholds", type=float, nargs="+",
                   help="loss thresholds of t_learn (default 1.2 1.0 0.8; with --quick 2.0 1.8 1.6)")
    args = p.parse_args(argv)
    if args.thresholds is None:
        args.thresholds = [2.0, 1.8, 1.6] if args.quick else [1.2, 1.0, 0.8]
    summary = record(args.out, QUICK if args.quick else [], args.threads)
    res = loss_analysis(args.out, args.thresholds)
    steps = int(summary["runs"][0]["steps"])
    aging_grid = aging_by_width(args.out, waiting_times_for(steps))
    if args.skip_aging:
        aging_out, aging_steps = args.out, steps
        aging = {"msd": aging_grid}
    else:
        aging_out = args.out.with_name(args.out.name + "-aging")
        aging_steps = int(record(aging_out, QUICK_AGING if args.quick else AGING, args.threads)["runs"][0]["steps"])
        aging = {obs: aging_by_width(aging_out, waiting_times_for(aging_steps), obs) for obs in AGING_OBSERVABLES}
    losses = final_losses(aging_out)
    depths = [int(d) for d in res.coords["depth"]]

    def mu_table(results):
        return {f"d={d},w={w}": [r.scalars["mu_collapse_raw"], r.scalars["mu_collapse_ci"], r.scalars["regime"]]
                for (d, w), r in sorted(results.items())}

    numbers = {
        "thresholds": res.coords["threshold"].tolist(),
        "unreached_thresholds": res.scalars["unreached_thresholds"],
        "widths": res.coords["width"].tolist(),
        "depths": depths,
        "loss_inf": res["loss_inf"].tolist(), "beta": res["beta"].tolist(), "final_loss": res["final_loss"].tolist(),
        "t_learn": res["t_learn"].tolist(),
        "w_c": res["w_c"].tolist(), "w_c_ci": res["w_c_ci"].tolist(), "w_c0": res["w_c0"].tolist(),
        "w_c0_ci": res["w_c0_ci"].tolist(), "waiting_times": waiting_times_for(steps),
        "aging_mu_grid_msd": mu_table(aging_grid),
        "aging_stage": {"overrides": None if args.skip_aging else (QUICK_AGING if args.quick else AGING),
                        "waiting_times": waiting_times_for(aging_steps),
                        "final_loss": {f"d={d},w={w}": v for (d, w), v in sorted(losses.items())},
                        "mu": {obs: mu_table(r) for obs, r in aging.items()}},
        "test_loss_final": {f"{r['coords']}": r["test_loss"] for r in summary["runs"] if r["replica"] == 0},
    }
    figures(res, aging, losses, args.figures)
    (args.figures / "chorales_numbers.json").write_text(json.dumps(numbers, indent=1, default=float))
    print(json.dumps({"w_c": numbers["w_c"], "w_c0": numbers["w_c0"],
                      "unreached_thresholds": numbers["unreached_thresholds"],
                      "aging_mu": numbers["aging_stage"]["mu"]}, indent=1, default=float))
    return numbers


if __name__ == "__main__":
    main()
