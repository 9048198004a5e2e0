"""Two-time pair sums from an archive's online measurements (``online/``, :mod:`trajkit.online`).

The data source the two-time analyses use instead of the pair kernels when the sums were measured during
training: :func:`online_waiting_sums` returns, for each replica, the same float64 ``[P]`` sums that
:func:`trajkit.analysis.kernels.pair_sums` returns for the waiting-time pairs (``dot``, ``sq``, ``quart``,
``theta``, ``norm_a``, ``norm_b``), with a :class:`~trajkit.analysis.times.WaitingPairs` grid whose steps
are the measured ones (``tw + t`` for the recorded lags, lag 0 included).

:func:`uses_online` is the rule: the online sums are used when every archive has them and its snapshots
do not hold every measured step (with snapshots at all of them, the kernels compute the same sums — to
float64 rounding — from the snapshots).

Parameters are checked against what was recorded: ``select`` must be the recorded one, the cutoff the
recorded rule (``epsilon``, or ``epsilon_factor`` when ε was ``std(w(tw))/F``), and the waiting times
(``waiting_times``, snapped with ``snap``) among the recorded; without ``waiting_times`` every recorded one is
used, or ``n_waiting_times`` log-spaced ones among them when more were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trajkit.analysis import times
from trajkit.archive.online import SUMS, online_rows
from trajkit.errors import AnalysisError


@dataclass(frozen=True)
class OnlineWaitingSums:
    """Pair sums of the online grid. ``pairs`` the grid (``pairs.step [T]`` the measured steps);
    ``sums[r][name]`` float64 ``[P]`` for replica ``r`` (NaN where that run measured nothing);
    ``epsilon [R, K]``; ``n`` the number of selected parameters."""

    pairs: times.WaitingPairs
    sums: list[dict[str, np.ndarray]]
    epsilon: np.ndarray
    n: int


def uses_online(data: Any) -> bool:
    """Whether the two-time analyses read ``data`` (an Ensemble or an Archive) from its online sums."""
    archives = list(getattr(data, "archives", [data]))
    for arch in archives:
        rows = online_rows(arch)
        if rows is None or rows.n_rows == 0:
            return False
        if not np.isin(np.unique(rows.step), np.asarray(arch.steps)).all():
            return True
    return False


@dataclass(frozen=True)
class OnlineLagSums:
    """Pair sums of the online measurements as origin-averaged pairs: the waiting times are the time
    origins and the recorded lags the lags (exact: nothing to match). ``pairs`` indexes ``step`` (the
    origins and measured steps); ``sums[r][name]`` float64 ``[P]`` (NaN where replica ``r`` measured
    nothing); ``epsilon [R, K]`` at the origins ``origins [K]``; ``n`` the number of selected parameters."""

    pairs: times.LagPairs
    step: np.ndarray
    origins: np.ndarray
    sums: list[dict[str, np.ndarray]]
    epsilon: np.ndarray
    n: int


def _recorded(data: Any, params: dict[str, Any]) -> tuple[list[Any], list[Any], dict[str, Any], np.ndarray]:
    """Every replica's online rows (one TwoTime for all, parameters checked), their spec and the recorded
    waiting times with at least one measurement."""
    archives = list(getattr(data, "archives", [data]))
    recorded = [online_rows(a) for a in archives]
    first = recorded[0]
    assert first is not None
    spec = first.spec
    for arch, rows in zip(archives, recorded, strict=True):
        if rows is None or rows.spec["waiting_times"] != spec["waiting_times"] or rows.spec["lags"] != spec["lags"]:
            raise AnalysisError(f"{arch.path}: its online waiting times and lags differ from "
                                f"{archives[0].path}'s; analyse replicas recorded with the same TwoTime")
    _check_params(archives[0].path, spec, params)
    tws_all = np.asarray(spec["waiting_times"], dtype=np.int64)
    measured = np.unique(np.concatenate([np.unique(r.tw_step) for r in recorded if r is not None]))
    tws_all = tws_all[np.isin(tws_all, measured)]
    if tws_all.size == 0:
        raise AnalysisError(f"{archives[0].path}: no waiting time has online measurements yet")
    return archives, recorded, spec, tws_all


def _fill(recorded: list[Any], index: dict[tuple[int, int], int], n_cells: int, k_of: dict[int, int],
          ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Each replica's sums at the cells ``index`` ((tw, step) -> pair) and ε at the waiting times ``k_of``."""
    sums, eps = [], np.full((len(recorded), len(k_of)), np.nan)
    for r, rows in enumerate(recorded):
        out = {name: np.full(n_cells, np.nan) for name in SUMS}
        for m, (tw, s) in enumerate(zip(rows.tw_step.tolist(), rows.step.tolist(), strict=True)):
            if tw in k_of:
                eps[r, k_of[tw]] = rows.epsilon[m]
            p = index.get((tw, s))
            if p is None:
                continue
            for name in SUMS:
                out[name][p] = rows.sums[name][m]
        sums.append(out)
    return sums, eps


