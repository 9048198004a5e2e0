"""Pair kernels: one streaming pass over column blocks of ``snapshots/params`` for many snapshot pairs.

For pairs ``(a, b)`` of snapshot rows and the selected columns ``i`` (all, or a selection such as
``archive.select("hidden")``), :func:`pair_sums` accumulates in float64

=========  ===========================  ==============================================
``dot``    Σ_i a_i b_i                  overlap
``sq``     Σ_i (b_i − a_i)²             square displacement (MSD · N)
``quart``  Σ_i (b_i − a_i)⁴             fourth moment (non-Gaussian parameter α₂)
``theta``  Σ_i Θ(ε − |b_i − a_i|)       self-overlap count (ε scalar or one per pair)
``norm_a`` Σ_i a_i²,  ``norm_b`` Σ_i b_i²  (always returned; they cost nothing extra)
=========  ===========================  ==============================================

and ``n_cols`` (the number of columns summed). With ``per_layer=True`` each sum also comes as
``<name>_per_layer`` ``[P, L]`` over the layers of :func:`trajkit.archive.layout.layer_slices` (the
layer ids in ``layers``, the column count of each in ``n_cols_per_layer``).

Numerics. Each float32 value is promoted to float64 before anything else: the products ``a·b`` and ``a²``
are then exact, and so is the difference ``d = b − a`` (unless ``|a|`` and ``|b|`` differ by more than
2²⁹, where it is rounded once exactly as a float64 reference rounds it); ``d²`` and ``d⁴`` are rounded once
in float64, and every sum accumulates in float64 — never ``|a|² + |b|² − 2a·b`` in float32, which is wrong
by orders of magnitude for nearby snapshots. ``theta`` tests ``|d| < ε`` on that float64 difference (not
``d² < ε²``, which breaks where the squares underflow or overflow), so counts equal a float64 reference
exactly; a difference exactly equal to ε is not counted (Θ(0) = 0). No float32 arithmetic is used. The
summation order differs from a sequential loop (SIMD lanes, column tiles, threads), which changes only the
last bits: relative error ≲ 1e-15 for ``dot``, ``sq``, ``quart``.
:func:`gram` (all pairs of ``Σ a·b`` and ``Σ (b−a)²`` by a blocked float64 GEMM) centres each column block
on its row mean first, so the distances it derives from the Gram matrix, ``|a'|² + |b'|² − 2a'·b'`` with
``x' = x − mean``, cancel only at the scale of the trajectory's own spread, not the weights' scale (tested
to ≤ 1e-6 relative for displacements 1e-4 of the weights).

Speed. The pass is bound by one elementwise sweep over ``P · n`` values (``P`` pairs, ``n`` columns).
On the CPU the ``numpy`` backend runs a small fused C loop (:data:`_NATIVE_SRC`): each column tile of the
block (≈ 2 MiB) is promoted to float64 once, then one SIMD pass per pair computes all four sums in
registers, four pairs that share ``b`` at a time. It is compiled once with the system C compiler and
cached under ``$TRAJKIT_CACHE_DIR`` (default ``~/.cache/trajkit``, keyed by source, flags and CPU
features; a self-check against numpy gates its use); two threads split each block's columns, and a reader
thread fetches the next column block while the current one is computed (double buffering), so reading
and computing overlap. On 2 cores it sustains ≈ 5·10⁹ pair-elements/s, so 16 waiting times × all later
snapshots of a T = 512, N = 10⁶ archive (6,214 pairs) take about as long as one plain read of the array.
Without a C compiler, or with ``TRAJKIT_NATIVE=0``, it falls back to tiled numpy (same answers, ≈ 9×
slower; see :func:`native_available`).

Memory. Rows are read only for the snapshots that some pair involves, in column blocks sized so that the
blocks in flight (two float32 read buffers, the selected copy, the float64 copy where a backend makes
one) and the pair workspace stay within ``block_bytes`` whatever ``T·N`` is. Work is split into pure
per-block tasks, :func:`pair_sums_block` and :func:`gram_block`, that take an archive (or its path) and
a column range and return partial sums, so a Dask cluster can run them unchanged and add the partials.

Backends: ``numpy`` (CPU: the native loop, or float64 numpy tiles sized for the CPU cache) and ``torch``
(the same computation on ``device``, CUDA when available; falls back to CPU). ``backend="auto"`` picks
torch on CUDA and numpy otherwise. Both give the same answers (to float64 rounding; ``theta`` exactly).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.devices import resolve_device
from trajkit.errors import AnalysisError

SUMS = ("dot", "sq", "quart", "theta")
DEFAULT_BLOCK_BYTES = 256 * 2**20
_TILE_ELEMS = 1 << 16          # float64 elements per numpy-fallback tile (512 KiB): stays in L2
_TILE_COLS = 4096              # columns per numpy-fallback tile
_NATIVE_TILE_BYTES = 1 << 21   # native loop: float32 bytes of one column tile over all rows (fits L2)


# -- native loop --------------------------------------------------------------------------------------------

_NATIVE_SRC = r"""
/* trajkit pair kernels: fused float64 pair sums over a float32 block (see trajkit.analysis.kernels). */
#include <stdint.h>
#include <math.h>

