"""Bach chorales, deep recurrent nets and the critical width (issue 7; the write-up is docs/chorales.md).

Records the (depth, width) grid of examples/chorales_critical_width.toml — tanh RNNs trained with SGD on
next-step prediction of the four voices of Bach chorales (music21's corpus) — then measures:

1. the power-law tail of the training NLL per time step, ``L∞ + A t^−β``, per (depth, width);
2. per depth, ``1/t_learn(ℓ)`` against the width and the fit ``t_learn = A/(w − w_c)`` for each threshold ℓ,
   with ``w_c(ℓ)`` extrapolated to ℓ → 0 (the ``critical_width`` analysis);
3. the aging of the weights: the mean square displacement ``Δ(τ_w, τ_w + τ)`` against ``τ/τ_w`` for a width
   below and above ``w_c`` (the ``aging`` analysis gives μ; simple aging is μ = 1).

Needs the music21 extra (``pip install "trajkit[music]"``). Runs on 2 CPU cores::

    python examples/chorales_critical_width.py                      # the full grid (docs/chorales.md)
    python examples/chorales_critical_width.py --quick              # a reduced grid, for a smoke test
    python examples/chorales_critical_width.py --out DIR --figures docs/figures

The ensemble goes to ``--out`` (default ``chorales-out``; an interrupted run resumes); the figures
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


def record(out: Path, quick: bool, threads: int) -> dict:
    """Train and record the grid (resumes an interrupted run)."""
    return run_experiment(CONFIG, out, QUICK if quick else [], quiet=False, threads=threads)


def loss_analysis(out: Path, thresholds: list[float]) -> trajkit.analysis.Result:
    """Loss tails, learning times and w_c(ℓ) per depth."""
    with warnings.catch_warnings(record=True):   # thresholds no run reaches are listed in the result
        warnings.simplefilter("always")
        return trajkit.analyze("critical_width", [out], thresholds=thresholds)


def aging_by_width(out: Path, waiting_times: list[int]) -> dict[tuple[int, int], trajkit.analysis.Result]:
    """The ``aging`` analysis (observable msd) of every (depth, width) group of replicas."""
    ens = open_ensemble([out], check=False)
    results = {}
    for group in ens.groups("config.model").values():
        model = group.archives[0].metadata["config"]["model"]
        results[(int(model["depth"]), int(model["width"]))] = trajkit.analyze(
            "aging", group, waiting_times=waiting_times, observable="msd", n_boot=50, max_ratio=None, snap="nearest")
    return results


def figures(res, aging, w_c: dict[int, float], fig_dir: Path) -> None:
    """The three figures of docs/chorales.md."""
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
    depths = sorted({d for d, _ in aging})
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.4), dpi=90, squeeze=False)
    for ax, d in zip(axes[0], depths, strict=True):
        widths = sorted(w for dd, w in aging if dd == d)
        picks = [widths[0], widths[-1]]
        for w, color in zip(picks, ("tab:blue", "tab:red"), strict=True):
            r = aging[(d, w)]
            step, y = r.coords["step"], r.arrays["msd"]
            i, j = [str(x) for x in res.coords["depth"]].index(str(d)), list(res.coords["width"]).index(w)
            side = f"L∞={res['loss_inf'][i, j]:.2f}"   # a positive floor: the underparametrised phase
            for k, tw in enumerate(r.coords["tw_step"]):
                lag = (step - tw).astype(float)
                ok = (lag > 0) & np.isfinite(y[k]) & (y[k] > 0)
                shade = 0.35 + 0.65 * k / max(len(r.coords["tw_step"]) - 1, 1)
                label = f"w={w} ({side}), μ={r.scalars['mu_collapse_raw']:.2f}" if k == 0 else None
                ax.loglog(lag[ok] / tw, y[k][ok], color=color, alpha=shade, lw=1, label=label)
        ax.set_xlabel("τ / τ_w")
        ax.set_ylabel("Δ(τ_w, τ_w + τ)")
        ax.set_title(f"depth {d}: aging, darker = later τ_w")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(fig_dir / "chorales_aging.png")
    plt.close("all")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("chorales-out"))
    p.add_argument("--figures", type=Path, default=Path("chorales-figures"))
    p.add_argument("--quick", action="store_true", help="a reduced grid (a smoke test)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--thresholds", type=float, nargs="+", default=[1.2, 1.0, 0.8])
    args = p.parse_args(argv)
    summary = record(args.out, args.quick, args.threads)
    res = loss_analysis(args.out, args.thresholds)
    steps = int(summary["runs"][0]["steps"])
    waiting_times = [int(s) for s in np.geomspace(max(steps // 50, 1), steps // 4, 4).round()]
    aging = aging_by_width(args.out, waiting_times)
    depths = [int(d) for d in res.coords["depth"]]
    w_c = {d: float(res["w_c0"][i]) for i, d in enumerate(depths)}
    numbers = {
        "thresholds": res.coords["threshold"].tolist(),
        "unreached_thresholds": res.scalars["unreached_thresholds"],
        "widths": res.coords["width"].tolist(),
        "depths": depths,
        "loss_inf": res["loss_inf"].tolist(), "beta": res["beta"].tolist(), "final_loss": res["final_loss"].tolist(),
        "t_learn": res["t_learn"].tolist(),
        "w_c": res["w_c"].tolist(), "w_c_ci": res["w_c_ci"].tolist(), "w_c0": res["w_c0"].tolist(),
        "w_c0_ci": res["w_c0_ci"].tolist(), "waiting_times": waiting_times,
        "aging_mu": {f"d={d},w={w}": [r.scalars["mu_collapse_raw"], r.scalars["mu_collapse_ci"], r.scalars["regime"]]
                     for (d, w), r in sorted(aging.items())},
        "test_loss_final": {f"{r['coords']}": r["test_loss"] for r in summary["runs"] if r["replica"] == 0},
    }
    figures(res, aging, w_c, args.figures)
    (args.figures / "chorales_numbers.json").write_text(json.dumps(numbers, indent=1, default=float))
    print(json.dumps({k: numbers[k] for k in ("w_c", "w_c0", "unreached_thresholds", "aging_mu")}, indent=1,
                     default=float))
    return numbers


if __name__ == "__main__":
    main()
