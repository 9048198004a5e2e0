"""Worked example 1: overdamped Langevin training on `pca_parity` at five temperatures, analysed like a glass.

    .venv/bin/python examples/glass_langevin.py            # records, analyses, writes figures (a few minutes)
    .venv/bin/python examples/glass_langevin.py --steps 2000 --replicas 2     # a quicker look

What it does:
1. `trajkit record`: an MLP (one hidden layer of 32) on the parity of the first 10 principal components of
   the digits (quadratic hinge loss), trained by overdamped Langevin ``w ← w − η∇L + sqrt(2Tη/P)·ξ`` at five
   temperatures with replicas (all replicas of all temperatures trained together), log-spaced snapshots.
2. `overlaps` at every temperature (t_w-resolved MSD, self-overlap, α2, ...).
3. `relaxation` over the sweep: τe(T), the slope of ln τ vs ln T at high T (1e-3 ≤ T ≤ 0.1), the time–temperature
   superposition collapse against t/τe(T) and the power-law exponent of Q at the highest temperature
   (at the first waiting time, 100 steps, past the initial gradient descent).
4. `chi4` and `aging` at the lowest temperature.

Figures (PNG) and the numbers (``summary.json``) go to ``examples/out/glass_langevin/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

import _common

import trajkit

TEMPERATURES = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]

CONFIG = """\
[model]
kind = "mlp"
hidden = [32]
activation = "relu"
[data]
name = "pca_parity"
components = 10
[loss]
name = "quadratic_hinge"
[dynamics]
kind = "langevin"
lr = {lr}
[run]
steps = {steps}
seed = 0
replicas = {replicas}
[snapshots]
schedule = "log"
n = {snapshots}
[sweep]
"dynamics.temperature" = {temperatures}
"""



def record(out: Path, steps: int, replicas: int, snapshots: int, lr: float) -> Path:
    return _common.record(out, CONFIG.format(lr=lr, steps=steps, replicas=replicas, snapshots=snapshots,
                                 temperatures=TEMPERATURES))


save = _common.save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--snapshots", type=int, default=80)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--epsilon-factor", type=float, default=10.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "glass_langevin"))
    args = ap.parse_args()
    out = Path(args.out)
    ens_dir = record(out, args.steps, args.replicas, args.snapshots, args.lr)
    ens = trajkit.open_ensemble([ens_dir])
    groups = ens.groups("dynamics.temperature")
    common = {"epsilon_factor": args.epsilon_factor, "select": "hidden", "snap": "nearest"}
    # waiting times past the initial descent (the first ~100 steps), log-spaced up to a fifth of the run
    late = [int(x) for x in np.geomspace(100, args.steps / 5, 4)]
    summary: dict[str, object] = {"temperatures": TEMPERATURES, "replicas": args.replicas, "steps": args.steps}
    # an absolute cutoff, shared by all temperatures, from the weights' spread at the first waiting time
    ov_hot = trajkit.analyze("overlaps", groups[max(groups)], waiting_times=late, **common)
    epsilon = float(ov_hot.arrays["epsilon"].mean())
    summary["epsilon"] = epsilon
    for temp, group in groups.items():
        ov = trajkit.analyze("overlaps", group, waiting_times=late, epsilon=epsilon, select="hidden", snap="nearest")
        save(ov, out, f"overlaps_T{temp:g}")
    rel = trajkit.analyze("relaxation", ens_dir, waiting_times=late, epsilon=epsilon, select="hidden",
                          snap="nearest", t_range=[1e-3, 1e-1])
    save(rel, out, "relaxation")
    summary["relaxation"] = {k: rel.scalars[k] for k in ("tau_T_slope", "tau_T_slope_ci", "tau_T0",
                                                         "tts_exponent", "tts_exponent_ci", "tw_step")}
    summary["tau_e_by_T"] = dict(zip(map(float, rel.coords["temperature"]), map(float, rel.arrays["tau_T"]),
                                     strict=True))
    cold = groups[min(groups)]
    c4 = trajkit.analyze("chi4", cold, waiting_times=late, epsilon=epsilon, select="hidden", snap="nearest")
    save(c4, out, "chi4_coldest")
    summary["chi4_coldest"] = {k: c4.scalars[k] for k in ("chi4_peak", "chi4_peak_sem", "tau4", "tau4_sem")}
    ag = trajkit.analyze("aging", cold, waiting_times=late, observable="msd", select="hidden", snap="nearest")
    save(ag, out, "aging_coldest")
    summary["aging_coldest"] = {k: ag.scalars[k] for k in ("regime", "mu_collapse", "mu_collapse_ci", "mu_h",
                                                           "mu_h_ci", "mu_tau", "mu_tau_ci", "mu_collapse_raw")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
