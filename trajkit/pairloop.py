"""The compiled pair loop (numba): float64 sums between rows of a float32 or float64 block, one SIMD pass.

Shared by the analysis kernels (:mod:`trajkit.analysis.kernels`, pairs of snapshots read from archives) and
the recorder's online two-time observables (:mod:`trajkit.record.online`, the kept waiting-time vectors
against the current parameters), so both compute Σa·b, Σd², Σd⁴, #{|d| < ε} and Σx² with the same loop and
the same rounding. Depends on numpy, numba and :mod:`trajkit.cachedir` only (any layer may use it).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from trajkit.cachedir import cache_dir

#: compiled loop: bytes of one float64 column tile over all rows (fits L2)
TILE_BYTES = 1 << 21


def pair_tiles(X, la, lb, eps, c0, c1, tile, work, acc, nrm):
    """Columns ``[c0, c1)`` of the float32 block ``X [R, n]`` into ``acc [P, 4]`` (Σa·b, Σd², Σd⁴,
    #{|d| < ε}) and ``nrm [R]`` (Σx²), for pairs ``(la[p], lb[p])`` sorted by ``lb`` with cutoffs ``eps``.

    Each tile of ``tile`` columns is promoted to float64 once into ``work [R, tile]``; two consecutive
    pairs sharing ``b`` run in one pass (``b`` loaded once for both anchors), a remaining one alone. Two,
    not four as the C loop did: the 8 accumulators stay in the 16 AVX2 registers (with four, LLVM spilled
    and shuffled them; measured 1.1–1.2× faster than the C loop, 0.85× with four).
    """
    R = X.shape[0]
    P = la.shape[0]
    for t0 in range(c0, c1, tile):
        w = min(t0 + tile, c1) - t0
        for r in range(R):
            x = X[r, t0:t0 + w]
            y = work[r]
            s = 0.0
            for i in range(w):
                v = np.float64(x[i])
                y[i] = v
                s += v * v
            nrm[r] += s
        p = 0
        while p < P:
            b = work[lb[p]]
            if p + 2 <= P and lb[p + 1] == lb[p]:
                a0, a1 = work[la[p]], work[la[p + 1]]
                e0, e1 = eps[p], eps[p + 1]
                dt0 = s0 = q0 = k0 = dt1 = s1 = q1 = k1 = 0.0
                for i in range(w):
                    yb = b[i]
                    x0, x1 = a0[i], a1[i]
                    d0, d1 = yb - x0, yb - x1
                    f0, f1 = d0 * d0, d1 * d1
                    dt0 += x0 * yb
                    dt1 += x1 * yb
                    s0 += f0
                    s1 += f1
                    q0 += f0 * f0
                    q1 += f1 * f1
                    k0 += 1.0 if abs(d0) < e0 else 0.0
                    k1 += 1.0 if abs(d1) < e1 else 0.0
                acc[p, 0] += dt0
                acc[p, 1] += s0
                acc[p, 2] += q0
                acc[p, 3] += k0
                acc[p + 1, 0] += dt1
                acc[p + 1, 1] += s1
                acc[p + 1, 2] += q1
                acc[p + 1, 3] += k1
                p += 2
            else:
                a0 = work[la[p]]
                e0 = eps[p]
                dt0 = s0 = q0 = k0 = 0.0
                for i in range(w):
                    yb = b[i]
                    x0 = a0[i]
                    d0 = yb - x0
                    f0 = d0 * d0
                    dt0 += x0 * yb
                    s0 += f0
                    q0 += f0 * f0
                    k0 += 1.0 if abs(d0) < e0 else 0.0
                acc[p, 0] += dt0
                acc[p, 1] += s0
                acc[p, 2] += q0
                acc[p, 3] += k0
                p += 1


#: LLVM may reorder the float64 sums (SIMD lanes) and fuse ``d·d + s`` into one FMA; no ``nnan``/``ninf``,
#: so NaN and inf propagate to the sums exactly as in numpy (the analyses detect diverged runs by them).
FASTMATH = frozenset({"reassoc", "contract"})
#: One eager signature (C-contiguous arrays) per read dtype of the archives — float32, and float64 for float64
#: archives (:mod:`trajkit.archive.dtypes`), compiled only when such an archive is read — so a process compiles
#: or loads exactly the specialisations it uses.
SIGNATURES = {x: f"void({x}[:, ::1], int64[::1], int64[::1], float64[::1], int64, int64, int64, "
                  "float64[:, ::1], float64[:, ::1], float64[::1])" for x in ("float32", "float64")}


@functools.cache
def compiled(dtype: str = "float32") -> Any:
    """The numba-compiled :func:`pair_tiles` for blocks of ``dtype`` (``float32`` or ``float64``;
    ``nogil``: the column threads run in parallel).

    Compiled on first use (≈ 1–2 s) and cached under :func:`cache_dir` ``/numba`` (numba's on-disk cache,
    keyed by source and CPU), so later processes load it in milliseconds; nothing is written elsewhere
    (when that directory is not writable, the loop is compiled in memory each process instead).
    """
    import numba

    target = cache_dir() / "numba"
    try:
        target.mkdir(parents=True, exist_ok=True)
        writable = os.access(target, os.W_OK)
    except OSError:
        writable = False
    previous = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(target) if writable else ""
    try:
        return numba.njit(SIGNATURES[dtype], nogil=True, cache=writable, fastmath=set(FASTMATH),
                          boundscheck=False)(pair_tiles)
    finally:
        numba.config.CACHE_DIR = previous


def tile_cols(n_rows: int, block_bytes: int | None = None, threads: int = 1) -> int:
    """Columns per tile: the float64 tile of all rows ≈ :data:`TILE_BYTES` (cache), and the tiles of all
    threads at most a quarter of ``block_bytes``."""
    t = min(4096, max(256, TILE_BYTES // (8 * max(n_rows, 1))))
    if block_bytes is not None:
        t = min(t, block_bytes // (32 * threads * max(n_rows, 1)))
    return max(8, t // 8 * 8)


def aligned_work(rows: int, cols: int) -> np.ndarray:
    """float64 workspace ``[rows, cols]`` starting on a 64-byte boundary (whole cache lines per SIMD load)."""
    raw = np.empty(rows * cols + 8)
    off = (-raw.ctypes.data % 64) // 8
    return raw[off:off + rows * cols].reshape(rows, cols)


def run_split(loop: Any, X: np.ndarray, la: np.ndarray, lb: np.ndarray, eps: np.ndarray, c0: int, c1: int,
              threads: int, tile: int, min_cols: int, pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``loop`` (a :func:`compiled` pair loop) over columns ``[c0, c1)`` of ``X [R, n]``, the columns split
    into at most ``threads`` parts of at least ``min_cols`` each, run in parallel (the loop releases the GIL)
    on ``pool`` or a pool of their own; returns the summed ``acc [P, 4]`` and ``nrm [R]``."""
    R, P = X.shape[0], la.shape[0]
    parts = max(1, min(threads, (c1 - c0) // min_cols))
    edges = np.linspace(c0, c1, parts + 1).astype(np.int64)
    accs = [np.zeros((P, 4)) for _ in range(parts)]
    nrms = [np.zeros(R) for _ in range(parts)]

    def run(k: int) -> None:
        loop(X, la, lb, eps, int(edges[k]), int(edges[k + 1]), tile, aligned_work(R, tile), accs[k], nrms[k])

    if parts == 1:
        run(0)
    elif pool is not None:
        list(pool.map(run, range(parts)))
    else:
        with ThreadPoolExecutor(parts, thread_name_prefix="trajkit-pairs") as ex:
            list(ex.map(run, range(parts)))
    return sum(accs[1:], accs[0]), sum(nrms[1:], nrms[0])
