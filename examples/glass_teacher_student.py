"""Worked example 2: aging of the weights in under- vs over-parametrised teacher–student SGD.

    .venv/bin/python examples/glass_teacher_student.py                 # records, analyses, writes figures
    .venv/bin/python examples/glass_teacher_student.py --steps 3000    # a quicker look

An MLP student learns labels from a random teacher MLP (P = 500 Gaussian inputs in 20 dimensions) by
minibatch SGD, with a narrow student (hidden width 2: fewer parameters than examples, it cannot
interpolate) and a wide one (hidden width 128: many more parameters than examples), replicas of each.
For each, the `aging` analysis measures μ from the mean-square displacement Δ(tw, tw+t) at several waiting
times (collapse in t/tw^μ, the h-form and τ(tw) ∝ tw^μ, with bootstrap intervals over replicas) and the
`loss` analysis the power-law approach of the training loss. Figures (PNG) and ``summary.json`` go to
``examples/out/glass_teacher_student/``.
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

WIDTHS = [2, 128]

CONFIG = """\
[model]
kind = "mlp"
hidden = [32]
activation = "relu"
[data]
name = "teacher"
n_train = 500
n_test = 500
dim = 20
teacher_hidden = 16
[loss]
name = "cross_entropy"
[dynamics]
kind = "sgd"
lr = {lr}
batch_size = 32
[run]
steps = {steps}
seed = 0
replicas = {replicas}
[snapshots]
schedule = "log"
n = {snapshots}
[sweep]
"model.hidden" = {hidden}
"""



def record(out: Path, steps: int, replicas: int, snapshots: int, lr: float) -> Path:
    return _common.record(out, CONFIG.format(lr=lr, steps=steps, replicas=replicas, snapshots=snapshots,
                                 hidden=[[w] for w in WIDTHS]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--snapshots", type=int, default=80)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "glass_teacher_student"))
    args = ap.parse_args()
    out = Path(args.out)
    ens_dir = record(out, args.steps, args.replicas, args.snapshots, args.lr)
    ens = trajkit.open_ensemble([ens_dir], check=False)
    # waiting times after the first fast descent, log-spaced up to a fifth of the run
    late = [int(x) for x in np.geomspace(100, args.steps / 5, 5)]
    summary: dict[str, object] = {"widths": WIDTHS, "replicas": args.replicas, "steps": args.steps,
                                  "waiting_times": late}
    for n_params, group in ens.groups("model.n_params").items():
        width = group.archives[0].metadata["config"]["model"]["hidden"][0]
        p = group.archives[0].metadata["dataset"]["n_train"]
        ag = trajkit.analyze("aging", group, waiting_times=late, snap="nearest", observable="msd")
        ag.plot().savefig(out / f"aging_width{width}.png", dpi=110)
        ag.save(out / f"aging_width{width}")
        lo = trajkit.analyze("loss", group, thresholds=[0.3, 0.1, 0.03])
        lo.plot().savefig(out / f"loss_width{width}.png", dpi=110)
        summary[f"width{width}"] = {
            "n_params": n_params, "n_over_p": n_params / p,
            **{k: ag.scalars[k] for k in ("regime", "mu_collapse", "mu_collapse_ci", "mu_h", "mu_h_ci", "mu_tau",
                                          "mu_tau_ci", "mu_collapse_raw")},
            **{k: lo.scalars.get(k) for k in ("loss_inf", "loss_inf_ci", "beta", "beta_ci")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