#define TK_BODY(j) { double x = a##j[i]; double d = y - x, d2 = d * d;                               \
    dt##j += x * y; s##j += d2; q##j += d2 * d2; k##j += (fabs(d) < e##j) ? 1.0 : 0.0; }
#define TK_STORE(j) { double *o = acc + 4 * (p + j); o[0] += dt##j; o[1] += s##j; o[2] += q##j; o[3] += k##j; }

/* X: float32 block, row r (0 <= r < R) at X + r*ldx. Columns [c0, c1) are visited in tiles of `tile`
   columns; each tile is first promoted to float64 into `work` (R*tile doubles, 64-byte aligned), adding
   each row's sum of squares to nrm[r]. For pair p (rows la[p], lb[p]) it adds to acc[4p .. 4p+3]:
   sum a*b, sum d^2, sum d^4, count |d| < eps[p], with d = b - a exact in float64. Pairs sorted by lb:
   four consecutive pairs sharing b run together, so b is loaded once for four anchors. */
void tk_pair_sums(const float *X, int64_t ldx, int64_t R, int64_t P, const int64_t *la,
                  const int64_t *lb, const double *eps, int64_t c0, int64_t c1, int64_t tile,
                  double *work, double *acc, double *nrm) {
    for (int64_t t0 = c0; t0 < c1; t0 += tile) {
        const int64_t w = (t0 + tile < c1 ? t0 + tile : c1) - t0;
        for (int64_t r = 0; r < R; r++) {
            const float *x = X + r * ldx + t0;
            double *y = work + r * tile, s = 0.0;
            #pragma omp simd reduction(+:s)
            for (int64_t i = 0; i < w; i++) {
                double v = (double)x[i];
                y[i] = v;
                s += v * v;
            }
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
                for (int64_t i = 0; i < w; i++) {
                    const double y = b[i];
                    TK_BODY(0) TK_BODY(1) TK_BODY(2) TK_BODY(3)
                }
                TK_STORE(0) TK_STORE(1) TK_STORE(2) TK_STORE(3)
                p += 4;
            } else {
                const double *a0 = work + la[p] * tile, e0 = eps[p];
                double dt0 = 0, s0 = 0, q0 = 0, k0 = 0;
                #pragma omp simd reduction(+:dt0, s0, q0, k0)
                for (int64_t i = 0; i < w; i++) {
                    const double y = b[i];
                    TK_BODY(0)
                }
                TK_STORE(0)
                p += 1;
            }
        }
    }
}
"""

# Tried in order; the first that compiles, loads and passes the self-check is used. 512-bit vectors
# measured ≈ 20–30 % faster than gcc's default 256-bit ones on this AVX-512 machine.
_NATIVE_FLAGS = (
    ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp-simd"),
    ("-O3", "-march=native", "-fopenmp-simd"),
    ("-O3", "-fopenmp-simd"),
    ("-O3",),
)


def _cpu_tag() -> str:
    """Machine and CPU feature line: part of the cache key, since ``-march=native`` code is CPU-specific."""
    tag = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return tag + line
    except OSError:
        pass
    return tag + platform.processor()


def _cache_dir() -> Path:
    env = os.environ.get("TRAJKIT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trajkit"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="trajkit-native-"))


def _compile(cc: str, flags: Sequence[str], target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out = Path(tmp) / "pair_kernels.c", Path(tmp) / "pair_kernels.so"
        src.write_text(_NATIVE_SRC)
        subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", str(out), str(src)], check=True,
                       capture_output=True, timeout=120)
        os.replace(out, target)                 # atomic: concurrent builders never see a partial file


def _bind(lib: Any) -> Any:
    p, i = ctypes.c_void_p, ctypes.c_int64
    lib.tk_pair_sums.argtypes = [p, i, i, i, p, p, p, i, i, i, p, p, p]
    lib.tk_pair_sums.restype = None
    return lib


def _aligned_work(n: int) -> np.ndarray:
    """float64 workspace of ``n`` elements starting on a 64-byte boundary."""
    raw = np.empty(n + 8)
    off = (-raw.ctypes.data % 64) // 8
    return raw[off:off + n]


def _native_call(lib: Any, X32: np.ndarray, la: np.ndarray, lb: np.ndarray, eps: np.ndarray, c0: int, c1: int,
                 tile: int, acc: np.ndarray, nrm: np.ndarray) -> None:
    """Columns ``[c0, c1)`` of the float32 block ``X32`` (unit column stride) into ``acc [P, 4]`` (dot, sq,
    quart, theta) and ``nrm [R]``; ``la``, ``lb`` int64 and ``eps`` float64 contiguous, sorted by ``lb``."""
    R = X32.shape[0]
    work = _aligned_work(R * tile)
    lib.tk_pair_sums(X32.ctypes.data, X32.strides[0] // 4, R, la.size, la.ctypes.data, lb.ctypes.data,
                     eps.ctypes.data, c0, c1, tile, work.ctypes.data, acc.ctypes.data, nrm.ctypes.data)


def _self_check(lib: Any) -> bool:
    """The compiled loop against numpy float64 on a small block (guards against a miscompile)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 203)).astype(np.float32)
    X[3] = X[1] + np.float32(1e-4) * rng.standard_normal(203).astype(np.float32)
    lb, la = (np.ascontiguousarray(v, dtype=np.int64) for v in np.divmod(np.arange(25), 5))
    la, lb = np.concatenate([la, [2, 0]]), np.concatenate([lb, [4, 4]])      # runs of 4 and of 1 share b
    eps = rng.uniform(0.2, 1.0, la.size)
    acc, nrm = np.zeros((la.size, 4)), np.zeros(5)
    _native_call(lib, X, la, lb, eps, 0, 203, 64, acc, nrm)
    A, B = X[la].astype(np.float64), X[lb].astype(np.float64)
    D = B - A
    ref = np.stack([(A * B).sum(1), (D * D).sum(1), (D**4).sum(1), (np.abs(D) < eps[:, None]).sum(1)], 1)
    x64 = X.astype(np.float64)
    return (np.allclose(acc, ref, rtol=1e-12, atol=0) and np.array_equal(acc[:, 3], ref[:, 3])
            and np.allclose(nrm, (x64 * x64).sum(1), rtol=1e-12, atol=0))


