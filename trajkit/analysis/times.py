"""Time machinery for two-time observables on irregular (log-spaced) snapshot schedules.

Aging systems are not stationary, so the default is **t_w-resolved** pairs: for waiting times
``t_w`` (snapshot rows ``k``) every later snapshot ``t ≥ t_w`` gives a pair ``(row(t_w), row(t))``, and
a per-pair quantity maps onto a ``[K, T]`` grid indexed by ``(tw_step, step)`` with NaN where
``step < tw_step``::

    rows = log_spaced_rows(steps, 8)                   # 8 log-spaced snapshots, or
    rows = waiting_time_rows(steps, [100, 1000])       # the snapshots at steps 100 and 1000
    wp = waiting_pairs(steps, rows)                    # wp.pairs [P, 2] rows (a, b), a = t_w row
    sums = kernels.pair_sums(archive, wp.pairs, sums=("sq",))
    msd = wp.grid(sums["sq"] / N)                      # [K, T], NaN where step < tw_step

For a stationary window, **origin-averaged lags**: :func:`lag_pairs` assigns every pair of snapshots
(i < j, origins with step ≥ ``min_origin_step``) to a nominal lag ℓ by the matching rule

    pair (i, j) with d = s_j − s_i counts for lag ℓ  iff  |d − ℓ| ≤ rtol·ℓ + atol,

taking the closest ℓ when several match (ties to the smaller lag) and each pair at most once.
``LagPairs.n_pairs[L]`` reports how many pairs stand behind each lag; ``average(values)`` is the
per-lag mean (NaN where no pair matched). On a linear schedule with ``rtol = atol = 0`` this is the
textbook exact-lag origin average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trajkit.errors import AnalysisError


def _steps(steps: Sequence[int] | np.ndarray) -> np.ndarray:
    s = np.asarray(steps, dtype=np.int64)
    if s.ndim != 1 or s.size == 0:
        raise AnalysisError("snapshot steps must be a non-empty 1-D array")
    if np.any(np.diff(s) <= 0):
        raise AnalysisError("snapshot steps must be strictly increasing")
    return s


def log_spaced_rows(steps: Sequence[int] | np.ndarray, n: int, last_fraction: float = 0.1) -> np.ndarray:
    """Rows of ``n`` snapshots log-spaced in step: int64 ``[K]``, sorted, ``K ≤ n``.

    Targets are ``n`` points geometrically spaced from the first positive step to
    ``last_fraction · steps[-1]`` (so the last waiting time still has a decade of later snapshots; when
    that is below the first positive step, up to the middle snapshot's step), each snapped to the nearest
    snapshot; duplicates are dropped, so fewer than ``n`` rows come back on a short schedule.
    """
    s = _steps(steps)
    if n < 1:
        raise AnalysisError(f"n_waiting_times={n}: need at least 1 log-spaced waiting time")
    pos = np.flatnonzero(s > 0)
    if pos.size == 0:
        return np.array([0], dtype=np.int64)
    lo = float(s[pos[0]])
    hi = max(lo, last_fraction * float(s[-1]))
    if hi <= lo:
        hi = float(s[pos[pos.size // 2]])
    targets = np.geomspace(lo, hi, n) if n > 1 else np.array([lo])
    rows = np.unique([_nearest(s, t) for t in targets])
    return rows.astype(np.int64)


def _nearest(s: np.ndarray, t: float) -> int:
    i = int(np.searchsorted(s, t))
    cand = [j for j in (i - 1, i) if 0 <= j < s.size]
    return min(cand, key=lambda j: (abs(float(s[j]) - t), j))


def waiting_time_rows(steps: Sequence[int] | np.ndarray, waiting_times: Sequence[int] | np.ndarray,
                      snap: str = "exact") -> np.ndarray:
    """Snapshot rows of the waiting-time *steps* ``waiting_times``: int64 ``[K]``, sorted and unique.

    Each waiting time is a step. With ``snap="exact"`` it must be a snapshot step — otherwise the error
    names the nearest snapshot steps on either side; ``snap="nearest"`` takes the nearest snapshot
    instead. A count of log-spaced waiting times is :func:`log_spaced_rows` (a bare integer is refused
    here rather than guessed at).
    """
    s = _steps(steps)
    if snap not in ("exact", "nearest"):
        raise AnalysisError(f"snap={snap!r}; use 'exact' or 'nearest'")
    if isinstance(waiting_times, int | np.integer) or np.ndim(waiting_times) == 0:
        raise AnalysisError(f"waiting_times={waiting_times!r}: give a list of snapshot steps, e.g. "
                            f"[{waiting_times}]; for n log-spaced waiting times use log_spaced_rows(steps, n)")
    tws = [int(t) for t in waiting_times]
    if not tws:
        raise AnalysisError("waiting_times is empty; give snapshot steps (or n_waiting_times=n log-spaced ones)")
    rows = []
    for t in tws:
        if t < s[0] or t > s[-1]:
            raise AnalysisError(f"waiting time {t} is outside the recorded steps {int(s[0])}..{int(s[-1])}")
        j = _nearest(s, float(t))
        if s[j] != t and snap == "exact":
            raise AnalysisError(f"waiting time {t} is not a snapshot step; nearest snapshot is step {int(s[j])} "
                                f"(snapshots around it: {_neighbours(s, t)}); use a snapshot step (`trajkit "
                                "info --steps ARCHIVE` lists them) or snap='nearest'")
        rows.append(j)
    return np.unique(rows).astype(np.int64)


def _neighbours(s: np.ndarray, t: int) -> str:
    """``"19307 and 22758"``: the snapshot steps just below and above ``t`` (inside the recorded range)."""
    i = int(np.searchsorted(s, t))
    return f"{int(s[i - 1])} and {int(s[i])}"


@dataclass(frozen=True)
class WaitingPairs:
    """t_w-resolved pairs. ``pairs [P, 2]`` rows (a = t_w row, b ≥ a); ``k [P]``, ``t [P]`` grid indices.

    ``tw_rows [K]``, ``tw_step [K]`` and ``step [T]`` are the grid's coordinates.
    """

    pairs: np.ndarray
    k: np.ndarray
    t: np.ndarray
    tw_rows: np.ndarray
    tw_step: np.ndarray
    step: np.ndarray

    @property
    def lag(self) -> np.ndarray:
        """``step[b] − step[a]`` per pair, int64 ``[P]``."""
        return self.step[self.pairs[:, 1]] - self.step[self.pairs[:, 0]]

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-pair ``values [P, ...]`` on the ``[K, T, ...]`` grid (float64, NaN where step < tw_step)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape[0] != self.pairs.shape[0]:
            raise AnalysisError(f"grid() got {v.shape[0]} values for {self.pairs.shape[0]} pairs")
        out = np.full((self.tw_rows.size, self.step.size, *v.shape[1:]), np.nan)
        out[self.k, self.t] = v
        return out


def waiting_pairs(steps: Sequence[int] | np.ndarray, tw_rows: Sequence[int] | np.ndarray) -> WaitingPairs:
    """Every pair ``(tw_row, b)`` with ``b ≥ tw_row`` for each waiting-time row (lag 0 included)."""
    s = _steps(steps)
    rows = np.asarray(tw_rows, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= s.size:
        raise AnalysisError(f"waiting-time rows must be 1-D in 0..{s.size - 1}")
    a, b, k = [], [], []
    for i, r in enumerate(rows):
        bs = np.arange(r, s.size, dtype=np.int64)
        a.append(np.full(bs.size, r, dtype=np.int64))
        b.append(bs)
        k.append(np.full(bs.size, i, dtype=np.int64))
    pa, pb = np.concatenate(a), np.concatenate(b)
    return WaitingPairs(pairs=np.stack([pa, pb], axis=1), k=np.concatenate(k), t=pb, tw_rows=rows,
                        tw_step=s[rows], step=s)


@dataclass(frozen=True)
class LagPairs:
    """Origin-averaged pairs. ``pairs [P, 2]``, ``lag_index [P]`` into ``lags [L]``, ``n_pairs [L]``."""

    pairs: np.ndarray
    lag_index: np.ndarray
    lags: np.ndarray
    n_pairs: np.ndarray

    def average(self, values: np.ndarray) -> np.ndarray:
        """Per-lag mean of per-pair ``values [P, ...]``: float64 ``[L, ...]``, NaN where ``n_pairs == 0``."""
        v = np.asarray(values, dtype=np.float64)
        out = np.zeros((self.lags.size, *v.shape[1:]))
        np.add.at(out, self.lag_index, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            out /= self.n_pairs.reshape(-1, *([1] * (v.ndim - 1)))
        out[self.n_pairs == 0] = np.nan
        return out


def lag_pairs(steps: Sequence[int] | np.ndarray, lags: Sequence[int] | np.ndarray | None = None,
              rtol: float = 0.02, atol: float = 0.0, min_origin_step: int | None = None,
              max_pairs_per_lag: int | None = None) -> LagPairs:
    """Pairs of snapshots matched to nominal lags (rule in the module docstring).

    ``lags`` defaults to the lags from the first eligible origin, ``s_j − s_origin``. Origins are rows
    with ``step ≥ min_origin_step`` (all by default). ``max_pairs_per_lag`` keeps that many pairs per lag,
    evenly spread over origins (deterministic), to bound the work on long linear schedules.
    """
    s = _steps(steps)
    if rtol < 0 or atol < 0:
        raise AnalysisError("lag matching tolerances rtol and atol must be >= 0")
    origins = np.arange(s.size) if min_origin_step is None else np.flatnonzero(s >= min_origin_step)
    if origins.size < 2:
        raise AnalysisError(f"need at least 2 snapshots at or after min_origin_step={min_origin_step}")
    if lags is None:
        nominal = s[origins[1:]] - s[origins[0]]
    else:
        nominal = np.unique(np.asarray(lags, dtype=np.int64))
        if nominal.size == 0 or nominal.min() <= 0:
            raise AnalysisError("lags must be positive steps")
    nominal = nominal.astype(np.int64)
    ii, jj = np.triu_indices(s.size, k=1)
    keep = np.isin(ii, origins)
    ii, jj = ii[keep], jj[keep]
    d = (s[jj] - s[ii]).astype(np.float64)
    lf = nominal.astype(np.float64)
    # closest nominal lag (sorted): the candidates are the insertion point and its left neighbour
    pos = np.searchsorted(lf, d)
    left = np.clip(pos - 1, 0, lf.size - 1)
    right = np.clip(pos, 0, lf.size - 1)
    use_right = np.abs(lf[right] - d) < np.abs(d - lf[left])
    idx = np.where(use_right, right, left)
    ok = np.abs(d - lf[idx]) <= rtol * lf[idx] + atol
    ii, jj, idx = ii[ok], jj[ok], idx[ok]
    order = np.lexsort((ii, idx))
    ii, jj, idx = ii[order], jj[order], idx[order]
    if max_pairs_per_lag is not None:
        keep_mask = np.zeros(idx.size, dtype=bool)
        starts = np.searchsorted(idx, np.arange(nominal.size))
        stops = np.searchsorted(idx, np.arange(nominal.size), side="right")
        for lo, hi in zip(starts, stops, strict=True):
            n = hi - lo
            if n <= max_pairs_per_lag:
                keep_mask[lo:hi] = True
            else:
                keep_mask[lo + np.unique(np.linspace(0, n - 1, max_pairs_per_lag).round().astype(int))] = True
        ii, jj, idx = ii[keep_mask], jj[keep_mask], idx[keep_mask]
    n_pairs = np.bincount(idx, minlength=nominal.size).astype(np.int64)
    return LagPairs(pairs=np.stack([ii, jj], axis=1).astype(np.int64), lag_index=idx.astype(np.int64),
                    lags=nominal, n_pairs=n_pairs)
