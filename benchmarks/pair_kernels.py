"""Pair-kernel throughput, measured as ratios against baselines in the same run.

    .venv/bin/python benchmarks/pair_kernels.py            # T = 256, N = 1e6 float32 (a 0.95 GiB archive)
    .venv/bin/python benchmarks/pair_kernels.py --quick    # T = 64, N = 2e5, for a smoke run

(a) 16 log-spaced waiting times × all later snapshots, all four sums (Σa·b, Σ(b−a)², Σ(b−a)⁴,
    Σ Θ(ε−|b−a|)) with :func:`trajkit.analysis.kernels.pair_sums` (the numba loop), against one plain read
    of the whole array through the same reader (target ≤ 1.5×), against the previous C loop (compiled here
    with ``cc -march=native`` from the copy below, when a C compiler exists; run through the same blocks and
    read-ahead, so only the inner loop differs; the numba loop must be at least as fast), and against a
    straightforward per-pair loop that reads both rows from the archive and computes the sums in float64
    numpy, as research scripts do (target ≥ 20× slower than the kernel; the loop runs on ``--naive-pairs``
    pairs and is extrapolated to all of them). Plain read, numba kernel and C kernel are measured
    ``--repeats`` times, alternating, each from a cold page cache when root; medians of the per-repeat
    ratios. The numba kernel runs with **no C compiler on PATH** (PATH is emptied after the C loop is built;
    checked), and the first-use setup (numba import + compile or cache load) is timed. Also printed: the
    throughput in pair-elements (P·N) per second.
(a0) The inner loop alone (no reads): numba against the old C loop on one in-memory block of the same
    pairs, alternated; the cleanest view of the compiled code's speed (target ≥ 1×).
(a') ``trajkit.analyze("overlaps", archive, 16 waiting times)`` as a whole (the analysis, not only the
    kernel) against the same plain read (target ≤ 1.5×), and the column selection it uses (``all``): its
    type and how long ``archive.select`` takes.
(b) All T² pairs of Σa·b and Σ(b−a)² via :func:`trajkit.analysis.kernels.gram` (blocked float64 GEMM):
    achieved GFLOP/s (counting 2·T²·N) against this machine's float64 GEMM peak measured here on
    in-memory 2048² matrices (target ≥ 50 %).
(c) Peak RSS of the process (target ≤ 1 GiB while the array is 0.95 GiB).

Page caches are dropped before each timed read when running as root (``/proc/sys/vm/drop_caches``);
otherwise the report says the reads are warm. The threadpool configuration (threadpoolctl) is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
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

import trajkit
from trajkit.analysis import kernels, times

# -- the previous C loop (trajkit <= 0.1 compiled it at first use with cc; kept here only for the A/B) --------

_OLD_SRC = r"""
#include <stdint.h>
#include <math.h>
#define TK_BODY(j) { double x = a##j[i]; double d = y - x, d2 = d * d;                               \
    dt##j += x * y; s##j += d2; q##j += d2 * d2; k##j += (fabs(d) < e##j) ? 1.0 : 0.0; }
#define TK_STORE(j) { double *o = acc + 4 * (p + j); o[0] += dt##j; o[1] += s##j; o[2] += q##j; o[3] += k##j; }
void tk_pair_sums(const float *X, int64_t ldx, int64_t R, int64_t P, const int64_t *la,
                  const int64_t *lb, const double *eps, int64_t c0, int64_t c1, int64_t tile,
                  double *work, double *acc, double *nrm) {
    for (int64_t t0 = c0; t0 < c1; t0 += tile) {
        const int64_t w = (t0 + tile < c1 ? t0 + tile : c1) - t0;
        for (int64_t r = 0; r < R; r++) {
            const float *x = X + r * ldx + t0;
            double *y = work + r * tile, s = 0.0;
            #pragma omp simd reduction(+:s)
            for (int64_t i = 0; i < w; i++) { double v = (double)x[i]; y[i] = v; s += v * v; }
            nrm[r] += s;
        }
        int64_t p = 0;
        while (p < P) {
            const double *b = work + lb[p] * tile;
            if (p + 4 <= P && lb[p + 3] == lb[p]) {
                const double *a0 = work + la[p] * tile, *a1 = work + la[p + 1] * tile;
                const double *a2 = work + la[p + 2] * tile, *a3 = work + la[p + 3] * tile;
                const double e0 = eps[p], e1 = eps[p + 1], e2 = eps[p + 2], e3 = eps[p + 3];
                double dt0 = 0, s0 = 0, q0 = 0, k0 = 0, dt1 = 0, s1 = 0, q1 = 0, k1 = 0;
                double dt2 = 0, s2 = 0, q2 = 0, k2 = 0, dt3 = 0, s3 = 0, q3 = 0, k3 = 0;
                #pragma omp simd reduction(+:dt0, s0, q0, k0, dt1, s1, q1, k1, dt2, s2, q2, k2, dt3, s3, q3, k3)
                for (int64_t i = 0; i < w; i++) { const double y = b[i]; TK_BODY(0) TK_BODY(1) TK_BODY(2) TK_BODY(3) }
                TK_STORE(0) TK_STORE(1) TK_STORE(2) TK_STORE(3)
                p += 4;
            } else {
                const double *a0 = work + la[p] * tile, e0 = eps[p];
                double dt0 = 0, s0 = 0, q0 = 0, k0 = 0;
                #pragma omp simd reduction(+:dt0, s0, q0, k0)
                for (int64_t i = 0; i < w; i++) { const double y = b[i]; TK_BODY(0) }
                TK_STORE(0)
                p += 1;
            }
        }
    }
}
"""


def build_old_c_loop(workdir: Path):
    """The previous loop compiled with the flags trajkit used (first that works), or None without cc."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = workdir / "old_pair_kernels.c"
    src.write_text(_OLD_SRC)
    for flags in (("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp-simd"),
                  ("-O3", "-march=native", "-fopenmp-simd"), ("-O3",)):
        so = workdir / f"old-{hashlib.sha256(' '.join(flags).encode()).hexdigest()[:8]}.so"
        try:
            subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", str(so), str(src)], check=True,
                           capture_output=True, timeout=120)
            lib = ctypes.CDLL(str(so))
        except (OSError, subprocess.SubprocessError):
            continue
        p, i = ctypes.c_void_p, ctypes.c_int64
        lib.tk_pair_sums.argtypes = [p, i, i, i, p, p, p, i, i, i, p, p, p]
        lib.tk_pair_sums.restype = None
        return lib
    return None


