"""Per-replica two-time measurements through the core's pair kernels (shared by the dynamics plugins).

:func:`measure_two_time` turns an :class:`~trajkit.analysis.Ensemble` and the common parameters
(``waiting_times`` / ``n_waiting_times``, ``snap``, ``select``, ``epsilon`` / ``epsilon_factor``,
``epsilon_from`` / ``epsilon_step``, ``mode``, ``allow_nan``; ``normalize`` of ``overlaps`` and ``aging``) into
per-replica observables of :mod:`trajkit_dynamics.overlaps`:

The waiting times are the snapshot steps ``waiting_times`` (each must be a snapshot step unless
``snap = "nearest"``) or, when those are not given, ``n_waiting_times`` log-spaced snapshots
(:func:`trajkit.analysis.times.log_spaced_rows`); giving both is an error.

- ``mode = "waiting"``: arrays ``[R, K, T]`` on the ``(tw_step, step)`` grid, NaN where ``step < tw_step``;
- ``mode = "lag"``: origin-averaged arrays ``[R, L]`` over ``lag`` (origins with ``step ≥ origin_min_step``,
  lag matching of :func:`trajkit.analysis.times.lag_pairs`), plus per-pair self-overlaps for χ4 over origins.

The cutoff is ``ε = epsilon`` or, with ``epsilon_factor = F``, ``ε = std(w(tw))/F`` over the selected
parameters of each replica at each waiting time (at each origin in lag mode) — or, with ``epsilon_from =
last`` / ``step`` (and ``epsilon_step = S``), at the last snapshot / at step S: one ε per replica, the
same for all its waiting times (in an ensemble every replica has its own). Snapshots flagged
non-finite in an archive's metadata (``/nonfinite``) or found non-finite by the kernels are refused
unless ``allow_nan`` is true, which drops every pair that touches them (their grid cells stay NaN) and
lists the masked steps in the measurement.

Archives whose two-time sums were measured during training (``online/``, :mod:`trajkit.online`) and whose
snapshots do not hold every measured step are read through :func:`trajkit.analysis.online.online_waiting_sums`
instead of the pair kernels (``source = "online"``), with the same arrays; in lag mode the recorded waiting
times (at or after ``origin_min_step``) are the origins and the recorded lags the lags, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajkit.analysis import Param, kernels, times
from trajkit.analysis.online import OnlineLagSums, online_lag_sums, online_waiting_sums, uses_online
from trajkit.archive import Selection
from trajkit.errors import AnalysisError
from trajkit_dynamics.two_time import two_time_from_sums

#: Where the std of the cutoff ε = std(w)/F is taken (parameter ``epsilon_from``).
EPSILON_FROM = ("waiting_time", "last", "step")

#: Parameters every two-time plugin accepts.
COMMON_PARAMS = (
    Param("waiting_times", "ints", default=None, min=0, excludes=("n_waiting_times",),
          help="waiting times t_w as snapshot steps, e.g. 100,1000 (default: n_waiting_times log-spaced ones)"),
    Param("n_waiting_times", "int", default=8, min=1, excludes=("waiting_times",),
          help="number of log-spaced snapshots used as waiting times when waiting_times is not given"),
    Param("snap", "str", default="exact", choices=("exact", "nearest"),
          help="a waiting time that is not a snapshot: error naming the nearest (exact) or use it (nearest)"),
    Param("select", "str", default="all",
          help="parameter subset: all, weights, biases, hidden, layer:K, tensor-name glob, joined by +"),
    Param("epsilon", "float", default=None, help="absolute cutoff ε of the self-overlap Q",
          check=lambda v: v > 0, valid="> 0"),
    Param("epsilon_factor", "float", default=10.0,
          help="when epsilon is not given: ε = std(w(tw))/F over the selected parameters at each waiting time",
          check=lambda v: v > 0, valid="> 0"),
    Param("epsilon_from", "str", default="waiting_time", choices=EPSILON_FROM,
          help="snapshot of the std in ε = std(w)/F, per replica: each waiting time (origin), the last snapshot, "
               "or epsilon_step"),
    Param("epsilon_step", "int", default=None, min=0,
          help="with epsilon_from=step: the snapshot step whose std(w)/F is every waiting time's ε"),
    Param("allow_nan", "bool", default=False,
          help="mask snapshots with NaN/inf parameters (pairs touching them become NaN) instead of refusing"),
)

#: ``normalize`` of ``overlaps`` and ``aging``: Δ as it is, or Δ(tw, tw+t)/D(tw) with D the recorded noise strength.
NORMALIZE = Param("normalize", "str", default="none", choices=("none", "noise_D"),
                  help="noise_D: also report msd_over_noise_D = Δ(tw, tw+t)/D(tw), D from snapshots/metrics/noise_D")
#: the two-time array of ``normalize = "noise_D"`` and its axis label
MSD_OVER_NOISE_D = "msd_over_noise_D"
MSD_OVER_NOISE_D_LABEL = r"$\Delta(t_w, t_w+t)/D(t_w)$, $D$ = noise_D"


METRIC = Param("metric", "str", default="train_loss", help="snapshot metric, or trace:NAME")

#: the ``valid`` text of parameters checked with :func:`is_range`
RANGE_VALID = "two numbers lo,hi with 0 <= lo < hi"


def is_range(v: object) -> bool:
    """True for a ``[lo, hi]`` window with ``0 <= lo < hi`` (fit windows of the plugins)."""
    return isinstance(v, list) and len(v) == 2 and 0 <= v[0] < v[1]


ORIGIN_MIN_STEP = Param("origin_min_step", "int", default=0, min=0,
                        help="lag mode: first step used as a time origin (start of the stationary window)")


@dataclass
class TwoTime:
    """Per-replica two-time observables. ``values[name]`` is ``[R, K, T]`` (waiting) or ``[R, L]`` (lag)."""

    mode: str
    n: int
    steps: np.ndarray
    values: dict[str, np.ndarray]
    epsilon: np.ndarray
    tw_step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tw_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_pairs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_q: list[np.ndarray] = field(default_factory=list)
    pair_lag_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    masked_steps: list[int] = field(default_factory=list)
    noise_d: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # [R, K] D(tw) with normalize=noise_D
    #: ``"snapshots"`` (pair kernels over snapshots) or ``"online"`` (sums measured during training)
    source: str = "snapshots"

    @property
    def replicas(self) -> int:
        return next(iter(self.values.values())).shape[0]


def selected_columns(data: Any, spec: str) -> Selection:
    """The columns of ``spec`` (tensor ranges); an :class:`AnalysisError` when the selection matches nothing."""
    cols = data.select(spec)
    if cols.size == 0:
        raise AnalysisError(f"select={spec!r} matches no parameters; use all, weights, biases, hidden, "
                            "layer:K or a tensor-name glob that names a tensor of the layout")
    return cols


def nonfinite_rows(archives: list[Any], steps: np.ndarray, allow_nan: bool) -> np.ndarray:
    """Rows flagged non-finite in any archive's metadata; an error naming the archive unless ``allow_nan``."""
    bad: set[int] = set()
    for arch in archives:
        flagged = (arch.metadata.get("nonfinite") or {}).get("steps") or []
        if flagged and not allow_nan:
            raise AnalysisError(f"{arch.path}: parameters are NaN/inf at step {flagged[0]} (metadata /nonfinite; "
                                "the run diverged); pass allow_nan=true to mask those snapshots")
        bad.update(int(np.searchsorted(steps, s)) for s in flagged if s in set(steps.tolist()))
    return np.array(sorted(bad), dtype=np.int64)


