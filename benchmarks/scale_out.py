"""`overlaps` + `chi4` in-process against a `local:N` Dask cluster, on the ensemble of glass_plugins.py.

    .venv/bin/python benchmarks/scale_out.py                 # 16 replicas, N = 1e5, T = 256, local:2
    .venv/bin/python benchmarks/scale_out.py --replicas 4 --n-params 2000 --snapshots 32    # a smoke run

The ensemble is `benchmarks/glass_plugins.py`'s (Brownian replicas written as real archives), analysed with
the same parameters (8 log-spaced waiting times, absolute ε, 200 bootstrap replicates), once in this
process and once with ``scheduler=`` a ``LocalCluster`` of ``--workers`` processes (started, and warmed up
on a small ensemble so that numba's compiled loop is loaded on every worker, before the clock starts).

Reported, from one run:

- the **throughput ratio** in-process time / cluster time (target ≥ 0.8 on a 2-core machine with
  ``local:2``: the engine's overhead ≤ 25 %), and the cluster's start-up time separately;
- the **task count** and the bytes sent to / received from the workers (``result.provenance["scheduler"]``),
  and the bytes this process read (``rchar`` of ``/proc/self/io``: files and sockets) during each pass,
  against the ensemble's parameter bytes (target: no parameter data through the client);
- the largest relative difference between the two results (expected 0: the same numbers).

When ``benchmarks/scale_out_s3.py`` exists, its ``main(args)`` (archives on a loopback S3 server against
local disk) runs after this part with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import glass_plugins


def rchar() -> int:
    """Bytes this process has read so far (files, pipes and sockets), or -1 where /proc is missing."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def analyses(root: Path, scheduler: object) -> tuple[dict[str, np.ndarray], list[dict]]:
    """overlaps + chi4 as glass_plugins runs them; their arrays and (on a cluster) their task counts."""
    import trajkit

    ov = trajkit.analyze("overlaps", [root], n_waiting_times=glass_plugins.N_WAITING_TIMES, epsilon=glass_plugins.EPS,
                         scheduler=scheduler)
    c4 = trajkit.analyze("chi4", [root], n_waiting_times=glass_plugins.N_WAITING_TIMES, epsilon=glass_plugins.EPS,
                         n_boot=glass_plugins.N_BOOT, seed=glass_plugins.SEED, scheduler=scheduler)
    arrays = {f"overlaps.{k}": np.asarray(v) for k, v in ov.arrays.items()}
    arrays.update({f"chi4.{k}": np.asarray(v) for k, v in c4.arrays.items()})
    return arrays, [r.provenance.get("scheduler", {}) for r in (ov, c4)]


def timed_pass(root: Path, scheduler: object) -> dict:
    before, t0 = rchar(), time.perf_counter()
    arrays, info = analyses(root, scheduler)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "client_read_bytes": rchar() - before, "arrays": arrays,
            "tasks": sum(i.get("tasks", 0) for i in info),
            "bytes_to_workers": sum(i.get("bytes_to_workers", 0) for i in info),
            "bytes_from_workers": sum(i.get("bytes_from_workers", 0) for i in info)}


def max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k], float), np.asarray(b[k], float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.maximum(np.abs(x[ok]), 1e-300))))
    return worst


def run_s3_half(args: argparse.Namespace) -> None:
    try:
        import scale_out_s3
    except ImportError as e:
        print(f"S3 vs disk: skipped (benchmarks/scale_out_s3.py not importable: {e})")
        return
    report = scale_out_s3.main(["--replicas", str(args.replicas), "--n", str(args.n_params),
                                "--t", str(args.snapshots)])
    print(f"S3 vs disk: {json.dumps(report)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--n-params", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (local:N)")
    ap.add_argument("--dir", default=None, help="where to write the ensemble (default: a temporary directory)")
    args = ap.parse_args()
    from trajkit.scheduler import connect

    base = Path(tempfile.mkdtemp(prefix="scale-out-", dir=args.dir))
    try:
        r, n, t = args.replicas, args.n_params, args.snapshots
        glass_plugins.make_ensemble(base / "ens", r, n, t)
        glass_plugins.make_ensemble(base / "warm", 2, 1000, 16)
        param_bytes = r * n * t * 4
        print(f"ensemble: {r} replicas x T={t} x N={n} float32 = {param_bytes / 2**30:.2f} GiB")
        analyses(base / "warm", "in-process")
        local = timed_pass(base / "ens", "in-process")
        t0 = time.perf_counter()
        with connect(f"local:{args.workers}") as cluster:
            startup = time.perf_counter() - t0
            analyses(base / "warm", cluster.client)
            dist = timed_pass(base / "ens", cluster.client)
        ratio = local["wall_s"] / dist["wall_s"]
        diff = max_rel_diff(local["arrays"], dist["arrays"])
        for label, side in (("in-process", local), (f"local:{args.workers}", dist)):
            print(f"{label:12s} {side['wall_s']:8.2f} s   client read {side['client_read_bytes'] / 2**20:9.1f} MiB")
        print(f"cluster start-up {startup:.1f} s (not counted)")
        print(f"throughput ratio in-process/cluster: {ratio:.2f} (target >= 0.8)")
        print(f"tasks {dist['tasks']}; to workers {dist['bytes_to_workers'] / 2**10:.1f} KiB, from workers "
              f"{dist['bytes_from_workers'] / 2**10:.1f} KiB; parameters {param_bytes / 2**20:.1f} MiB "
              f"(target: no parameter data through the client)")
        print(f"largest relative difference cluster vs in-process: {diff:.2e} (expected 0)")
        print(json.dumps({"replicas": r, "n_params": n, "snapshots": t, "workers": args.workers,
                          "in_process_s": local["wall_s"], "cluster_s": dist["wall_s"], "startup_s": startup,
                          "throughput_ratio": ratio, "tasks": dist["tasks"],
                          "bytes_to_workers": dist["bytes_to_workers"],
                          "bytes_from_workers": dist["bytes_from_workers"],
                          "client_read_bytes_in_process": local["client_read_bytes"],
                          "client_read_bytes_cluster": dist["client_read_bytes"], "param_bytes": param_bytes,
                          "max_rel_diff": diff}))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    run_s3_half(args)


if __name__ == "__main__":
    main()
