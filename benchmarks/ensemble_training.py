"""Recording overhead of ``trajkit record``'s batched path, and batched vs one replica at a time.

Recording overhead: 16 replicas of an MLP 64-64 on scikit-learn's digits, SGD (batch 64, lr 0.05) for
2,000 steps, torch on one thread, recorded by :func:`trajkit.run_experiment` into 16 archives with 52
log-spaced snapshots (``snapshots.n = 60``: params rows, full-dataset metrics, per-step trace) against
the same sweep with one snapshot (the final step). Each measurement is one ``run_experiment`` call in a
fresh worker process (timed after a warm-up plan that does the imports; its peak RSS is the worker's),
so the two variants
— and, with ``--baseline-rev``, the same pair run on an older trajkit extracted from git (``git archive``)
— alternate in one session: ABCD, DCBA, ... over ``--repeats`` rounds. Printed: median wall time with
min..max per variant, peak RSS, and the overhead ``52 snapshots / 1 snapshot − 1`` (median of the
per-round ratios, min..max) in wall time — the figure — and in CPU time of the training thread (what
stays on training's path when the writer thread has a core of its own) and of the whole process (all
the work done: on a machine loaded by other work, where the writer finds no idle core, the wall-time
figure moves towards this one).

Speed-up (``--speedup``): the same 16 replicas trained without writing, as one batched computation and as
16 ordinary modules updated one after the other, alternated in this process.

    .venv/bin/python benchmarks/ensemble_training.py                         # overhead, 3 rounds
    .venv/bin/python benchmarks/ensemble_training.py --baseline-rev 8644ce1  # + the old runner, same run
    .venv/bin/python benchmarks/ensemble_training.py --speedup               # + batched vs sequential
    .venv/bin/python benchmarks/ensemble_training.py --quick                 # 200 steps, one round
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def overrides(steps: int, replicas: int, snapshots: int) -> list[str]:
    """The benchmark sweep; ``snapshots`` 52 (log-spaced, ``snapshots.n = 60``) or 1 (the final step)."""
    base = ["model.hidden=[64, 64]", 'data.name="digits"', 'dynamics.kind="sgd"', "dynamics.lr=0.05",
            "dynamics.batch_size=64", f"run.steps={steps}", f"run.replicas={replicas}"]
    if snapshots == 1:
        return [*base, 'snapshots.schedule="explicit"', f"snapshots.steps=[{steps}]"]
    return [*base, "snapshots.n=60"]


def worker(code: str, steps: int, replicas: int, snapshots: int, out: str) -> None:
    """One timed ``run_experiment`` with the trajkit found under ``code``; prints a JSON line."""
    sys.path[:0] = [code, os.path.join(code, "plugins")]
    import torch

    torch.set_num_threads(1)
    import tqdm.auto  # noqa: F401 - imported by the run; its import is not what is measured

    from trajkit.experiments import plan_experiment, run_experiment

    plan_experiment(None, out, overrides(steps, replicas, snapshots))   # imports sklearn & co. untimed
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    summary = run_experiment(None, out, overrides(steps, replicas, snapshots), quiet=True, threads=1)
    seconds, thread_cpu, process_cpu = (time.perf_counter() - t0, time.thread_time() - c0,
                                        time.process_time() - p0)
    assert all(r["status"] == "done" for r in summary["runs"]), summary["runs"]
    print(json.dumps({"seconds": seconds, "thread_cpu": thread_cpu, "process_cpu": process_cpu,
                      "snapshots": summary["runs"][0]["snapshots"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def spawn(code: str, steps: int, replicas: int, snapshots: int, tmp: Path, tag: str) -> dict:
    out = tmp / tag
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{code}{os.pathsep}{code}/plugins"}
    res = subprocess.run([sys.executable, __file__, "--worker", code, str(steps), str(replicas), str(snapshots),
                          str(out)], capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise SystemExit(f"worker {tag} failed:\n{res.stderr[-2000:]}")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> str:
    """``trajkit/`` and ``plugins/`` of git revision ``rev`` under ``into`` (the old code, runnable)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "trajkit", "plugins", "schemas"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def overhead(args: argparse.Namespace, steps: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        codes = {"new": str(ROOT)}
        if args.baseline_rev:
            (tmp / "old").mkdir()
            codes[f"old ({args.baseline_rev})"] = extract(args.baseline_rev, tmp / "old")
        variants = [(name, n) for name in codes for n in (52, 1)]
        runs: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
        spawn(codes["new"], min(steps, 100), args.replicas, 1, tmp, "warm-up")   # page cache, pyc files
        for k in range(repeats):
            for name, n in (variants if k % 2 == 0 else variants[::-1]):
                runs[(name, n)].append(spawn(codes[name], steps, args.replicas, n, tmp, f"{k}-{n}"))
    print(f"recording overhead: {args.replicas} replicas, MLP 64-64 on digits, SGD B=64, {steps} steps, torch on "
          f"one thread; {repeats} round(s), alternated; time of run_experiment in a fresh process")
    for (name, _), rs in runs.items():
        ts = [r["seconds"] for r in rs]
        print(f"  {name:<18} {rs[0]['snapshots']:>3} snapshot(s)  median {statistics.median(ts):6.2f} s  "
              f"({min(ts):.2f}..{max(ts):.2f})  peak RSS {max(r['peak_rss_mib'] for r in rs):6.0f} MiB")
    for key, what in (("seconds", "wall time"), ("thread_cpu", "CPU time of the training thread"),
                      ("process_cpu", "CPU time of the whole process")):
        print(f"  overhead of the snapshots in {what}:")
        for name in codes:
            ratios = [a[key] / b[key] - 1 for a, b in zip(runs[(name, 52)], runs[(name, 1)], strict=True)]
            print(f"    {name:<18} {100 * statistics.median(ratios):+6.1f} %  ({100 * min(ratios):+.1f}.."
                  f"{100 * max(ratios):+.1f} % over rounds)")


def speedup(args: argparse.Namespace, steps: int, repeats: int) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    import torch

    torch.set_num_threads(1)
    from trajkit.experiments.dynamics import Dynamics
    from trajkit.experiments.models import build_model
    from trajkit.experiments.replicas import BatchedReplicas, SequentialReplicas
    from trajkit.experiments.runner import _train_data, initial_params, plan_experiment
    from trajkit.experiments.training import NullSink, train

    R = args.replicas
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_experiment(None, Path(tmp) / "unused", overrides(steps, R, 52)).points[0]
    dyn = Dynamics.from_config(plan.config["dynamics"], plan.dataset.n_train)
    data = _train_data(plan.dataset, "cross_entropy", "cpu")
    init = torch.stack([initial_params(plan.spec, s) for s in range(R)])
    with torch.device("meta"):
        module = build_model(plan.spec)

    def run(variant: str) -> float:
        engine = (SequentialReplicas(plan.spec, plan.layout, init, "cpu") if variant == "sequential"
                  else BatchedReplicas(module, plan.layout, init, "cpu"))
        t0 = time.perf_counter()
        train(engine, dyn, data, list(range(R)), plan.snapshot_steps, steps, [NullSink() for _ in range(R)])
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    run("batched")
    for k in range(repeats):
        for v in (list(times) if k % 2 == 0 else list(times)[::-1]):
            times[v].append(run(v))
    med = {v: statistics.median(ts) for v, ts in times.items()}
    print(f"speed-up (no writing, {plan.snapshot_steps.size} metric evaluations): sequential "
          f"{med['sequential']:.2f} s, batched {med['batched']:.2f} s: {med['sequential'] / med['batched']:.2f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        code, steps, replicas, snapshots, out = sys.argv[2:7]
        worker(code, int(steps), int(replicas), int(snapshots), out)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 steps, one round (a smoke run)")
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--baseline-rev", default=None, help="also run an older trajkit (a git revision), alternated")
    ap.add_argument("--speedup", action="store_true", help="also time batched vs sequential training")
    args = ap.parse_args()
    steps = args.steps or (200 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    overhead(args, steps, repeats)
    if args.speedup:
        speedup(args, steps, repeats)


if __name__ == "__main__":
    main()