def online_lag_sums(data: Any, params: dict[str, Any], origin_min_step: int | None = None) -> OnlineLagSums:
    """The online pair sums of every replica of ``data`` as origin-averaged pairs (``mode = lag``): every
    recorded waiting time at or after ``origin_min_step`` is an origin, each recorded lag a lag (lags no
    origin reached are left out)."""
    archives, recorded, spec, tws = _recorded(data, params)
    if origin_min_step is not None:
        tws = tws[tws >= origin_min_step]
        if tws.size == 0:
            raise AnalysisError(f"{archives[0].path}: no online waiting time is at or after origin_min_step="
                                f"{origin_min_step} (recorded: {spec['waiting_times']}); lower origin_min_step")
    lags = np.asarray(spec["lags"], dtype=np.int64)
    have = {(int(tw), int(s)) for r in recorded for tw, s in zip(r.tw_step, r.step, strict=True)}
    cells = [(int(tw), int(tw + lag), li) for li, lag in enumerate(lags) for tw in tws if (tw, tw + lag) in have]
    if not cells:
        raise AnalysisError(f"{archives[0].path}: no online measurement at a positive lag yet")
    used = np.unique([li for _, _, li in cells])
    renum = {int(li): i for i, li in enumerate(used)}
    grid = np.unique([x for tw, s, _ in cells for x in (tw, s)])
    lag_index = np.asarray([renum[li] for _, _, li in cells], dtype=np.int64)
    pairs = times.LagPairs(pairs=np.stack([np.searchsorted(grid, [tw for tw, _, _ in cells]),
                                           np.searchsorted(grid, [s for _, s, _ in cells])], axis=1).astype(np.int64),
                           lag_index=lag_index, lags=lags[used],
                           n_pairs=np.bincount(lag_index, minlength=used.size).astype(np.int64))
    sums, eps = _fill(recorded, {(tw, s): p for p, (tw, s, _) in enumerate(cells)}, len(cells),
                      {int(tw): i for i, tw in enumerate(tws)})
    return OnlineLagSums(pairs, grid.astype(np.int64), tws, sums, eps, int(spec["n_cols"]))


def online_waiting_sums(data: Any, params: dict[str, Any]) -> OnlineWaitingSums:
    """The online pair sums of every replica of ``data`` for the waiting times of ``params`` (module doc)."""
    _, recorded, spec, tws_all = _recorded(data, params)
    if params.get("waiting_times") is not None:
        k_rows = times.waiting_time_rows(tws_all, params["waiting_times"], snap=params.get("snap", "exact"))
    else:   # the recorded waiting times were chosen for this run: all of them, unless there are more than n
        n_tw = int(params.get("n_waiting_times", 8))
        k_rows = np.arange(tws_all.size) if tws_all.size <= n_tw else times.log_spaced_rows(tws_all, n_tw)
    tws = tws_all[k_rows]
    grid = np.unique(np.concatenate([r.step[np.isin(r.tw_step, tws)] for r in recorded if r is not None]))
    cells = sorted({(int(tw), int(s)) for r in recorded if r is not None
                    for tw, s in zip(r.tw_step, r.step, strict=True) if tw in set(tws.tolist())})
    k_of = {int(tw): i for i, tw in enumerate(tws)}
    a = np.searchsorted(grid, [tw for tw, _ in cells])
    b = np.searchsorted(grid, [s for _, s in cells])
    k = np.asarray([k_of[tw] for tw, _ in cells], dtype=np.int64)
    pairs = times.WaitingPairs(pairs=np.stack([a, b], axis=1).astype(np.int64), k=k, t=b.astype(np.int64),
                               tw_rows=np.searchsorted(grid, tws).astype(np.int64), tw_step=tws, step=grid)
    sums, eps = _fill(recorded, {cell: p for p, cell in enumerate(cells)}, len(cells), k_of)
    return OnlineWaitingSums(pairs, sums, eps, int(spec["n_cols"]))


def _check_params(path: str, spec: dict[str, Any], params: dict[str, Any]) -> None:
    """The analysis parameters must ask for what was measured; an error naming the recorded value."""
    where = f"{path}: the two-time sums were measured online"
    if params.get("select", "all") != spec["select"]:
        raise AnalysisError(f"{where} over select={spec['select']!r}; pass select={spec['select']!r} (other "
                            "subsets need snapshots)")
    eps = params.get("epsilon")
    if spec.get("epsilon") is not None:
        if eps is None or not np.isclose(float(eps), float(spec["epsilon"]), rtol=1e-12, atol=0):
            raise AnalysisError(f"{where} with epsilon={spec['epsilon']}; pass epsilon={spec['epsilon']}")
    elif eps is not None or not np.isclose(float(params.get("epsilon_factor", 10.0)), float(spec["epsilon_factor"]),
                                           rtol=1e-12, atol=0):
        raise AnalysisError(f"{where} with ε = std(w(tw))/{spec['epsilon_factor']}; pass "
                            f"epsilon_factor={spec['epsilon_factor']} and no epsilon")