@functools.cache
def _native() -> Any:
    """The compiled pair loop (a ctypes library), or None when disabled or no C compiler works."""
    if os.environ.get("TRAJKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    cache = _cache_dir()
    for flags in _NATIVE_FLAGS:
        key = hashlib.sha256("\0".join([_NATIVE_SRC, cc, *flags, _cpu_tag()]).encode()).hexdigest()[:20]
        target = cache / f"pair_kernels-{key}.so"
        try:
            if not target.exists():
                _compile(cc, flags, target)
            lib = _bind(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError, AttributeError):
            continue
        if _self_check(lib):
            return lib
    return None


def native_available() -> bool:
    """True when the fused C pair loop is compiled and in use for the ``numpy`` backend (first call may
    compile it, ≈ 0.3 s once per machine; ``TRAJKIT_NATIVE=0`` disables it)."""
    return _native() is not None


def _open(source: Any) -> Any:
    from trajkit.archive import open_archive

    return open_archive(source, validate=False) if isinstance(source, str | os.PathLike) else source


# -- block planning -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """Columns ``[start, stop)`` of the archive, of which ``sel`` (local indices; all when None) are used."""

    start: int
    stop: int
    sel: np.ndarray | None
    layer: int

    @property
    def n_cols(self) -> int:
        return self.stop - self.start if self.sel is None else int(self.sel.size)


def plan_blocks(n_params: int, block_cols: int, cols: np.ndarray | None = None,
                layer_ranges: Sequence[tuple[int, int]] | None = None) -> list[Block]:
    """Column blocks of at most ``block_cols`` columns, never straddling a layer range.

    ``cols`` (sorted unique int64) restricts to a selection: each block reads the span from its first to
    its last selected column and uses ``sel`` inside it. ``layer_ranges`` is ``[(lo, hi), ...]`` per layer
    (index = position); without it everything is layer 0.
    """
    block_cols = max(1, int(block_cols))
    ranges = list(layer_ranges) if layer_ranges else [(0, n_params)]
    out: list[Block] = []
    for li, (lo, hi) in enumerate(ranges):
        if cols is None:
            for s in range(lo, hi, block_cols):
                out.append(Block(s, min(s + block_cols, hi), None, li))
            continue
        c = cols[(cols >= lo) & (cols < hi)]
        i = 0
        while i < c.size:
            start = int(c[i])
            j = int(np.searchsorted(c, start + block_cols))
            stop = int(c[j - 1]) + 1
            local = c[i:j] - start
            out.append(Block(start, stop, None if local.size == stop - start else local, li))
            i = j
    return out


def _check_cols(cols: Any, n_params: int) -> np.ndarray | None:
    if cols is None:
        return None
    c = np.unique(np.asarray(cols, dtype=np.int64))
    if c.size == 0:
        raise AnalysisError("column selection is empty")
    if c[0] < 0 or c[-1] >= n_params:
        raise AnalysisError(f"column selection has indices outside 0..{n_params - 1}")
    return None if c.size == n_params else c


def _layer_ranges(archive: Any) -> tuple[list[int], list[tuple[int, int]]]:
    from trajkit.archive.layout import layer_slices

    sl = layer_slices(archive.layout)
    return list(sl), [(s.start, s.stop) for s in sl.values()]


def _read_block(archive: Any, rows: np.ndarray, block: Block, buf: np.ndarray | None = None) -> np.ndarray:
    """float32 ``[R, n_cols]`` of the block (only ``rows`` are read)."""
    width = block.stop - block.start
    if buf is None or buf.shape[1] < width or buf.shape[0] != rows.size:
        raw = archive.params.read_rows(rows, block.start, block.stop)
    else:
        raw = archive.params.read_rows(rows, block.start, block.stop, out=buf[:, :width])
    return raw if block.sel is None else raw[:, block.sel]


def _read_ahead(archive: Any, rows: np.ndarray, blocks: list[Block], bufs: list[np.ndarray]
                ) -> Iterator[tuple[Block, np.ndarray]]:
    """Yield ``(block, data)`` in order while a reader thread already fills the other buffer with the next
    block (double buffering: file reads release the GIL, so I/O overlaps the computation)."""
    if len(bufs) < 2 or len(blocks) < 2:
        for blk in blocks:
            yield blk, _read_block(archive, rows, blk, bufs[0] if bufs else None)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="trajkit-read") as io:
        fut = io.submit(_read_block, archive, rows, blocks[0], bufs[0])
        for i, blk in enumerate(blocks):
            data = fut.result()
            if i + 1 < len(blocks):              # the consumer is done with bufs[(i + 1) % 2] by now
                fut = io.submit(_read_block, archive, rows, blocks[i + 1], bufs[(i + 1) % 2])
            yield blk, data