class _OldLoop:
    """Stands in for the numba dispatcher inside ``kernels._block_numpy`` (same arguments), calling C."""

    def __init__(self, lib):
        self.lib = lib

    def __call__(self, X, la, lb, eps, c0, c1, tile, work, acc, nrm):
        self.lib.tk_pair_sums(X.ctypes.data, X.strides[0] // 4, X.shape[0], la.size, la.ctypes.data,
                              lb.ctypes.data, eps.ctypes.data, c0, c1, tile, work.ctypes.data, acc.ctypes.data,
                              nrm.ctypes.data)


def strip_compilers_from_path(root: Path) -> None:
    """PATH becomes one empty directory (no cc, gcc, clang), as on a machine without a C compiler."""
    empty = root / "empty-path"
    empty.mkdir(exist_ok=True)
    os.environ["PATH"] = str(empty)
    os.environ.pop("CC", None)
    assert all(shutil.which(c) is None for c in ("cc", "gcc", "clang")), "a C compiler is still on PATH"


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


def time_pair_sums(arch, pairs, eps, block_bytes, args, loop=None) -> float:
    """Seconds of one :func:`kernels.pair_sums` call; with ``loop`` the CPU inner loop is replaced by it."""
    saved = kernels._compiled
    if loop is not None:
        kernels._compiled = lambda: loop
    try:
        t0 = time.perf_counter()
        kernels.pair_sums(arch, pairs, epsilon=eps, block_bytes=block_bytes, backend=args.backend,
                          device=args.device, progress=False)
        return time.perf_counter() - t0
    finally:
        kernels._compiled = saved


def inner_loop_ab(pairs: np.ndarray, n_rows: int, old, repeats: int, cols: int = 65_536) -> dict:
    """The CPU inner loop alone, numba against the old C loop, on one in-memory float32 block
    ``[n_rows, cols]`` (no reads: compute only), alternated ``repeats`` times; median time ratio C/numba."""
    X = np.random.default_rng(2).standard_normal((n_rows, cols)).astype(np.float32)
    plan = kernels._pair_plan(pairs)
    want = set(kernels.SUMS) | {"norm_a", "norm_b"}
    eps = np.full(pairs.shape[0], 0.5)
    X = X[:plan.rows.size]
    loops = {"numba": kernels._compiled(), "c": _OldLoop(old)}
    saved = kernels._compiled
    times_: dict[str, list[float]] = {k: [] for k in loops}
    try:
        for i in range(repeats + 1):                  # the first round warms up and is not counted
            for name, loop in loops.items():
                kernels._compiled = lambda loop=loop: loop
                t0 = time.perf_counter()
                kernels._block_numpy(X, plan, eps, want, threads=min(2, os.cpu_count() or 1))
                if i:
                    times_[name].append(time.perf_counter() - t0)
    finally:
        kernels._compiled = saved
    ratio = np.array(times_["c"]) / np.array(times_["numba"])
    return {"a0_loop_numba_s": float(np.median(times_["numba"])), "a0_loop_old_c_s": float(np.median(times_["c"])),
            "a0_loop_numba_speed_vs_old_c": float(np.median(ratio)),
            "a0_loop_each": " ".join(f"{r:.2f}" for r in ratio),
            "a0_loop_gelem_per_s": pairs.shape[0] * cols / float(np.median(times_["numba"])) / 1e9}


