"""Pair-kernel throughput, measured as ratios against baselines in the same run.

    .venv/bin/python benchmarks/pair_kernels.py            # T = 512, N = 1e6 float32 (a 2 GB archive)
    .venv/bin/python benchmarks/pair_kernels.py --quick    # T = 128, N = 2e5, for a smoke run

(a) 16 log-spaced waiting times × all later snapshots, all four sums (Σa·b, Σ(b−a)², Σ(b−a)⁴,
    Σ Θ(ε−|b−a|)) with :func:`trajkit.analysis.kernels.pair_sums`, against one plain read of the whole
    array through the same reader (target ≤ 2×; measured ``--repeats`` times, alternating read and
    kernel, each from a cold page cache, and reported as the median of the per-repeat ratios) and against
    a straightforward per-pair loop that reads both rows from the archive and computes the sums in float64
    numpy, as research scripts do (target ≥ 20× slower than the kernel; the loop runs on
    ``--naive-pairs`` pairs and is extrapolated to all of them). Also printed: whether the fused native
    loop is in use (``kernels.native_available()``, timed: it compiles once per machine) and the
    throughput in pair-elements (P·N) per second.
(b) All T² pairs of Σa·b and Σ(b−a)² via :func:`trajkit.analysis.kernels.gram` (blocked float64 GEMM):
    achieved GFLOP/s (counting 2·T²·N) against this machine's float64 GEMM peak measured here on
    in-memory 2048² matrices (target ≥ 50 %).
(c) Peak RSS of the process (target ≤ 1 GiB while the array is 2 GB).

Page caches are dropped before each timed read when running as root (``/proc/sys/vm/drop_caches``);
otherwise the report says the reads are warm. The threadpool configuration (threadpoolctl) is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import trajkit
from trajkit.analysis import kernels, times


def drop_caches() -> bool:
    """Drop the page cache (root only); True when it worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def write_archive(path: Path, T: int, N: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w = (0.05 * rng.standard_normal(N)).astype(np.float32)
    with trajkit.archive.create(path, n_params=N) as wr:
        row = np.full(wr.padded_size, np.nan, dtype=np.float32)
        for t in range(T):
            w += (1e-3 * rng.standard_normal(N)).astype(np.float32)
            row[:N] = w
            wr.write_row(round(1.02**t) + t, row)


def plain_read(arch, block_bytes: int) -> float:
    """One pass over the whole array in column blocks of ``block_bytes`` (a single buffer: the budget all
    spent on the read)."""
    block_cols = max(1, block_bytes // (4 * arch.n_snapshots))
    t0 = time.perf_counter()
    total = 0.0
    for _, _, blk in arch.params.iter_column_blocks(block_cols):
        total += float(blk[0, 0])
    return time.perf_counter() - t0


def naive_pair_loop(arch, pairs: np.ndarray, eps: float) -> float:
    """Per pair: read both rows from the archive, promote to float64, compute the four sums."""
    t0 = time.perf_counter()
    for a, b in pairs:
        x = arch.params[int(a), :].astype(np.float64)
        y = arch.params[int(b), :].astype(np.float64)
        d = y - x
        _ = (x @ y, (d * d).sum(), (d**4).sum(), np.count_nonzero(np.abs(d) < eps))
    return time.perf_counter() - t0


def gemm_peak(n: int = 2048, repeats: int = 3) -> float:
    rng = np.random.default_rng(1)
    A = rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    A @ B
    best = min(_timed(lambda: A @ B) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--N", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="T=128, N=2e5")
    ap.add_argument("--dir", default=None, help="where to write the archive (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the archive")
    ap.add_argument("--reuse", action="store_true", help="reuse DIR/bench.trajkit when its shape matches")
    ap.add_argument("--naive-pairs", type=int, default=24, help="pairs timed in the naive loop")
    ap.add_argument("--block-mb", type=int, default=256, help="kernel block budget (MiB)")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="alternated (plain read, kernel) repeats for (a)")
    args = ap.parse_args(argv)
    T, N = (128, 200_000) if args.quick else (args.T, args.N)
    try:
        from threadpoolctl import threadpool_info

        print("threadpools:", json.dumps([{k: p.get(k) for k in ("internal_api", "num_threads", "architecture")}
                                          for p in threadpool_info()]))
    except ImportError:
        print("threadpools: threadpoolctl not installed")
    root = Path(args.dir or tempfile.mkdtemp(prefix="trajkit-bench-"))
    path = root / "bench.trajkit"
    if args.reuse and path.exists() and trajkit.open_archive(path).params.shape == (T, N):
        print(f"reusing {path}")
    else:
        if path.exists():
            shutil.rmtree(path)
        t0 = time.perf_counter()
        write_archive(path, T, N)
        print(f"wrote T={T} N={N} ({T * N * 4 / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s")
    arch = trajkit.open_archive(path)
    block_bytes = args.block_mb * 2**20
    report: dict = {"T": T, "N": N, "array_gb": T * N * 4 / 1e9}

    t0 = time.perf_counter()
    report["native_loop"] = kernels.native_available()
    report["native_setup_s"] = time.perf_counter() - t0
    rows = times.log_spaced_rows(arch.steps, 16)
    wp = times.waiting_pairs(arch.steps, rows)
    eps = 1e-3
    cold = drop_caches()
    report["reads"] = "cold (page cache dropped)" if cold else "warm (page cache not dropped: not root)"
    t_read, t_kernel = [], []
    for _ in range(max(1, args.repeats)):       # alternate so that machine load hits both alike
        drop_caches()
        t_read.append(plain_read(arch, block_bytes))
        drop_caches()
        t0 = time.perf_counter()
        kernels.pair_sums(arch, wp.pairs, epsilon=eps, block_bytes=block_bytes, backend=args.backend,
                          device=args.device, progress=False)
        t_kernel.append(time.perf_counter() - t0)
    ratios = np.array(t_kernel) / np.array(t_read)
    report["plain_read_s"] = float(np.median(t_read))
    report["a_pairs"] = int(wp.pairs.shape[0])
    report["a_kernel_s"] = float(np.median(t_kernel))
    report["a_ratio_vs_read"] = float(np.median(ratios))
    report["a_ratios_each"] = " ".join(f"{r:.2f}" for r in ratios)
    report["a_pair_gelem_per_s"] = wp.pairs.shape[0] * N / report["a_kernel_s"] / 1e9
    sub = wp.pairs[np.linspace(0, wp.pairs.shape[0] - 1, min(args.naive_pairs, wp.pairs.shape[0])).astype(int)]
    drop_caches()
    t_naive = naive_pair_loop(arch, sub, eps)
    report["a_naive_pairs_timed"] = int(sub.shape[0])
    report["a_naive_extrapolated_s"] = t_naive / sub.shape[0] * wp.pairs.shape[0]
    report["a_speedup_vs_naive"] = report["a_naive_extrapolated_s"] / report["a_kernel_s"]

    report["gemm_peak_gflops"] = gemm_peak()
    drop_caches()
    t0 = time.perf_counter()
    kernels.gram(arch, block_bytes=block_bytes, backend=args.backend, device=args.device, progress=False)
    report["b_gram_s"] = time.perf_counter() - t0
    report["b_gflops"] = 2 * T * T * N / report["b_gram_s"] / 1e9
    report["b_fraction_of_peak"] = report["b_gflops"] / report["gemm_peak_gflops"]

    report["c_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for k, v in report.items():
        print(f"{k:>26}: {v:.3f}" if isinstance(v, float) else f"{k:>26}: {v}")
    print("targets: a_ratio_vs_read <= 2, a_speedup_vs_naive >= 20, b_fraction_of_peak >= 0.5, "
          "c_peak_rss_gib <= 1")
    if not args.keep:
        shutil.rmtree(root if args.dir is None else path, ignore_errors=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