# -- pair sums ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _PairPlan:
    rows: np.ndarray            # [R] unique archive rows
    la: np.ndarray              # [P] local row of a
    lb: np.ndarray              # [P] local row of b
    order: np.ndarray           # [P] pair order sorted by (a, b): row a stays in cache across its pairs
    order_b: np.ndarray         # [P] pair order sorted by (b, a): the native loop's order
    groups: list[tuple[int, np.ndarray, slice | np.ndarray]]   # (local a, pair idx, local b rows)


def _pair_plan(pairs: np.ndarray) -> _PairPlan:
    rows, inv = np.unique(pairs.ravel(), return_inverse=True)
    inv = inv.reshape(-1, 2)
    la, lb = np.ascontiguousarray(inv[:, 0]), np.ascontiguousarray(inv[:, 1])
    order = np.lexsort((lb, la))
    groups = []
    bounds = np.flatnonzero(np.diff(la[order])) + 1
    for idx in np.split(order, bounds):
        b = lb[idx]
        # contiguous runs of b rows use views, others a gather
        if b.size > 1 and np.all(np.diff(b) == 1):
            groups.append((int(la[idx[0]]), idx, slice(int(b[0]), int(b[-1]) + 1)))
        else:
            groups.append((int(la[idx[0]]), idx, b))
    return _PairPlan(rows=rows, la=la, lb=lb, order=order, order_b=np.lexsort((la, lb)), groups=groups)


