"""Reproduction of 2405.13098 (Kerr Winter & Janssen 2024): glassy dynamics of overdamped Langevin training.

    .venv/bin/python examples/repro_2405_13098.py                 # full size (≈ 5 min on 2 cores)
    .venv/bin/python examples/repro_2405_13098.py --quick         # the smoke test (tiny, < 1 min)
    .venv/bin/python examples/repro_2405_13098.py --mnist-root DIR --dry-run     # MNIST configs, checked only

Two ensembles, each a trajkit config in examples/:

1. ``repro_2405_13098.toml``: the paper's protocol — SGD (batch 100) → full-batch GD polish at η → at η/10 →
   overdamped Langevin at a sweep of temperatures — on an MLP with one hidden layer of 32, binary-PCA
   inputs (``pca_parity``: first 10 principal components of the digits, ±1 even/odd labels), quadratic
   hinge. Analysed on the Langevin stage (hidden-layer weights, one absolute cutoff ε for all T):
   ``relaxation`` twice — with the conventions of the paper's analysis code (``tau_rule = first_below``,
   ``min_tau = 4`` steps, ``tau_estimator = per_replica``) and with trajkit's defaults (interpolated
   crossing, τ of the replica-mean curve, no minimum) — for τe(T), its log-log slope and the
   time–temperature-superposition exponent of Q against t/τe(T) at the highest T; ``chi4`` and ``aging``
   (MSD) at the lowest T.
2. ``repro_2405_13098_phase.toml``: the same SGD → GD → GD/10 protocol over hidden width (N/P) × weight
   decay λ; ``phase_diagram`` of the final polished (``polish_slow``) training loss: the geometric mean
   over replicas per cell, its 1-D cuts and their transition points (jamming-like in N/P at small λ,
   topology trivialisation in λ, where the loss reaches the trivial 1/2).

Writes figures, the saved results and ``summary.json`` under ``--out`` (default
``examples/out/repro_2405_13098/``; recorded archives are reused on rerun), ``--figures DIR`` copies the
figures and the numbers there (as ``repro_2405_13098_*.png`` and ``repro_2405_13098.json``). Prints a
table: quantity | this run | paper.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import string
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt

import trajkit
from trajkit.experiments import run_experiment

STEM = "repro_2405_13098"
HERE = Path(__file__).resolve().parent
CONFIGS = {"protocol": HERE / f"{STEM}.toml", "phase": HERE / f"{STEM}_phase.toml"}
#: the conventions of the paper's analysis code, and trajkit's defaults, for τ
PAPER_TAU = {"tau_rule": "first_below", "min_tau": 4.0, "tau_estimator": "per_replica"}
DEFAULT_TAU = {"tau_rule": "interpolate", "min_tau": None, "tau_estimator": "mean_curve"}
DPI = 90


def load_configs(quick: bool = False, mnist_root: str | None = None) -> dict[str, dict[str, Any]]:
    """The two configs as dicts (``run_experiment`` takes them), scaled down for ``quick``, on MNIST for
    ``mnist_root`` (``preprocess = "binary_pca"``, 10 components, the same P as the digits runs)."""
    cfgs = {k: tomllib.loads(p.read_text()) for k, p in CONFIGS.items()}
    if quick:
        pro, ph = cfgs["protocol"], cfgs["phase"]
        pro["model"]["hidden"] = [8]
        pro["data"]["n_train"] = 300
        pro["run"].update(steps=150, replicas=3)
        pro["snapshots"]["n"] = 8
        for st, steps in zip(pro["stages"], (None, 80, 80, 600), strict=True):
            if steps:
                st["steps"] = steps
        pro["stages"][3]["snapshots"]["n"] = 40
        pro["stages"][3]["sweep"]["dynamics.temperature"] = [1e-2, 1e-1]
        ph["run"].update(steps=100, replicas=2)
        ph["snapshots"]["n"] = 4
        ph["data"]["n_train"] = 60
        ph["sweep"] = {"model.hidden": [[1], [16]], "dynamics.weight_decay": [1e-5, 1.0]}
        for st, steps in zip(ph["stages"], (None, 100, 50), strict=True):
            if steps:
                st["steps"] = steps
    if mnist_root is not None:
        root = str(Path(mnist_root).expanduser().resolve())
        for cfg in cfgs.values():
            n_train = cfg["data"].get("n_train", 1437)          # pca_parity's P on the digits when unset
            cfg["data"] = {"name": "mnist", "root": root, "preprocess": "binary_pca", "n_components": 10,
                           "n_train": n_train, "n_test": 2000}
    return cfgs


def _final_losses(stage_dir: Path) -> dict[str, float]:
    """Geometric mean (over every run of a stage) of the final train_loss, and its largest value."""
    losses = [float(a.metrics["train_loss"][-1]) for a in trajkit.open_ensemble([stage_dir], check=False).archives]
    return {"geomean": float(np.exp(np.mean(np.log(np.maximum(losses, 1e-10))))), "max": float(max(losses))}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_jsonable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _save(result: Any, out: Path, name: str, figs: list[Path]) -> None:
    fig = result.plot()
    fig.savefig(out / f"{name}.png", dpi=DPI)
    plt.close(fig)
    result.save(out / name)
    figs.append(out / f"{name}.png")


def _relaxation_summary(rel: Any) -> dict[str, Any]:
    sc = rel.scalars
    temps = [float(t) for t in rel.coords["temperature"]]
    out = {k: sc.get(k) for k in ("tau_T_slope", "tau_T_slope_ci", "tts_exponent", "tts_exponent_ci",
                                  "tts_temperature", "tts_fit_range", "tts_fit_points", "tau_T_points")}
    out["tau_e_by_T"] = dict(zip(map(str, temps), map(float, rel.arrays["tau_T"]), strict=True))
    out["tau_e_flag_by_T"] = dict(zip(map(str, temps), map(int, rel.arrays["tau_T_flag"]), strict=True))
    if "tau_T_std" in rel.arrays:
        out["tau_e_std_by_T"] = dict(zip(map(str, temps), map(float, rel.arrays["tau_T_std"]), strict=True))
        out["tau_e_resolved_by_T"] = dict(zip(map(str, temps), map(int, rel.arrays["tau_T_resolved"]), strict=True))
    return out


def analyse_protocol(pro_dir: Path, out: Path, figs: list[Path], steps: int, n_boot: int) -> dict[str, Any]:
    lang = pro_dir / "langevin"
    ens = trajkit.open_ensemble([lang], check=False)
    groups = ens.groups("dynamics.temperature")
    temps = sorted(groups)
    # waiting times log-spaced over the first fifth of the Langevin run
    late = sorted({int(x) for x in np.geomspace(max(steps / 50, 2), steps / 5, 4)})
    common = {"select": "hidden", "snap": "nearest", "waiting_times": late}
    s: dict[str, Any] = {"temperatures": temps, "waiting_times": late,
                         "final_train_loss": {st: _final_losses(pro_dir / st) for st in ("sgd", "polish",
                                                                                        "polish_slow")}}
    # one absolute cutoff shared by all temperatures: a tenth of the hottest weights' spread at the first tw
    ov = trajkit.analyze("overlaps", groups[temps[-1]], epsilon_factor=10.0, **common)
    eps = float(ov.arrays["epsilon"].mean())
    s["epsilon"] = eps
    for label, conv in (("paper", PAPER_TAU), ("default", DEFAULT_TAU)):
        kw = {k: v for k, v in conv.items() if v is not None}
        rel = trajkit.analyze("relaxation", lang, epsilon=eps, n_boot=n_boot, **common, **kw)
        _save(rel, out, f"relaxation_{label}", figs)
        s[f"relaxation_{label}"] = {**_relaxation_summary(rel), **{k: conv[k] for k in conv}}
    cold = groups[temps[0]]
    c4 = trajkit.analyze("chi4", cold, epsilon=eps, n_boot=max(n_boot, 2), **common)
    _save(c4, out, "chi4_coldest", figs)
    # χ4 per waiting time (the plugin's scalars are those of the last one, whose peak may lie past the run)
    s["chi4_coldest"] = {"tw_step": c4.coords["tw_step"], **{k: c4.arrays[k] for k in (
        "chi4_peak", "chi4_peak_sem", "tau4", "tau4_sem", "tau4_resolved")}}
    ag = trajkit.analyze("aging", cold, observable="msd", n_boot=n_boot, **common)
    _save(ag, out, "aging_coldest", figs)
    s["aging_coldest"] = {k: ag.scalars[k] for k in ("regime", "mu_collapse", "mu_collapse_ci", "mu_h", "mu_h_ci",
                                                     "mu_tau", "mu_tau_ci")}
    # how the MSD grows at the first waiting time: d ln MSD / d ln(t - tw) over 10 <= t - tw <= steps/5
    # (1: diffusion, 2: ballistic drift)
    lag = ag.coords["step"] - ag.coords["tw_step"][0]
    msd = ag.arrays["msd"][0]
    ok = (lag >= 10) & (lag <= steps / 5) & np.isfinite(msd) & (msd > 0)
    s["aging_coldest"]["msd_exponent"] = float(np.polyfit(np.log(lag[ok]), np.log(msd[ok]), 1)[0])
    s["lowest_T"] = temps[0]
    figs.append(_tau_figure(s, out))
    figs.append(_protocol_figure(pro_dir, out))
    return s


def _tau_figure(s: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for label, marker in (("paper", "o"), ("default", "s")):
        r = s[f"relaxation_{label}"]
        t = np.array([float(k) for k in r["tau_e_by_T"]])
        tau = np.array([np.nan if v is None else v for v in r["tau_e_by_T"].values()], dtype=float)
        err = None
        if "tau_e_std_by_T" in r:
            err = np.array([np.nan if v is None else v for v in r["tau_e_std_by_T"].values()], dtype=float)
        name = ("paper's code: first_below, min_tau 4, per replica" if label == "paper" else
                "trajkit defaults: interpolate, mean curve")
        ax.errorbar(t, tau, yerr=err, fmt=marker + "-", ms=4, capsize=2,
                    label=f"{name} (slope {r['tau_T_slope']:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("τe (steps; Q < 1/e)")
    ax.set_title("τe(T) of the Langevin stage, two τ conventions", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "tau_conventions.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _protocol_figure(pro_dir: Path, out: Path) -> Path:
    """Training loss of replica 0 through the stages (each stage's steps laid end to end)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    offset = 0.0
    for st in ("sgd", "polish", "polish_slow", "langevin"):
        ens = trajkit.open_ensemble([pro_dir / st], check=False)
        runs = [a for a in ens.archives if a.metadata["ensemble"]["replica"] == 0]
        end = offset
        for a in sorted(runs, key=lambda a: a.metadata["dynamics"]["temperature"]):
            steps = np.asarray(a.steps, float)
            lab = st if st != "langevin" else f"langevin T={a.metadata['dynamics']['temperature']:g}"
            ax.plot(offset + np.maximum(steps, 0.5), a.metrics["train_loss"], lw=1.2, label=lab)
            end = max(end, offset + steps[-1])
        ax.axvline(end, color="0.7", lw=0.6)
        offset = end
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step (stages end to end)")
    ax.set_ylabel("train_loss (replica 0)")
    ax.set_title("SGD (batch 100) → GD at η → GD at η/10 → Langevin", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = out / "protocol.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def analyse_phase(phase_dir: Path, out: Path, figs: list[Path], n_boot: int) -> dict[str, Any]:
    pd = trajkit.analyze("phase_diagram", phase_dir, stage="polish_slow", x_key="model.n_params",
                         x_per_key="dataset.n_train", y_key="dynamics.weight_decay", n_boot=n_boot)
    fig = pd.plot()
    fig.set_size_inches(12, 4)
    fig.savefig(out / "phase_diagram.png", dpi=80)
    plt.close(fig)
    pd.save(out / "phase_diagram")
    figs.append(out / "phase_diagram.png")
    geo = pd.arrays["loss_geomean"]
    xs, ys = pd.coords["x"], pd.coords["y"]
    # the trivial phase read off directly: per N/P, the smallest λ from which on every cell sits at the
    # trivial minimum — loss 1/2 (within 5 %: the output bias, decayed too, keeps a trace of the labels'
    # imbalance) with every replica at the same point (spread of log10 L below 1e-3) — bracketed by the λ
    # below it (the grid's resolution); [largest λ, None] when no cell is trivial
    trivial = (np.abs(geo - 0.5) < 0.025) & (pd.arrays["loss_log10_std"] < 1e-3)
    bracket = []
    for i in range(xs.size):
        j = ys.size
        while j > 0 and trivial[i, j - 1]:
            j -= 1
        bracket.append([float(ys[j - 1]) if j > 0 else None, float(ys[j]) if j < ys.size else None])
    return {"n_over_p": xs, "weight_decay": ys, "loss_geomean": geo, "loss_log10_std": pd.arrays["loss_log10_std"],
            "replicas": pd.arrays["replicas"],
            # jamming-like: along N/P at the smallest λ; trivialisation: along λ at the largest N/P
            "np_transition": pd.arrays["x_transition"], "np_transition_ci": pd.arrays["x_transition_ci"],
            "lambda_transition": pd.arrays["y_transition"], "lambda_transition_ci": pd.arrays["y_transition_ci"],
            "jamming_np": pd.arrays["x_transition"][0], "jamming_np_ci": pd.arrays["x_transition_ci"][0],
            "jamming_contrast": pd.arrays["x_contrast"][0],
            "lambda_midlevel": pd.arrays["y_transition"][-1], "lambda_midlevel_ci": pd.arrays["y_transition_ci"][-1],
            "lambda_trivial_bracket": bracket, "trivial_bracket_largest_np": bracket[-1],
            "loss_underparam_small_lambda": geo[0, 0], "loss_overparam_small_lambda": geo[-1, 0],
            "loss_largest_lambda": {"min": float(np.nanmin(geo[:, -1])), "max": float(np.nanmax(geo[:, -1]))},
            "n_runs": pd.scalars["n_runs"], "n_cells": pd.scalars["n_cells"]}


#: the table: quantity, this run (a template of dotted paths into summary.json), the paper's stated result
TABLE = [
    ("TTS exponent d ln Q/d ln(t/τe), highest T — paper's τ conventions",
     "{relaxation_paper.tts_exponent:.2f} ({relaxation_paper.tts_exponent_ci.0:.2f} … "
     "{relaxation_paper.tts_exponent_ci.1:.2f})", "≈ −0.5 (Q ∝ t^−0.5, abstract)"),
    ("TTS exponent — trajkit's τ defaults",
     "{relaxation_default.tts_exponent:.2f} ({relaxation_default.tts_exponent_ci.0:.2f} … "
     "{relaxation_default.tts_exponent_ci.1:.2f})", "≈ −0.5"),
    ("slope of ln τe vs ln T — paper's τ conventions",
     "{relaxation_paper.tau_T_slope:.2f} ({relaxation_paper.tau_T_slope_ci.0:.2f} … "
     "{relaxation_paper.tau_T_slope_ci.1:.2f})", "no diverging relaxation time at T > 0 (qualitative)"),
    ("slope of ln τe vs ln T — trajkit's τ defaults",
     "{relaxation_default.tau_T_slope:.2f} ({relaxation_default.tau_T_slope_ci.0:.2f} … "
     "{relaxation_default.tau_T_slope_ci.1:.2f})", "no diverging relaxation time at T > 0 (qualitative)"),
    ("χ4 peak at the lowest T (first waiting time)",
     "{chi4_coldest.chi4_peak.0:.3g} ± {chi4_coldest.chi4_peak_sem.0:.2g} at τ4 ≈ {chi4_coldest.tau4.0:.0f} steps "
     "(tw = {chi4_coldest.tw_step.0})", "dynamic heterogeneity at low T (qualitative)"),
    ("aging of the MSD at the lowest T",
     "regime {aging_coldest.regime}, μ (collapse) {aging_coldest.mu_collapse:.2f}; "
     "MSD ∝ t^{aging_coldest.msd_exponent:.2f}", "ageing at low T (qualitative)"),
    ("jamming-like transition N/P at the smallest λ",
     "{phase.jamming_np:.2f} ({phase.jamming_np_ci.0:.2f} … {phase.jamming_np_ci.1:.2f}), "
     "contrast {phase.jamming_contrast:.1f} decades", "under-to-overparametrised transition (qualitative)"),
    ("topology trivialisation at the largest N/P: loss = 1/2 from λ",
     "between {phase.trivial_bracket_largest_np.0:g} and {phase.trivial_bracket_largest_np.1:g}",
     "topology trivialisation transition (qualitative)"),
    ("mid-level of the loss along λ at the largest N/P (phase_diagram's estimator)",
     "{phase.lambda_midlevel:.3g} ({phase.lambda_midlevel_ci.0:.3g} … {phase.lambda_midlevel_ci.1:.3g})",
     "— (a crossover of the regularised fit, not the trivialisation)"),
    ("final polished loss at the largest λ (all N/P)",
     "{phase.loss_largest_lambda.min:.4f} … {phase.loss_largest_lambda.max:.4f}",
     "trivial minimum w = 0: loss exactly 0.5 (OBSERVABLES.md)"),
]


def lookup(summary: dict[str, Any], path: str) -> Any:
    """``summary`` at a dotted path (``a.b.0``: list indices as numbers)."""
    v: Any = summary
    for part in path.split("."):
        v = v[int(part)] if isinstance(v, list) else v[part]
    return v


class _PathFormatter(string.Formatter):
    def __init__(self, summary: dict[str, Any]):
        self.summary = summary

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        return lookup(self.summary, field_name), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "n/a"
        return format(value, format_spec).replace("-", "−") if isinstance(value, float | int) else str(value)


def table_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    fmt = _PathFormatter(summary)
    return [{"quantity": q, "template": t, "this_run": fmt.format(t), "paper": p} for q, t, p in TABLE]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out" / STEM))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    ap.add_argument("--mnist-root", default=None, help="record on MNIST (binary PCA) from the IDX files in DIR")
    ap.add_argument("--figures", default=None, help="also copy the figures and the numbers json to DIR")
    ap.add_argument("--dry-run", action="store_true", help="build and check the configs; record nothing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cfgs = load_configs(args.quick, args.mnist_root)
    if args.dry_run:
        for part, cfg in cfgs.items():
            plan = run_experiment(copy.deepcopy(cfg), out / part, dry_run=True, quiet=True)
            print(f"{part}: {plan['n_runs']} runs in stages {', '.join(plan['stages'])} "
                  f"(data {plan['config']['data']['name']})")
        return 0
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for part, cfg in cfgs.items():
        (out / f"config_{part}.json").write_text(json.dumps(cfg, indent=1))
        run_experiment(copy.deepcopy(cfg), out / part, quiet=True)
    t_record = time.perf_counter() - t0
    n_boot = 50 if args.quick else 200
    figs: list[Path] = []
    lang_steps = int(cfgs["protocol"]["stages"][3]["steps"])
    summary: dict[str, Any] = {"quick": args.quick, "data": cfgs["protocol"]["data"]["name"]}
    summary.update(analyse_protocol(out / "protocol", out, figs, lang_steps, n_boot))
    summary["phase"] = analyse_phase(out / "phase", out, figs, n_boot)
    summary["sizes"] = {
        "protocol": {"hidden": cfgs["protocol"]["model"]["hidden"], "replicas": cfgs["protocol"]["run"]["replicas"],
                     "stage_steps": [cfgs["protocol"]["run"]["steps"]] + [st["steps"]
                                                                       for st in cfgs["protocol"]["stages"][1:]]},
        "phase": {"n_train": cfgs["phase"]["data"]["n_train"], "replicas": cfgs["phase"]["run"]["replicas"],
                  "widths": [h[0] for h in cfgs["phase"]["sweep"]["model.hidden"]]}}
    summary["wall_s"] = {"record": round(t_record, 1), "total": round(time.perf_counter() - t0, 1)}
    summary = _jsonable(summary)
    summary["table"] = table_rows(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        for f in figs:
            shutil.copy(f, dest / f"{STEM}_{f.name}")
        shutil.copy(out / "summary.json", dest / f"{STEM}.json")
    width = max(len(r["quantity"]) for r in summary["table"])
    print(f"\n{'quantity':<{width}} | this run | paper")
    for r in summary["table"]:
        print(f"{r['quantity']:<{width}} | {r['this_run']} | {r['paper']}")
    print(f"\nwall time {summary['wall_s']['total']:.0f} s (recording {summary['wall_s']['record']:.0f} s); "
          f"figures and summary.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
