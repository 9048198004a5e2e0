"""`overlaps` + `chi4` on a replica ensemble against a straightforward numpy implementation, in one run.

    .venv/bin/python benchmarks/glass_plugins.py            # 16 replicas, N = 1e5, T = 256 (1.5 GiB of archives)
    .venv/bin/python benchmarks/glass_plugins.py --quick    # 4 replicas, N = 2e4, T = 64, a smoke run

The ensemble is Brownian (trajkit.synthetic), written as real archives. Each side runs in its own child
process (so peak RSS is its own):

- **plugins**: ``trajkit.analyze("overlaps", ...)`` then ``trajkit.analyze("chi4", ...)`` with 8 log-spaced
  waiting times, an absolute ε and 200 bootstrap replicates — the core's streaming pair kernels underneath;
- **numpy**: what a research script does — load each replica's ``[T, N]`` parameters into memory as
  float64, and for every waiting time form ``W[tw:] − W[tw]`` and reduce it (Σ a·b, Σ a², Σ b², Σ Δ²,
  Σ Δ⁴, Σ Θ(ε−|Δ|)); the inter-replica overlaps from all replicas held in memory; the same χ4 and
  bootstrap (same random indices) and the same replica means / standard errors.

Reported: wall time of each (target: plugins ≥ 10× faster), the largest relative difference over every
array the two produce (target ≤ 1e-6), and each side's peak RSS. Page caches are dropped before each
side when running as root; otherwise the report says the reads are warm (the archives were just written).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPS = 1.0
N_WAITING_TIMES = 8
N_BOOT = 200
SEED = 0


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def schedule(t: int) -> np.ndarray:
    gaps = np.maximum(1, np.rint(np.geomspace(1, 1e4, t - 1))).astype(np.int64)
    return np.concatenate([[0], np.cumsum(gaps)])


def make_ensemble(root: Path, replicas: int, n: int, t: int) -> None:
    from trajkit import synthetic

    steps = schedule(t)
    diffusion = 2.0 / float(steps[t // 2])           # Q decays through 1/e near the middle of the run
    root.mkdir(parents=True)
    for r in range(replicas):
        w = synthetic.brownian(steps, n, diffusion, init_scale=1.0, seed=1000 + r)
        synthetic.write_archive(root / f"r{r:02d}.trajkit", steps, w)


def run_plugins(root: Path) -> dict[str, np.ndarray]:
    import trajkit

    ov = trajkit.analyze("overlaps", [root], n_waiting_times=N_WAITING_TIMES, epsilon=EPS)
    c4 = trajkit.analyze("chi4", [root], n_waiting_times=N_WAITING_TIMES, epsilon=EPS, n_boot=N_BOOT, seed=SEED)
    out = {k: ov.arrays[k] for k in ("overlap", "overlap_normalized", "msd", "self_overlap", "d4",
                                     "participation", "alpha2", "msd_sem", "self_overlap_sem", "replica_overlap")}
    out.update({k: c4.arrays[k] for k in ("chi4", "chi4_sem")})
    return out


def run_numpy(root: Path) -> dict[str, np.ndarray]:
    import trajkit
    from trajkit.analysis import times

    paths = sorted(root.glob("*.trajkit"))
    archives = [trajkit.open_archive(p) for p in paths]
    steps = archives[0].steps
    rows = times.log_spaced_rows(steps, N_WAITING_TIMES)
    r, k, t, n = len(archives), rows.size, steps.size, archives[0].n_params
    names = ("overlap", "overlap_normalized", "msd", "self_overlap", "d4", "participation", "alpha2")
    per = {name: np.full((r, k, t), np.nan) for name in names}
    all_w32 = []
    for i, arch in enumerate(archives):
        w32 = np.asarray(arch.params[:, :])
        all_w32.append(w32)
        w = w32.astype(np.float64)
        for j, row in enumerate(rows):
            a, b = w[row], w[row:]
            d = b - a
            dot = b @ a
            sq = np.sum(d**2, axis=1)
            quart = np.sum(d**4, axis=1)
            per["overlap"][i, j, row:] = dot / n
            per["overlap_normalized"][i, j, row:] = dot / np.sqrt(np.sum(a * a) * np.sum(b * b, axis=1))
            per["msd"][i, j, row:] = sq / n
            per["self_overlap"][i, j, row:] = np.sum(np.abs(d) < EPS, axis=1) / n
            per["d4"][i, j, row:] = quart / n
            with np.errstate(invalid="ignore", divide="ignore"):
                per["participation"][i, j, row:] = np.where(sq > 0, quart / sq**2, np.nan)
                per["alpha2"][i, j, row:] = np.where(sq > 0, n * quart / (3 * sq**2) - 1, np.nan)
    out = {}
    for name in names:
        out[name] = np.nanmean(per[name], axis=0)
    for name in ("msd", "self_overlap"):
        out[f"{name}_sem"] = np.nanstd(per[name], axis=0, ddof=1) / np.sqrt(r)
    gram = np.zeros((t, r, r))
    for ti in range(t):
        x = np.stack([w[ti].astype(np.float64) for w in all_w32])
        gram[ti] = x @ x.T
    norm = np.sqrt(np.einsum("tii->ti", gram))
    q = gram / (norm[:, :, None] * norm[:, None, :])
    iu = np.triu_indices(r, 1)
    out["replica_overlap"] = q[:, iu[0], iu[1]].mean(axis=1)
    qs = per["self_overlap"]
    out["chi4"] = n * np.var(qs, axis=0)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, r, size=(N_BOOT, r))
    boots = np.stack([n * np.var(qs[i], axis=0) for i in idx])
    out["chi4_sem"] = np.nanstd(boots, axis=0, ddof=1)
    return out


def child(side: str, root: Path, out: Path) -> None:
    import trajkit

    trajkit.list_analyses()              # plugin discovery and imports happen once, outside the timing
    t0 = time.perf_counter()
    arrays = run_plugins(root) if side == "plugins" else run_numpy(root)
    wall = time.perf_counter() - t0
    np.savez(out, **arrays)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mib": rss}))


def max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for k in a:
        x, y = a[k], b[k]
        both = np.isfinite(x) & np.isfinite(y)
        assert np.array_equal(np.isfinite(x), np.isfinite(y)), f"{k}: NaN patterns differ"
        scale = np.maximum(np.abs(y[both]), 1e-12 * max(1.0, float(np.max(np.abs(y[both]), initial=0))))
        out[k] = float(np.max(np.abs(x[both] - y[both]) / scale, initial=0.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 replicas, N = 2e4, T = 64")
    ap.add_argument("--replicas", type=int, default=None)
    ap.add_argument("--n-params", type=int, default=None)
    ap.add_argument("--snapshots", type=int, default=None)
    ap.add_argument("--dir", default=None, help="where to write the ensemble (default: a temporary directory)")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    r = args.replicas or (4 if args.quick else 16)
    n = args.n_params or (20_000 if args.quick else 100_000)
    t = args.snapshots or (64 if args.quick else 256)
    base = Path(tempfile.mkdtemp(prefix="glass-bench-", dir=args.dir))
    try:
        from threadpoolctl import threadpool_info

        print("threadpools:", [(p["internal_api"], p["num_threads"]) for p in threadpool_info()])
        t0 = time.perf_counter()
        make_ensemble(base / "ens", r, n, t)
        print(f"ensemble: {r} replicas x T={t} x N={n} float32 = {r * t * n * 4 / 2**30:.2f} GiB, "
              f"written in {time.perf_counter() - t0:.1f} s")
        report, arrays = {}, {}
        for side in ("plugins", "numpy"):
            cold = drop_caches()
            out = base / f"{side}.npz"
            res = subprocess.run([sys.executable, __file__, "--child", side, str(base / "ens"), str(out)],
                                 capture_output=True, text=True, check=False)
            if res.returncode:
                sys.stderr.write(res.stderr)
                raise SystemExit(f"{side} side failed")
            report[side] = json.loads(res.stdout.strip().splitlines()[-1])
            report[side]["reads"] = "cold" if cold else "warm (page cache; run as root to drop caches)"
            with np.load(out) as z:
                arrays[side] = {k: z[k] for k in z.files}
        diffs = max_rel_diff(arrays["plugins"], arrays["numpy"])
        speedup = report["numpy"]["wall_s"] / report["plugins"]["wall_s"]
        for side in ("plugins", "numpy"):
            s = report[side]
            print(f"{side:8s} {s['wall_s']:8.2f} s   peak RSS {s['peak_rss_mib']:8.0f} MiB   reads {s['reads']}")
        print(f"speed-up plugins vs numpy: {speedup:.1f}x (target >= 10x)")
        worst = max(diffs, key=diffs.get)
        print(f"largest relative difference: {diffs[worst]:.2e} ({worst}) (target <= 1e-6)")
        print(json.dumps({"replicas": r, "n_params": n, "snapshots": t, "speedup": speedup,
                          "max_rel_diff": diffs, **report}))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