def waiting_rows(steps: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Snapshot rows of the waiting times: the steps ``waiting_times`` when given, else
    ``n_waiting_times`` log-spaced snapshots; int64 ``[K]``."""
    if params.get("waiting_times") is not None:
        return times.waiting_time_rows(steps, params["waiting_times"], snap=params["snap"])
    return times.log_spaced_rows(steps, int(params.get("n_waiting_times", 8)))


def row_std(arch: Any, rows: np.ndarray, cols: Selection) -> np.ndarray:
    """``std(w(row))`` over ``cols`` for each row (float64): ``[len(rows)]``."""
    out = np.empty(rows.size)
    for i, r in enumerate(rows):
        out[i] = float(np.std(arch.params[int(r), cols], dtype=np.float64))
    return out


def epsilon_row(steps: np.ndarray, params: dict[str, Any]) -> int | None:
    """The snapshot row whose ``std(w)/F`` is every waiting time's ε (``epsilon_from`` = ``last`` / ``step``);
    None when ε is taken at each waiting time (or is absolute). Checks ``epsilon_from`` against ``epsilon_step``."""
    where, step = params.get("epsilon_from", "waiting_time"), params.get("epsilon_step")
    if where == "step" and step is None:
        raise AnalysisError("epsilon_from=step needs epsilon_step=S, a snapshot step (`trajkit info --steps` "
                            "lists them)")
    if where != "step" and step is not None:
        raise AnalysisError(f"epsilon_step={step} is used only with epsilon_from=step (epsilon_from is {where!r}); "
                            "pass epsilon_from=step or drop epsilon_step")
    if params.get("epsilon") is not None or where == "waiting_time":
        return None
    if where == "last":
        return int(steps.size - 1)
    row = int(np.searchsorted(steps, step))
    if row == steps.size or steps[row] != step:
        near = " and ".join(str(int(steps[j])) for j in (row - 1, row) if 0 <= j < steps.size)
        raise AnalysisError(f"epsilon_step={step} is not a snapshot step (snapshots around it: {near}); pass a "
                            "snapshot step (`trajkit info --steps` lists them)")
    return row


def _epsilon(arch: Any, rows: np.ndarray, cols: Selection, params: dict[str, Any], steps: np.ndarray,
             at_row: int | None = None) -> np.ndarray:
    if params.get("epsilon") is not None:
        return np.full(rows.size, float(params["epsilon"]))
    std_rows = rows if at_row is None else np.array([at_row])
    eps = row_std(arch, std_rows, cols) / float(params["epsilon_factor"])
    zero = np.flatnonzero(~(eps > 0))
    if zero.size:
        raise AnalysisError(f"{arch.path}: ε = std(w)/epsilon_factor is 0 at step {int(steps[std_rows[zero[0]]])} "
                            "(the selected parameters are all equal there); pass an absolute epsilon")
    return eps if at_row is None else np.full(rows.size, float(eps[0]))


def noise_strength(arch: Any, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``D(t)`` at snapshot ``rows`` from ``snapshots/metrics/noise_D`` (float64 ``[len(rows)]``); a one-line
    error saying how to record it when the archive has none, or when a value there is not a positive number."""
    metrics = arch.metrics
    if "noise_D" not in metrics:
        raise AnalysisError(f"{arch.path}: normalize=noise_D needs the gradient-noise strength "
                            "snapshots/metrics/noise_D, which this archive lacks; record it with `[metrics] "
                            "gradient_stats = true` in the config or Recorder(..., gradient_stats=...), or use "
                            "normalize=none")
    d = np.asarray(metrics["noise_D"], dtype=np.float64)[rows]
    bad = np.flatnonzero(~(d > 0) | ~np.isfinite(d))
    if bad.size:
        raise AnalysisError(f"{arch.path}: snapshots/metrics/noise_D is {d[bad[0]]} at step {int(steps[rows[bad[0]]])} "
                            "(a waiting time or origin); Δ/D(tw) needs D > 0 there: choose other waiting times or "
                            "normalize=none")
    return d


def replica_pair_sums(arch: Any, rows: np.ndarray, pairs: np.ndarray, cols: Selection, params: dict[str, Any],
                      steps: np.ndarray, sums: tuple[str, ...], device: str,
                      eps_at: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One replica's pass (one task on a Dask cluster): the cutoffs ``ε [len(rows)]`` at the waiting-time
    rows (or all from row ``eps_at``: ``epsilon_from``) and the kernel sums over ``pairs [P, 2]`` (whose first
    rows are among ``rows``)."""
    eps_rows = _epsilon(arch, rows, cols, params, steps, eps_at)
    eps_pair = eps_rows[np.searchsorted(rows, pairs[:, 0])]
    return eps_rows, kernels.pair_sums(arch, pairs, cols=cols, epsilon=eps_pair, sums=sums, device=device,
                                       progress=False)


def measure_two_time(data: Any, params: dict[str, Any], ctx: Any, *, mode: str = "waiting",
                     sums: tuple[str, ...] = ("dot", "sq", "quart", "theta"),
                     origin_min_step: int | None = None, lag_rtol: float = 0.02) -> TwoTime:
    """Run the pair kernels on every replica of ``data`` (an Ensemble, or one Archive) and derive the
    two-time observables; see the module docstring. ``params["normalize"] = "noise_D"`` adds
    ``msd_over_noise_D`` (each replica's Δ over its own D at the pair's first snapshot)."""
    if uses_online(data):
        return _online_two_time(data, params, mode, sums, origin_min_step)
    archives = list(getattr(data, "archives", [data]))
    steps = np.asarray(data.steps, dtype=np.int64)
    cols = selected_columns(data, params["select"])
    eps_at = epsilon_row(steps, params)
    bad = nonfinite_rows(archives, steps, bool(params.get("allow_nan")))
    n = int(cols.size)
    if mode == "waiting":
        rows = waiting_rows(steps, params)
        wp = times.waiting_pairs(steps, rows)
        pairs = wp.pairs
    else:
        lp = times.lag_pairs(steps, rtol=lag_rtol, min_origin_step=origin_min_step)
        pairs = lp.pairs
        rows = np.unique(pairs[:, 0])
    keep = ~(np.isin(pairs[:, 0], bad) | np.isin(pairs[:, 1], bad))
    rescale = params.get("normalize", "none") == "noise_D"
    noise_d = [noise_strength(a, rows, steps) for a in archives] if rescale else []
    per_pair: dict[str, list[np.ndarray]] = {}
    eps_all = []
    passes = ctx.map(replica_pair_sums, archives, desc="replicas", rows=rows, pairs=pairs[keep], cols=cols,
                     params=params, steps=steps, sums=sums, device=ctx.device, eps_at=eps_at)
    for i, (arch, (eps_rows, got)) in enumerate(zip(archives, passes, strict=True)):
        eps_all.append(eps_rows)
        full = {}
        for name in (*sums, "norm_a", "norm_b"):
            if name in got:
                v = np.full(pairs.shape[0], np.nan)
                v[keep] = np.asarray(got[name], dtype=np.float64)
                full[name] = v
        if not params.get("allow_nan") and any(not np.all(np.isfinite(v[keep])) for v in full.values()):
            raise AnalysisError(f"{arch.path}: parameters are NaN/inf in some snapshots (not flagged in metadata); "
                                "pass allow_nan=true to mask them")
        derived = two_time_from_sums(full, n)
        if rescale:                                     # Δ(tw, tw+t) / D(tw): the collapse of 1803.06969
            derived[MSD_OVER_NOISE_D] = derived["msd"] / noise_d[i][np.searchsorted(rows, pairs[:, 0])]
        for name, v in derived.items():
            per_pair.setdefault(name, []).append(v)
    masked = [int(steps[r]) for r in bad]
    eps = np.stack(eps_all)
    if mode == "waiting":
        values = {k: np.stack([wp.grid(v) for v in vs]) for k, vs in per_pair.items()}
        return TwoTime(mode, n, steps, values, eps, tw_step=wp.tw_step, tw_rows=rows, masked_steps=masked,
                       noise_d=np.stack(noise_d) if rescale else np.zeros((0, 0)))
    values = {k: np.stack([lp.average(np.where(keep, v, np.nan)) for v in vs]) for k, vs in per_pair.items()}
    q = [np.asarray(v) for v in per_pair.get("self_overlap", [])]
    return TwoTime(mode, n, steps, values, eps, lags=lp.lags, n_pairs=lp.n_pairs, pair_q=q,
                   pair_lag_index=lp.lag_index, masked_steps=masked,
                   noise_d=np.stack(noise_d) if rescale else np.zeros((0, 0)))


def _online_two_time(data: Any, params: dict[str, Any], mode: str, sums: tuple[str, ...],
                     origin_min_step: int | None = None) -> TwoTime:
    """:func:`measure_two_time` from the online sums. Waiting mode: the grid's steps are the measured ones;
    lag mode: the recorded waiting times at or after ``origin_min_step`` are the origins, the recorded lags
    the lags (exactly; no matching)."""
    if params.get("normalize", "none") != "none":
        raise AnalysisError("normalize=noise_D needs snapshots of the run (D(tw) is a snapshot metric); the "
                            "archive holds online sums only: use normalize=none")
    src = (online_waiting_sums(data, params) if mode == "waiting"
           else online_lag_sums(data, params, origin_min_step))
    per_pair: dict[str, list[np.ndarray]] = {}
    for arch, got in zip(getattr(data, "archives", [data]), src.sums, strict=True):
        if not params.get("allow_nan") and np.isinf(np.stack(list(got.values()))).any():
            raise AnalysisError(f"{arch.path}: the online sums are inf at some steps (the run diverged); pass "
                                "allow_nan=true to mask them")
        wanted = {k: v for k, v in got.items() if k in (*sums, "norm_a", "norm_b")}
        for name, v in two_time_from_sums(wanted, src.n).items():
            per_pair.setdefault(name, []).append(v)
    if isinstance(src, OnlineLagSums):
        lp = src.pairs
        values = {k: np.stack([lp.average(v) for v in vs]) for k, vs in per_pair.items()}
        return TwoTime("lag", src.n, src.step, values, src.epsilon, lags=lp.lags,
                       n_pairs=lp.n_pairs, pair_q=[np.asarray(v) for v in per_pair.get("self_overlap", [])],
                       pair_lag_index=lp.lag_index, source="online")
    values = {k: np.stack([src.pairs.grid(v) for v in vs]) for k, vs in per_pair.items()}
    return TwoTime("waiting", src.n, src.pairs.step, values, src.epsilon, tw_step=src.pairs.tw_step,
                   tw_rows=src.pairs.tw_rows, source="online")


def replica_gram_block(block: kernels.Block, archives: list[Any]) -> np.ndarray:
    """``Σ_i w^a_i(t) w^b_i(t)`` over the columns of one block of :func:`trajkit.analysis.kernels.plan_blocks`
    for every snapshot and pair of replicas: ``[T, R, R]`` float64 (one task on a Dask cluster)."""
    x = np.empty((len(archives), archives[0].n_snapshots, block.n_cols))
    for i, arch in enumerate(archives):
        values = arch.params[:, block.start:block.stop]
        x[i] = values if block.parts is None else np.concatenate([values[:, a:b] for a, b in block.parts], axis=1)
    return np.einsum("atn,btn->tab", x, x, optimize=True)


def replica_gram(data: Any, cols: Selection, ctx: Any, block_bytes: int = 64 << 20) -> np.ndarray:
    """``G[t, a, b] = w^a(t)·w^b(t)`` over ``cols`` for every snapshot: ``[T, R, R]`` float64.

    One streaming pass over column blocks of every replica (``R·T·block`` floats in memory at a time), each
    block one ``ctx.map`` task; the partials are added in block order.
    """
    archives = list(getattr(data, "archives", [data]))
    r, t = len(archives), int(np.asarray(data.steps).size)
    gram = np.zeros((t, r, r))
    blocks = kernels.plan_blocks(archives[0].n_params, max(1, int(block_bytes // (8 * r * t))), cols)
    for part in ctx.map(replica_gram_block, blocks, desc="replica overlaps", archives=archives):
        gram += part
    return gram
