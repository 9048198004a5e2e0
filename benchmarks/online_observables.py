"""Online two-time observables vs full snapshots + ``overlaps``: bytes written, wall time, training slowdown.

An MLP of about ``--params`` parameters (default 10⁷: 256 → h → h → 10 with h chosen to fit) is trained
with SGD on synthetic data for ``--steps`` steps, three times from the same seed:

- **baseline**: no recording;
- **online**: ``trajkit.Recorder`` with two snapshots (first and last step) and
  ``online=TwoTime(waiting_times, lags)`` — ``--waiting-times`` distinct log-spaced t_w in
  [steps/200, steps/10] (default 20) and ``--lags`` distinct log-spaced lags (default 60), ε = std(w(t_w))/10;
- **offline**: ``trajkit.Recorder`` with a snapshot at every step the online grid measures (what the
  same curves need from full snapshots), then ``trajkit.analyze("overlaps", ...)`` over the same waiting
  times. Its archive holds a full row at every measured step (635 rows at the defaults: 25 GB for 10⁷
  float32 parameters), so ``--offline auto`` (the default) trains it only when it writes at most 8 GiB and
  otherwise reports the bytes ``trajkit.estimate_size`` says it would write (``--offline run`` forces it).
  The wall time and the correctness check of the offline path are then measured at a size that fits, e.g.
  ``--params 1000000``.

Reported (JSON on stdout, and to ``--out``): bytes on disk of each archive, training wall time and the
slowdown of each recorded run over the baseline, the analysis wall time of each, and the largest
relative difference between the online and the offline curves (a correctness check: ≲ 1e-12 expected).
The three runs are timed once each, one after the other: on a shared machine repeat with ``--repeats``
and read the spread.

    python benchmarks/online_observables.py                                  # 10⁷ parameters, 20 × 60
    python benchmarks/online_observables.py --params 1000000                 # 10⁶: the offline twin runs too
    python benchmarks/online_observables.py --params 20000 --steps 200 --waiting-times 4 --lags 8   # tiny
    python benchmarks/online_observables.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import trajkit
from trajkit.online import TwoTime, log_lags

D_IN, D_OUT, BATCH = 256, 10, 128


def hidden_width(n_params: int) -> int:
    """h with ``(D_IN + 1)·h + (h + 1)·h + (h + 1)·D_OUT ≈ n_params``."""
    a, b, c = 1.0, D_IN + 2 + D_OUT, D_OUT - n_params
    return max(1, round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))


def make_model(h: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D_IN, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                               torch.nn.Linear(h, D_OUT)).to(device)


def train(model: torch.nn.Module, steps: int, device: str, rec: trajkit.Recorder | None) -> float:
    """Seconds to train ``steps`` SGD steps (recording included, ``close()`` too)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, D_IN, generator=g).to(device)
    y = torch.randint(0, D_OUT, (BATCH,), generator=g).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for k in range(steps + 1):
        if k:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        if rec is not None:
            rec.step(k)
    if rec is not None:
        rec.close()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def curves_difference(online: trajkit.analysis.Result, offline: trajkit.analysis.Result) -> float:
    """Largest relative difference of msd / overlap / self_overlap on the cells both measured."""
    cols = np.searchsorted(offline.coords["step"], online.coords["step"])
    worst = 0.0
    for name in ("msd", "overlap", "self_overlap"):
        a, b = online.arrays[name], offline.arrays[name][:, cols]
        m = np.isfinite(a) & np.isfinite(b) & (b != 0)
        if m.any():
            worst = max(worst, float(np.max(np.abs(a[m] - b[m]) / np.abs(b[m]))))
    return worst