def _zero_acc(want: set[str], P: int) -> dict[str, np.ndarray]:
    return {k: np.zeros(P) for k in (*SUMS, "norm_a", "norm_b") if k in want}


def _native_tile(n_rows: int, block_bytes: int | None = None, threads: int = 1) -> int:
    """Columns per native tile: the float64 tile of all rows ≈ :data:`_NATIVE_TILE_BYTES` (cache), and the
    tiles of all threads at most a quarter of ``block_bytes``."""
    t = min(4096, max(256, _NATIVE_TILE_BYTES // (8 * max(n_rows, 1))))
    if block_bytes is not None:
        t = min(t, block_bytes // (32 * threads * max(n_rows, 1)))
    return max(8, t // 8 * 8)


def _block_native(lib: Any, X32: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                  threads: int, tile: int | None = None) -> dict[str, np.ndarray]:
    """The fused C loop over the float32 block ``X32 [R, n]``; ``threads`` threads split the columns."""
    if X32.strides[1] != 4 or X32.strides[0] % 4:
        X32 = np.ascontiguousarray(X32)
    R, n = X32.shape
    P = plan.la.size
    o = plan.order_b
    oa, ob = np.ascontiguousarray(plan.la[o]), np.ascontiguousarray(plan.lb[o])
    oe = np.zeros(P) if eps is None else np.ascontiguousarray(np.asarray(eps, np.float64)[o])
    parts = max(1, min(threads, n // 2048))
    edges = np.linspace(0, n, parts + 1).astype(np.int64)
    tile = tile or _native_tile(R)
    accs = [np.zeros((P, 4)) for _ in range(parts)]
    nrms = [np.zeros(R) for _ in range(parts)]

    def run(k: int) -> None:
        _native_call(lib, X32, oa, ob, oe, int(edges[k]), int(edges[k + 1]), tile, accs[k], nrms[k])

    if parts == 1:
        run(0)
    else:
        with ThreadPoolExecutor(parts, thread_name_prefix="trajkit-pairs") as ex:
            list(ex.map(run, range(parts)))
    acc, nrm = sum(accs[1:], accs[0]), sum(nrms[1:], nrms[0])
    out = {}
    for j, k in enumerate(SUMS):
        if k in want:
            out[k] = np.empty(P)
            out[k][o] = acc[:, j]
    out["norm_a"], out["norm_b"] = nrm[plan.la], nrm[plan.lb]
    return out


def _tiles_numpy(X: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                 c0: int, c1: int) -> dict[str, np.ndarray]:
    """Partial sums over columns ``[c0, c1)`` of the float64 block ``X [R, n]`` (one thread's share).

    Works on tiles of at most :data:`_TILE_ELEMS` elements (``rows × _TILE_COLS``) so the temporaries stay
    in cache; the workspace is ``_TILE_ELEMS · 17`` bytes whatever the block size.
    """
    P = plan.la.size
    acc = _zero_acc(want & {"sq", "quart", "theta"}, P)
    tile = min(_TILE_COLS, max(c1 - c0, 1))
    gmax = max(1, _TILE_ELEMS // tile)
    D = np.empty((gmax, tile))
    D2 = np.empty((gmax, tile))
    mask = np.empty((gmax, tile), dtype=bool)
    for t0 in range(c0, c1, tile):
        t1 = min(t0 + tile, c1)
        w = t1 - t0
        for a, idx, b in plan.groups:
            xa = X[a, t0:t1]
            nb = (b.stop - b.start) if isinstance(b, slice) else b.size
            for g0 in range(0, nb, gmax):
                g1 = min(g0 + gmax, nb)
                n = g1 - g0
                xb = X[b.start + g0:b.start + g1, t0:t1] if isinstance(b, slice) else X[b[g0:g1], t0:t1]
                d, d2 = D[:n, :w], D2[:n, :w]
                np.subtract(xb, xa, out=d)
                pid = idx[g0:g1]
                if "theta" in acc:
                    m = mask[:n, :w]
                    np.less(np.abs(d, out=d2), eps[pid, None], out=m)
                    acc["theta"][pid] += np.count_nonzero(m, axis=1)
                np.multiply(d, d, out=d2)
                if "sq" in acc:
                    acc["sq"][pid] += np.einsum("ij->i", d2)
                if "quart" in acc:
                    acc["quart"][pid] += np.einsum("ij,ij->i", d2, d2)
    return acc


def _block_numpy(X32: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                 threads: int, tile: int | None = None) -> dict[str, np.ndarray]:
    """CPU partial sums of one float32 block: the native loop when available, else float64 numpy tiles."""
    lib = _native()
    if lib is not None:
        return _block_native(lib, X32, plan, eps, want, threads, tile)
    X = X32.astype(np.float64)
    P = plan.la.size
    acc = _zero_acc(want, P)
    if want & {"dot", "norm_a", "norm_b"}:
        ua = np.unique(plan.la)
        G = X @ X[ua].T                     # [R, Ka]; this orientation is ≈ 10× faster in OpenBLAS
        pos = np.searchsorted(ua, plan.la)
        if "dot" in acc:
            acc["dot"] += G[plan.lb, pos]
        nrm = np.einsum("ij,ij->i", X, X)
        acc["norm_a"] += nrm[plan.la]
        acc["norm_b"] += nrm[plan.lb]
    if want & {"sq", "quart", "theta"}:
        n = X.shape[1]
        parts = max(1, min(threads, n // 4096))
        edges = np.linspace(0, n, parts + 1).astype(int)
        if parts == 1:
            results = [_tiles_numpy(X, plan, eps, want, 0, n)]
        else:
            with ThreadPoolExecutor(parts) as ex:
                results = list(ex.map(lambda k: _tiles_numpy(X, plan, eps, want, edges[k], edges[k + 1]),
                                      range(parts)))
        for r in results:
            for k, v in r.items():
                acc[k] += v
    return acc


def _block_torch(X32: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                 device: str) -> dict[str, np.ndarray]:
    import torch

    X = torch.from_numpy(np.ascontiguousarray(X32)).to(device=device, dtype=torch.float64)
    P = plan.la.size
    acc = {k: torch.zeros(P, dtype=torch.float64, device=device) for k in _zero_acc(want, P)}
    la = torch.from_numpy(plan.la).to(device)
    lb = torch.from_numpy(plan.lb).to(device)
    if want & {"dot", "norm_a", "norm_b"}:
        ua, pos = torch.unique(la, return_inverse=True)
        G = X @ X[ua].T
        if "dot" in acc:
            acc["dot"] += G[lb, pos]
        nrm = (X * X).sum(dim=1)
        acc["norm_a"] += nrm[la]
        acc["norm_b"] += nrm[lb]
    if want & {"sq", "quart", "theta"}:
        e = None if eps is None else torch.tensor(np.asarray(eps), device=device)
        width = X.shape[1]
        gmax = max(1, (1 << 24) // max(width, 1)) if device != "cpu" else max(1, (1 << 19) // max(width, 1))
        for a, idx, b in plan.groups:
            tidx = torch.from_numpy(idx).to(device)
            nb = (b.stop - b.start) if isinstance(b, slice) else b.size
            for g0 in range(0, nb, gmax):
                g1 = min(g0 + gmax, nb)
                xb = (X[b.start + g0:b.start + g1] if isinstance(b, slice)
                      else X[torch.from_numpy(b[g0:g1]).to(device)])
                d = xb - X[a]
                pid = tidx[g0:g1]
                if "theta" in acc:
                    acc["theta"][pid] += (d.abs() < e[pid, None]).sum(dim=1).to(torch.float64)
                d2 = d.square_()
                if "sq" in acc:
                    acc["sq"][pid] += d2.sum(dim=1)
                if "quart" in acc:
                    acc["quart"][pid] += (d2 * d2).sum(dim=1)
    return {k: v.cpu().numpy() for k, v in acc.items()}


def _choose_backend(backend: str, device: str) -> str:
    if backend not in ("auto", "numpy", "torch"):
        raise AnalysisError(f"backend={backend!r}; use auto, numpy or torch")
    if backend == "auto":
        return "torch" if device != "cpu" else "numpy"
    return backend


def _block_sums(be: str, X32: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                device: str, threads: int, tile: int | None = None) -> dict[str, np.ndarray]:
    if be == "torch":
        return _block_torch(X32, plan, eps, want, device)
    return _block_numpy(X32, plan, eps, want, threads, tile)


def pair_sums_block(source: Any, pairs: np.ndarray, block: Block, sums: Sequence[str] = SUMS,
                    epsilon: Any = None, backend: str = "numpy", device: str = "cpu",
                    threads: int | None = None) -> dict[str, np.ndarray]:
    """Partial :func:`pair_sums` over one column block: a pure task of (archive or path, block).

    Returns float64 ``[P]`` partial sums (``dot``, ``sq``, ``quart``, ``theta``, ``norm_a``, ``norm_b`` as
    requested); summing the partials of all blocks of :func:`plan_blocks` gives the totals.
    """
    archive = _open(source)
    plan = _pair_plan(np.asarray(pairs, dtype=np.int64))
    eps = None if epsilon is None else np.broadcast_to(np.asarray(epsilon, np.float64), (plan.la.size,))
    X32 = _read_block(archive, plan.rows, block)
    want = set(sums) | {"norm_a", "norm_b"}
    threads = threads or min(2, os.cpu_count() or 1)
    return _block_sums(backend, X32, plan, eps, want, device, threads)


def pair_sums(archive: Any, pairs: Any, cols: Any = None, epsilon: Any = None,
              sums: Sequence[str] = SUMS, per_layer: bool = False, block_bytes: int = DEFAULT_BLOCK_BYTES,
              backend: str = "auto", device: str | None = "cpu", progress: bool | Any = None,
              threads: int | None = None) -> dict[str, np.ndarray]:
    """Sums over the selected columns for each pair of snapshot rows, in one pass over the data.

    ``archive``: an Archive or its path. ``pairs``: int ``[P, 2]`` rows ``(a, b)``. ``cols``: sorted column
    indices (``archive.select(spec)``) or None for all. ``epsilon``: scalar or ``[P]`` cutoff, required
    for ``theta``. ``sums``: any of :data:`SUMS`. Returns float64 ``[P]`` arrays keyed by sum name plus
    ``norm_a``, ``norm_b``, ``n_cols`` (int); with ``per_layer`` also ``<name>_per_layer`` ``[P, L]``,
    ``layers`` ``[L]`` and ``n_cols_per_layer`` ``[L]``. Memory stays within about ``block_bytes``.
    ``threads``: compute threads per block (default ``min(2, cpus)``); one more thread reads ahead.
    """
    archive = _open(archive)
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise AnalysisError(f"pairs must have shape [P, 2], got {pairs.shape}")
    T = archive.n_snapshots
    if pairs.size and (pairs.min() < 0 or pairs.max() >= T):
        raise AnalysisError(f"{archive.path}: pair rows must be in 0..{T - 1}")
    bad = set(sums) - set(SUMS)
    if bad:
        raise AnalysisError(f"unknown sum {sorted(bad)[0]!r}; choose from {', '.join(SUMS)}")
    if "theta" in sums:
        if epsilon is None:
            raise AnalysisError("sum 'theta' needs epsilon (a scalar or one cutoff per pair)")
        eps = np.asarray(epsilon, dtype=np.float64)
        if eps.ndim > 1 or (eps.ndim == 1 and eps.size != pairs.shape[0]) or np.any(~(eps > 0)):
            raise AnalysisError(f"epsilon must be > 0, a scalar or one value per pair ({pairs.shape[0]})")
    device = resolve_device(device)
    be = _choose_backend(backend, device)
    if be == "numpy":
        device = "cpu"
    c = _check_cols(cols, archive.n_params)
    layer_ids, ranges = _layer_ranges(archive) if per_layer else ([0], None)
    P = pairs.shape[0]
    plan = _pair_plan(pairs) if P else None
    R = plan.rows.size if plan else 0
    threads = threads or min(2, os.cpu_count() or 1)
    native = be == "numpy" and _native() is not None
    block_cols = _block_cols(block_bytes, R, threads, P, native=native, selection=c is not None)
    tile = _native_tile(R, block_bytes, threads) if native else None
    blocks = plan_blocks(archive.n_params, block_cols, c, ranges)
    L = len(layer_ids)
    want = set(sums) | {"norm_a", "norm_b"}
    totals = {k: np.zeros((P, L)) for k in want}
    n_cols_layer = np.zeros(L, dtype=np.int64)
    if P:
        eps = None if "theta" not in sums else np.broadcast_to(np.asarray(epsilon, np.float64), (P,))
        width = max((b.stop - b.start) for b in blocks) if blocks else 0
        bufs = [np.empty((R, width), dtype=np.float32) for _ in range(2 if len(blocks) > 1 else 1)]
        for blk, X32 in _progress(_read_ahead(archive, plan.rows, blocks, bufs), progress, "pair sums",
                                  len(blocks)):
            part = _block_sums(be, X32, plan, eps, want, device, threads, tile)
            for k, v in part.items():
                totals[k][:, blk.layer] += v
            n_cols_layer[blk.layer] += blk.n_cols
    else:
        for blk in blocks:
            n_cols_layer[blk.layer] += blk.n_cols
    out: dict[str, Any] = {k: v.sum(axis=1) for k, v in totals.items()}
    out["n_cols"] = int(n_cols_layer.sum())
    if per_layer:
        for k, v in totals.items():
            out[f"{k}_per_layer"] = v
        out["layers"] = np.asarray(layer_ids, dtype=np.int64)
        out["n_cols_per_layer"] = n_cols_layer
    return out


def _block_cols(block_bytes: int, n_rows: int, threads: int, n_pairs: int = 0, native: bool = False,
                selection: bool = False) -> int:
    """Columns per block so that what is in flight fits ``block_bytes``: two float32 read buffers (8 B per
    row and column), the selected copy (4 B) with a selection, the float64 copy (8 B) unless the native
    loop runs, after a fixed part: 1 MiB, and per thread the pair accumulators and the tile workspace
    (native: a float64 tile of all rows; numpy: ``_TILE_ELEMS · 17`` B)."""
    per_col = n_rows * (8 + (4 if selection else 0) + (0 if native else 8))
    work = 8 * n_rows * _native_tile(n_rows, block_bytes, threads) if native else _TILE_ELEMS * 17
    fixed = 2**20 + threads * (48 * n_pairs + 8 * n_rows + work)
    return max(256, (block_bytes - fixed) // max(1, per_col))


def _progress(items: Any, progress: Any, desc: str, total: int) -> Any:
    if progress is None:
        progress = total > 64
    if not progress or total < 2:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block", leave=False, total=total)


# -- Gram matrix --------------------------------------------------------------------------------------------

def gram_block(source: Any, rows: np.ndarray, block: Block, backend: str = "numpy",
               device: str = "cpu") -> tuple[np.ndarray, np.ndarray, float]:
    """One block's centred Gram partials ``(G' [R, R], v [R], m·m)`` with ``x' = x − m``, ``m`` the row mean.

    ``Σ a·b = G'_ab + v_a + v_b + m·m`` and ``Σ (b−a)² = G'_aa + G'_bb − 2 G'_ab`` summed over blocks.
    """
    archive = _open(source)
    X32 = _read_block(archive, np.asarray(rows, dtype=np.int64), block)
    if backend == "torch":
        import torch

        X = torch.from_numpy(np.ascontiguousarray(X32)).to(device=device, dtype=torch.float64)
        m = X.mean(dim=0)
        X -= m
        return (X @ X.T).cpu().numpy(), (X @ m).cpu().numpy(), float(m @ m)
    X = X32.astype(np.float64)
    m = X.mean(axis=0)
    X -= m
    return X @ X.T, X @ m, float(m @ m)


def gram(archive: Any, rows: Any = None, cols: Any = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
         backend: str = "auto", device: str | None = "cpu", progress: bool | Any = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs ``(dot [R, R], sqdist [R, R])`` over the selected columns by a blocked float64 GEMM.

    ``rows``: snapshot rows (all by default); ``cols`` as in :func:`pair_sums`. ``dot[i, j] = Σ x_i·x_j``,
    ``sqdist[i, j] = Σ (x_j − x_i)²`` (clipped at 0, exact 0 on the diagonal), from a Gram matrix of
    mean-centred blocks (see the module docstring for why that is accurate).
    """
    archive = _open(archive)
    rows = np.arange(archive.n_snapshots) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise AnalysisError(f"{archive.path}: no rows to compute a Gram matrix over")
    device = resolve_device(device)
    be = _choose_backend(backend, device)
    c = _check_cols(cols, archive.n_params)
    R = rows.size
    block_cols = max(256, block_bytes // (12 * R))
    G = np.zeros((R, R))
    v = np.zeros(R)
    mm = 0.0
    blocks = plan_blocks(archive.n_params, block_cols, c)
    for blk in _progress(blocks, progress, "gram", len(blocks)):
        g, vv, m2 = gram_block(archive, rows, blk, be, device if be == "torch" else "cpu")
        G += g
        v += vv
        mm += m2
    d = np.diag(G)
    sq = np.maximum(d[:, None] + d[None, :] - 2 * G, 0.0)
    np.fill_diagonal(sq, 0.0)
    dot = G + v[:, None] + v[None, :] + mm
    return dot, sq