def analysis_params(name: str, n: int) -> dict:
    """``n`` log-spaced waiting times, under whichever parameter name this trajkit gives the count."""
    info = next(a for a in trajkit.analysis.list_analyses() if a["name"] == name)
    names = {p["name"] for p in info["params"]}
    return {"n_waiting_times": n} if "n_waiting_times" in names else {"waiting_times": n}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--N", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="T=64, N=2e5")
    ap.add_argument("--dir", default=None, help="where to write the archive (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the archive")
    ap.add_argument("--reuse", action="store_true", help="reuse DIR/bench.trajkit when its shape matches")
    ap.add_argument("--naive-pairs", type=int, default=24, help="pairs timed in the naive loop")
    ap.add_argument("--block-mb", type=int, default=256, help="kernel block budget (MiB)")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="alternated (read, numba, C, analyze) repeats")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: naive,gram,analyze")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    T, N = (64, 200_000) if args.quick else (args.T, args.N)
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
        print(f"wrote T={T} N={N} ({T * N * 4 / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
    arch = trajkit.open_archive(path)
    block_bytes = args.block_mb * 2**20
    report: dict = {"T": T, "N": N, "array_gib": T * N * 4 / 2**30}

    work = Path(tempfile.mkdtemp(prefix="trajkit-oldc-"))
    old = build_old_c_loop(work)
    report["old_c_loop"] = "built with cc" if old is not None else "no C compiler: A/B against it skipped"
    strip_compilers_from_path(work)
    report["c_compiler_on_path"] = False
    t0 = time.perf_counter()
    report["cpu_loop"] = kernels.compiled_loop()
    report["numba_setup_s"] = time.perf_counter() - t0
    rows = times.log_spaced_rows(arch.steps, 16)
    wp = times.waiting_pairs(arch.steps, rows)
    eps = 1e-3
    cold = drop_caches()
    report["reads"] = "cold (page cache dropped)" if cold else "warm (page cache not dropped: not root)"
    t0 = time.perf_counter()
    sel = arch.select("all")
    report["select_all_s"] = time.perf_counter() - t0
    report["select_all_type"] = type(sel).__name__
    params = analysis_params("overlaps", 16)
    if old is not None:
        report.update(inner_loop_ab(wp.pairs, T, old, max(3, args.repeats)))
    t_read, t_new, t_old, t_an = [], [], [], []
    for _ in range(max(1, args.repeats)):       # alternate so that machine load hits all alike
        drop_caches()
        t_read.append(plain_read(arch, block_bytes))
        drop_caches()
        t_new.append(time_pair_sums(arch, wp.pairs, eps, block_bytes, args))
        if old is not None:
            drop_caches()
            t_old.append(time_pair_sums(arch, wp.pairs, eps, block_bytes, args, loop=_OldLoop(old)))
        if "analyze" not in skip:
            drop_caches()
            t0 = time.perf_counter()
            trajkit.analyze("overlaps", str(path), device=args.device, **params)
            t_an.append(time.perf_counter() - t0)
    t_read_a, t_new_a = np.array(t_read), np.array(t_new)
    report["plain_read_s"] = float(np.median(t_read_a))
    report["a_pairs"] = int(wp.pairs.shape[0])
    report["a_kernel_s"] = float(np.median(t_new_a))
    report["a_ratio_vs_read"] = float(np.median(t_new_a / t_read_a))
    report["a_ratios_each"] = " ".join(f"{r:.2f}" for r in t_new_a / t_read_a)
    report["a_pair_gelem_per_s"] = wp.pairs.shape[0] * N / report["a_kernel_s"] / 1e9
    if t_old:
        t_old_a = np.array(t_old)
        report["a_old_c_kernel_s"] = float(np.median(t_old_a))
        report["a_old_c_ratio_vs_read"] = float(np.median(t_old_a / t_read_a))
        report["a_numba_speed_vs_old_c"] = float(np.median(t_old_a / t_new_a))
        report["a_numba_vs_old_c_each"] = " ".join(f"{r:.2f}" for r in t_old_a / t_new_a)
    if t_an:
        t_an_a = np.array(t_an)
        report["a2_analyze_overlaps_s"] = float(np.median(t_an_a))
        report["a2_analyze_ratio_vs_read"] = float(np.median(t_an_a / t_read_a))
        report["a2_analyze_ratios_each"] = " ".join(f"{r:.2f}" for r in t_an_a / t_read_a)
    if "naive" not in skip:
        sub = wp.pairs[np.linspace(0, wp.pairs.shape[0] - 1, min(args.naive_pairs, wp.pairs.shape[0])).astype(int)]
        drop_caches()
        t_naive = naive_pair_loop(arch, sub, eps)
        report["a_naive_pairs_timed"] = int(sub.shape[0])
        report["a_naive_extrapolated_s"] = t_naive / sub.shape[0] * wp.pairs.shape[0]
        report["a_speedup_vs_naive"] = report["a_naive_extrapolated_s"] / report["a_kernel_s"]

    if "gram" not in skip:
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
    print("targets: a_ratio_vs_read <= 1.5, a0_loop_numba_speed_vs_old_c >= 1, a_numba_speed_vs_old_c >= 1, "
          "a2_analyze_ratio_vs_read <= 1.5, a_speedup_vs_naive >= 20, b_fraction_of_peak >= 0.5, "
          "c_peak_rss_gib <= 1")
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root if args.dir is None else path, ignore_errors=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