def run(args: argparse.Namespace, work: Path) -> dict:
    h = hidden_width(args.params)
    n = sum(p.numel() for p in make_model(h, "cpu").parameters())
    tws, lags = grid_axes(args.steps, args.waiting_times, args.lags)
    spec = TwoTime(waiting_times=tws, lags=lags)
    grid = sorted(s for s in spec.steps() if s <= args.steps)
    offline_bytes = trajkit.estimate_size(make_model(h, "cpu"), trajkit.schedules.explicit(grid), args.steps).total
    offline = args.offline if args.offline != "auto" else ("run" if offline_bytes <= 8 << 30 else "estimate")
    out: dict = {"n_params": n, "hidden": h, "steps": args.steps, "waiting_times": len(tws), "lags": len(lags),
                 "measured_steps": len(grid), "device": args.device, "threads": torch.get_num_threads(),
                 "offline": offline, "offline_bytes_estimated": offline_bytes, "repeats": []}
    for _ in range(args.repeats):
        for name in ("online", "offline"):
            shutil.rmtree(work / f"{name}.trajkit", ignore_errors=True)
        base = train(make_model(h, args.device), args.steps, args.device, None)
        model = make_model(h, args.device)
        rec = trajkit.Recorder(work / "online.trajkit", model, online=spec,
                               schedule=trajkit.schedules.explicit([0, args.steps]))
        t_online = train(model, args.steps, args.device, rec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t0 = time.perf_counter()
            res_on = trajkit.analyze("overlaps", work / "online.trajkit", waiting_times=tws)
            a_online = time.perf_counter() - t0
        rep = {"baseline_train_s": base,
               "online": {"bytes": disk_bytes(work / "online.trajkit"), "train_s": t_online,
                          "slowdown": t_online / base - 1, "analysis_s": a_online}}
        if offline == "run":
            model = make_model(h, args.device)
            rec = trajkit.Recorder(work / "offline.trajkit", model, schedule=trajkit.schedules.explicit(grid))
            t_offline = train(model, args.steps, args.device, rec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                t0 = time.perf_counter()
                res_off = trajkit.analyze("overlaps", work / "offline.trajkit", waiting_times=tws)
                a_offline = time.perf_counter() - t0
            rep["offline"] = {"bytes": disk_bytes(work / "offline.trajkit"), "train_s": t_offline,
                              "slowdown": t_offline / base - 1, "analysis_s": a_offline}
            rep["max_rel_difference"] = curves_difference(res_on, res_off)
            shutil.rmtree(work / "offline.trajkit", ignore_errors=True)
        out["repeats"].append(rep)
    return out


def grid_axes(steps: int, n_tw: int, n_lags: int) -> tuple[list[int], list[int]]:
    """``n_tw`` distinct log-spaced waiting times in [steps/200, steps/10] and ``n_lags`` distinct log-spaced
    lags up to ``steps − max t_w`` (fewer only where the integers run out)."""
    lo, hi = max(1, steps // 200), max(1, steps // 10)
    tws = sorted({int(v) for v in np.rint(np.geomspace(lo, hi, n_tw))})
    k = n_tw
    while len(tws) < min(n_tw, hi - lo + 1):
        k += 1
        tws = sorted({int(v) for v in np.rint(np.geomspace(lo, hi, k))})
    span, k = steps - max(tws), n_lags
    lags = log_lags(span, k)
    while len(lags) < min(n_lags, span) and k < 10 * n_lags:
        k += 1
        lags = log_lags(span, k)
    return tws[: n_tw] if len(tws) <= n_tw else [tws[round(i)] for i in np.linspace(0, len(tws) - 1, n_tw)], lags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=int, default=10**7, help="approximate model size (default 1e7)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--waiting-times", type=int, default=20, help="log-spaced waiting times (default 20)")
    p.add_argument("--lags", type=int, default=60, help="log-spaced lags per waiting time (default 60)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--offline", choices=["auto", "run", "estimate"], default="auto",
                   help="train and analyse the offline twin (run), or only count the bytes it would write "
                        "(estimate, trajkit.estimate_size); auto: run it when it writes at most 8 GiB")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--dir", default=None, help="where the archives go (default: a temporary directory)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="trajkit-online-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, work)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
