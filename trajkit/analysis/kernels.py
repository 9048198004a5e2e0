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
last bits: relative error ≲ 1e-15 for ``dot``, ``sq``, ``quart``. Archives stored in float16 or bfloat16
are read widened (exactly) to float32 and take the same path; float64 archives are read as float64 and run
a float64 specialisation of the same loop (:func:`read_dtype`; the products are then rounded once).
:func:`gram` (all pairs of ``Σ a·b`` and ``Σ (b−a)²`` by a blocked float64 GEMM) centres each column block
on its row mean first, so the distances it derives from the Gram matrix, ``|a'|² + |b'|² − 2a'·b'`` with
``x' = x − mean``, cancel only at the scale of the trajectory's own spread, not the weights' scale (tested
to ≤ 1e-6 relative for displacements 1e-4 of the weights).

Speed. The pass is bound by one elementwise sweep over ``P · n`` values (``P`` pairs, ``n`` columns).
On the CPU the ``numpy`` backend runs one fused loop compiled by numba
(:func:`trajkit.pairloop.pair_tiles`, shared with the recorder's online sums; no C compiler is needed on the
user's machine): each column tile of the block (≈ 2 MiB) is promoted to float64 once,
then one SIMD pass per pair computes all four sums in registers, two pairs that share ``b`` at a time.
numba compiles it on first use (≈ 1–2 s) into its on-disk cache under :func:`cache_dir` ``/numba``
(``$TRAJKIT_CACHE_DIR``, default ``~/.cache/trajkit``), which later processes load in milliseconds. Two
threads split each block's columns (the loop releases the GIL), and a reader thread fetches the next column
block while the current one is computed (double buffering), so reading and computing overlap.

Selections. ``cols`` is a :class:`~trajkit.archive.Selection` (tensor ranges, what ``archive.select``
returns) or an int index array (converted to ranges once); blocks are packed from the ranges, so a block
inside one range is read straight into the loop's buffer and no index array is ever built.
:func:`column_blocks` streams the selected columns block by block for statistics of one's own.

Memory. Rows are read only for the snapshots that some pair involves, in column blocks sized so that the
blocks in flight (two float32 read buffers, the selected copy, the float64 copy where a backend makes
one) and the pair workspace stay within ``block_bytes`` whatever ``T·N`` is. Work is split into pure
per-block tasks, :func:`pair_sums_block` and :func:`gram_block`, that take an archive (or its path) and
a column range and return partial sums, so a Dask cluster runs them unchanged and the partials are added
in block order (``executor=``, :mod:`trajkit.analysis.tasks`).

Backends: ``numpy`` (CPU: the compiled loop on numpy arrays) and ``torch``
(the same computation on ``device``, CUDA when available; falls back to CPU). ``backend="auto"`` picks
torch on CUDA and numpy otherwise. Both give the same answers (to float64 rounding; ``theta`` exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive.layout import Selection
from trajkit.cachedir import cache_dir as trajkit_cache_dir
from trajkit.devices import resolve_device
from trajkit.errors import AnalysisError
from trajkit.pairloop import compiled, run_split, tile_cols

SUMS = ("dot", "sq", "quart", "theta")
DEFAULT_BLOCK_BYTES = 256 * 2**20
_GATHER_PARTS = 16             # a block of more selected ranges than this is gathered by one index array


# -- compiled loop (numba) ----------------------------------------------------------------------------------

def cache_dir() -> Path:
    """trajkit's user cache: ``$TRAJKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/trajkit``, else ``~/.cache/trajkit``."""
    return trajkit_cache_dir()


def _compiled(dtype: str = "float32") -> Any:
    """The numba-compiled :func:`trajkit.pairloop.pair_tiles` for blocks of ``dtype`` (``float32`` or
    ``float64``); one dispatcher per dtype and process (:func:`trajkit.pairloop.compiled`)."""
    return compiled(dtype)


def compiled_loop() -> str:
    """What runs the CPU pair loop: ``"numba <version>"`` (compiling it on the first call of a process
    without a cached build, ≈ 1–2 s; no C compiler is involved)."""
    import numba

    _compiled()
    return f"numba {numba.__version__}"


def _open(source: Any) -> Any:
    from trajkit.archive import open_archive

    return open_archive(source, validate=False) if isinstance(source, str | os.PathLike) else source


# -- block planning -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """Columns ``[start, stop)`` of the archive, of which the local ranges ``parts`` ``((a, b), ...)``
    (relative to ``start``) are used; all of them when ``parts`` is None."""

    start: int
    stop: int
    parts: tuple[tuple[int, int], ...] | None
    layer: int

    @property
    def n_cols(self) -> int:
        return self.stop - self.start if self.parts is None else sum(b - a for a, b in self.parts)


def plan_blocks(n_params: int, block_cols: int, cols: Any = None,
                layer_ranges: Sequence[tuple[int, int]] | None = None) -> list[Block]:
    """Column blocks of at most ``block_cols`` columns, never straddling a layer range.

    ``cols`` (a :class:`~trajkit.archive.Selection`, an int index array, or None for all) restricts to a
    selection: its ranges are packed in order into blocks whose span (first to last selected column) is
    at most ``block_cols``; a block reads its span and keeps ``parts``. ``layer_ranges`` is
    ``[(lo, hi), ...]`` per layer (index = position); without it everything is layer 0.
    """
    block_cols = max(1, int(block_cols))
    sel = _as_selection(cols, n_params)
    out: list[Block] = []
    for li, (lo, hi) in enumerate(list(layer_ranges) if layer_ranges else [(0, n_params)]):
        parts: list[tuple[int, int]] = []
        for a, b in ([(lo, hi)] if sel is None else sel.within(lo, hi)):
            while a < b:
                if parts and a >= parts[0][0] + block_cols:
                    out.append(_block(parts, li))
                    parts = []
                e = min(b, (parts[0][0] if parts else a) + block_cols)
                parts.append((a, e))
                a = e
                if a < b:                       # the range goes on past this block's span
                    out.append(_block(parts, li))
                    parts = []
        if parts:
            out.append(_block(parts, li))
    return out


def _block(parts: list[tuple[int, int]], layer: int) -> Block:
    """The block spanning the absolute ranges ``parts`` (sorted, disjoint)."""
    start, stop = parts[0][0], parts[-1][1]
    local = None if len(parts) == 1 else tuple((a - start, b - start) for a, b in parts)
    return Block(start, stop, local, layer)


def _as_selection(cols: Any, n_params: int) -> Selection | None:
    """``cols`` as a :class:`Selection` (an int array is converted: sorted, duplicates dropped), or None
    for every column; an :class:`AnalysisError` for an empty one or one outside ``0..n_params-1``."""
    if cols is None:
        return None
    if isinstance(cols, Selection):
        if cols.n_params != n_params:
            raise AnalysisError(f"column selection is over {cols.n_params} parameters, the archive has {n_params}")
        sel = cols
    else:
        idx = np.asarray(cols, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_params):
            raise AnalysisError(f"column selection has indices outside 0..{n_params - 1}")
        sel = Selection.from_indices(idx, n_params)
    if sel.size == 0:
        raise AnalysisError("column selection is empty")
    return None if sel.is_all else sel


def _layer_ranges(archive: Any) -> tuple[list[int], list[tuple[int, int]]]:
    from trajkit.archive.layout import layer_slices

    sl = layer_slices(archive.layout)
    return list(sl), [(s.start, s.stop) for s in sl.values()]


def read_dtype(archive: Any) -> np.dtype:
    """The dtype blocks of ``archive`` are read as: float32, or float64 for a float64 archive (float16 and
    bfloat16 archives are widened to float32 by the reader; :mod:`trajkit.archive.dtypes`)."""
    return np.dtype(getattr(archive.params, "dtype", np.float32))


def _read_block(archive: Any, rows: np.ndarray, block: Block, buf: np.ndarray | None = None) -> np.ndarray:
    """``[R, n_cols]`` of the block's selected columns in :func:`read_dtype`, C-contiguous (only ``rows``
    are read); ``buf`` is an optional flat buffer of that dtype of at least ``R · (stop − start)`` elements."""
    width = block.stop - block.start
    if buf is None or buf.size < rows.size * width or buf.dtype != read_dtype(archive):
        raw = archive.params.read_rows(rows, block.start, block.stop)
    else:
        raw = archive.params.read_rows(rows, block.start, block.stop, out=buf[:rows.size * width].reshape(-1, width))
    if block.parts is None:
        return raw
    if len(block.parts) > _GATHER_PARTS:
        return raw[:, np.concatenate([np.arange(a, b) for a, b in block.parts])]
    out = np.empty((rows.size, block.n_cols), dtype=raw.dtype)
    off = 0
    for a, b in block.parts:
        out[:, off:off + b - a] = raw[:, a:b]
        off += b - a
    return out


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
    order_b: np.ndarray         # [P] pair order sorted by (b, a): the compiled loop's order
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


def _block_numpy(X32: np.ndarray, plan: _PairPlan, eps: np.ndarray | None, want: set[str],
                 threads: int, tile: int | None = None) -> dict[str, np.ndarray]:
    """CPU partial sums of the float32 block ``X32 [R, n]`` by the compiled loop; ``threads`` threads split
    the columns (the loop releases the GIL)."""
    dtype = "float64" if X32.dtype == np.float64 else "float32"
    loop = _compiled(dtype)
    X32 = np.ascontiguousarray(X32, dtype=dtype)
    R, n = X32.shape
    P = plan.la.size
    o = plan.order_b
    oa, ob = np.ascontiguousarray(plan.la[o]), np.ascontiguousarray(plan.lb[o])
    oe = np.zeros(P) if eps is None else np.ascontiguousarray(np.asarray(eps, np.float64)[o])
    acc, nrm = run_split(loop, X32, oa, ob, oe, 0, n, threads, tile or tile_cols(R), min_cols=2048)
    out = {}
    for j, k in enumerate(SUMS):
        if k in want:
            out[k] = np.empty(P)
            out[k][o] = acc[:, j]
    out["norm_a"], out["norm_b"] = nrm[plan.la], nrm[plan.lb]
    return out


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
                    threads: int | None = None, tile: int | None = None) -> dict[str, np.ndarray]:
    """Partial :func:`pair_sums` over one column block: a pure task of (archive or path, block).

    Returns float64 ``[P]`` partial sums (``dot``, ``sq``, ``quart``, ``theta``, ``norm_a``, ``norm_b`` as
    requested); summing the partials of all blocks of :func:`plan_blocks` gives the totals. With the
    ``threads`` and ``tile`` of :func:`pair_sums` a partial is the same number as in its pass.
    """
    archive = _open(source)
    plan = _pair_plan(np.asarray(pairs, dtype=np.int64))
    eps = None if epsilon is None else np.broadcast_to(np.asarray(epsilon, np.float64), (plan.la.size,))
    X32 = _read_block(archive, plan.rows, block)
    want = set(sums) | {"norm_a", "norm_b"}
    threads = threads or min(2, os.cpu_count() or 1)
    return _block_sums(backend, X32, plan, eps, want, device, threads, tile)


def pair_sums(archive: Any, pairs: Any, cols: Any = None, epsilon: Any = None,
              sums: Sequence[str] = SUMS, per_layer: bool = False, block_bytes: int = DEFAULT_BLOCK_BYTES,
              backend: str = "auto", device: str | None = "cpu", progress: bool | Any = None,
              threads: int | None = None, executor: Any = None) -> dict[str, np.ndarray]:
    """Sums over the selected columns for each pair of snapshot rows, in one pass over the data.

    ``archive``: an Archive or its path. ``pairs``: int ``[P, 2]`` rows ``(a, b)``. ``cols``: a
    :class:`~trajkit.archive.Selection` (``archive.select(spec)``: its ranges' chunks are read directly),
    an int index array (converted to ranges), or None for all. ``epsilon``: scalar or ``[P]`` cutoff, required
    for ``theta``. ``sums``: any of :data:`SUMS`. Returns float64 ``[P]`` arrays keyed by sum name plus
    ``norm_a``, ``norm_b``, ``n_cols`` (int); with ``per_layer`` also ``<name>_per_layer`` ``[P, L]``,
    ``layers`` ``[L]`` and ``n_cols_per_layer`` ``[L]``. Memory stays within about ``block_bytes``.
    ``threads``: compute threads per block (default ``min(2, cpus)``); one more thread reads ahead.
    ``executor``: a :class:`trajkit.analysis.tasks.Executor` (``ctx.kernels`` passes it on a cluster): each
    block is a :func:`pair_sums_block` task on a worker, the partials added here in block order.
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
    c = _as_selection(cols, archive.n_params)
    layer_ids, ranges = _layer_ranges(archive) if per_layer else ([0], None)
    P = pairs.shape[0]
    plan = _pair_plan(pairs) if P else None
    R = plan.rows.size if plan else 0
    threads = threads or min(2, os.cpu_count() or 1)
    block_cols = _block_cols(block_bytes, R, threads, P, selection=c is not None, float64_copy=be == "torch")
    tile = tile_cols(R, block_bytes, threads) if be == "numpy" else None
    blocks = plan_blocks(archive.n_params, block_cols, c, ranges)
    L = len(layer_ids)
    want = set(sums) | {"norm_a", "norm_b"}
    totals = {k: np.zeros((P, L)) for k in want}
    n_cols_layer = np.zeros(L, dtype=np.int64)
    if P:
        eps = None if "theta" not in sums else np.broadcast_to(np.asarray(epsilon, np.float64), (P,))
        width = max((b.stop - b.start) for b in blocks) if blocks else 0
        if executor is None:
            bufs = [np.empty(R * width, dtype=read_dtype(archive)) for _ in range(2 if len(blocks) > 1 else 1)]
            partials: Any = (_block_sums(be, X32, plan, eps, want, device, threads, tile) for _, X32 in
                             _progress(_read_ahead(archive, plan.rows, blocks, bufs), progress, "pair sums",
                                       len(blocks)))
        else:
            partials = executor.map(pair_sums_block, [archive] * len(blocks), [pairs] * len(blocks), blocks,
                                    desc="pair sums", sums=tuple(sums), epsilon=eps,
                                    backend=be, device=device, threads=threads, tile=tile)
        for blk, part in zip(blocks, partials, strict=True):
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


def _block_cols(block_bytes: int, n_rows: int, threads: int, n_pairs: int = 0, selection: bool = False,
                float64_copy: bool = False) -> int:
    """Columns per block so that what is in flight fits ``block_bytes``: two float32 read buffers (8 B per
    row and column), the selected copy (4 B) with a selection, a float64 copy (8 B; the torch backend),
    after a fixed part: 1 MiB, and per thread the pair accumulators and the compiled loop's float64 tile
    of all rows."""
    per_col = n_rows * (8 + (4 if selection else 0) + (8 if float64_copy else 0))
    work = 8 * n_rows * tile_cols(n_rows, block_bytes, threads)
    fixed = 2**20 + threads * (48 * n_pairs + 8 * n_rows + work)
    return max(256, (block_bytes - fixed) // max(1, per_col))


def _progress(items: Any, progress: Any, desc: str, total: int) -> Any:
    if progress is None:
        progress = total > 64
    if not progress or total < 2:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block", leave=False, total=total)


# -- column blocks (the public streaming primitive) --------------------------------------------------------

COLUMN_BLOCK_BYTES = 64 * 2**20


def column_blocks(archive: Any, rows: Any = None, cols: Any = None, block: int | None = None,
                  dtype: Any = np.float64, block_bytes: int = COLUMN_BLOCK_BYTES, progress: bool | Any = False
                  ) -> Iterator[tuple[Selection, np.ndarray]]:
    """Stream ``params[rows, cols]`` one block of columns at a time, in column order, in bounded memory.

    For statistics that :func:`pair_sums` does not cover. ``archive``: an Archive or its path. ``rows``:
    snapshot rows (int array, any order; all committed rows by default). ``cols``: a
    :class:`~trajkit.archive.Selection` (``archive.select(spec)``), a selection spec string such as
    ``"hidden"``, an int index array, or None for all. ``block``: columns per block (default: as many as
    fit ``block_bytes`` ≈ 64 MiB with the read-ahead buffers). ``dtype``: ``np.float64`` (default; a new
    array per block) or ``np.float32`` (the stored values, no copy: the array is a view of a read buffer
    that the next block overwrites — copy what you keep).

    Yields ``(columns, values)``: ``columns`` is the :class:`~trajkit.archive.Selection` of this block's
    archive columns (``.ranges``, ``.size``, ``.indices()``), ``values`` the ``[len(rows), columns.size]``
    array, ``values[i, j]`` = parameter ``columns.indices()[j]`` at snapshot ``rows[i]``. Blocks never
    overlap and together cover the selection once, so a per-column statistic is filled by
    ``out[offset:offset + values.shape[1]]`` with ``offset`` the running sum of the widths. A reader
    thread fetches the next block while the caller works on the current one; memory is about
    ``len(rows) · block · (8 + itemsize)`` bytes whatever ``T·N`` is.
    """
    archive = _open(archive)
    rows = np.arange(archive.n_snapshots) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise AnalysisError(f"{archive.path}: column_blocks needs at least one row")
    if rows.min() < 0 or rows.max() >= archive.n_snapshots:
        raise AnalysisError(f"{archive.path}: rows must be in 0..{archive.n_snapshots - 1}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise AnalysisError(f"column_blocks dtype={dtype}; use float64 or float32 (the stored dtype)")
    sel = archive.select(cols) if isinstance(cols, str) else _as_selection(cols, archive.n_params)
    if block is None:
        block = max(256, block_bytes // (rows.size * (8 + (8 if dtype == np.float64 else 0))))
    if int(block) < 1:
        raise AnalysisError(f"column_blocks block={block}; give a positive number of columns")
    blocks = plan_blocks(archive.n_params, int(block), sel)
    width = max(b.stop - b.start for b in blocks)
    bufs = [np.empty(rows.size * width, dtype=read_dtype(archive)) for _ in range(2 if len(blocks) > 1 else 1)]
    n = archive.n_params
    for blk, X32 in _progress(_read_ahead(archive, rows, blocks, bufs), progress, "column blocks", len(blocks)):
        parts = [(0, blk.stop - blk.start)] if blk.parts is None else blk.parts
        columns = Selection([(blk.start + a, blk.start + b) for a, b in parts], n)
        yield columns, (X32.astype(np.float64) if dtype == np.float64 else X32.astype(np.float32, copy=False))


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
         backend: str = "auto", device: str | None = "cpu", progress: bool | Any = None, executor: Any = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs ``(dot [R, R], sqdist [R, R])`` over the selected columns by a blocked float64 GEMM.

    ``rows``: snapshot rows (all by default); ``cols`` as in :func:`pair_sums`. ``dot[i, j] = Σ x_i·x_j``,
    ``sqdist[i, j] = Σ (x_j − x_i)²`` (clipped at 0, exact 0 on the diagonal), from a Gram matrix of
    mean-centred blocks (see the module docstring for why that is accurate). ``executor``: as in
    :func:`pair_sums` (one :func:`gram_block` task per block).
    """
    archive = _open(archive)
    rows = np.arange(archive.n_snapshots) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise AnalysisError(f"{archive.path}: no rows to compute a Gram matrix over")
    device = resolve_device(device)
    be = _choose_backend(backend, device)
    c = _as_selection(cols, archive.n_params)
    R = rows.size
    block_cols = max(256, block_bytes // (12 * R))
    G = np.zeros((R, R))
    v = np.zeros(R)
    mm = 0.0
    blocks = plan_blocks(archive.n_params, block_cols, c)
    dev = device if be == "torch" else "cpu"
    if executor is None:
        partials: Any = (gram_block(archive, rows, blk, be, dev) for blk in _progress(blocks, progress, "gram",
                                                                                         len(blocks)))
    else:
        partials = executor.map(gram_block, [archive] * len(blocks), [rows] * len(blocks), blocks, desc="gram",
                                backend=be, device=dev)
    for g, vv, m2 in partials:
        G += g
        v += vv
        mm += m2
    d = np.diag(G)
    sq = np.maximum(d[:, None] + d[None, :] - 2 * G, 0.0)
    np.fill_diagonal(sq, 0.0)
    dot = G + v[:, None] + v[None, :] + mm
    return dot, sq
