"""What the three landscape analyses share: the runs' parameters at one snapshot, consistency checks,
the rebuilt loss evaluator, per-run seeds and the probe cache.

The analyses' heavy work (alignment, distances, loss evaluations, probes) runs per run or per pair
through ``ctx.map``: in-process a loop, under ``--scheduler`` one Dask task each, which reads its runs'
parameters (:func:`run_params`) and rebuilds the model (:func:`rebuilt`) on the worker, so no parameter
array reaches the client.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.analysis import Param
from trajkit.errors import AnalysisError
from trajkit.landscape import permutation_spec_for

STEP = Param("step", "int", default=None, min=0,
             help="snapshot step analysed in every run (none: each run's last snapshot); must be a snapshot")


def snapshot_rows(ens: Any, step: int | None) -> tuple[np.ndarray, int]:
    """``(rows int64 [R], step)``: each run's row of snapshot ``step``, one step for every run.

    The runs' schedules may differ; they must share ``step``. None takes the runs' last snapshot, which
    must then be the same step in every run. A run without ``step`` is a one-line error naming it, its
    nearest snapshots and the last step every run has.
    """
    for a in ens.archives:
        if a.n_snapshots == 0:
            raise AnalysisError(f"{a.path}: archive has no committed snapshots")
    if step is None:
        last = [int(a.steps[-1]) for a in ens.archives]
        other = next((r for r, s in enumerate(last) if s != last[0]), None)
        if other is not None:
            raise AnalysisError(f"runs end at different steps ({ens.archives[0].path}: {last[0]}, "
                                f"{ens.archives[other].path}: {last[other]}); pass step=S, a snapshot of every run "
                                f"({_common_hint(ens)})")
        step = last[0]
    rows = np.empty(len(ens.archives), dtype=np.int64)
    for r, a in enumerate(ens.archives):
        steps = np.asarray(a.steps, dtype=np.int64)
        i = int(np.searchsorted(steps, step))
        if i == steps.size or steps[i] != step:
            near = " and ".join(str(int(steps[j])) for j in (i - 1, i) if 0 <= j < steps.size)
            raise AnalysisError(f"{a.path}: step {step} is not a snapshot (nearest snapshots: {near}); pass "
                                f"step=S, a snapshot of every run ({_common_hint(ens)})")
        rows[r] = i
    return rows, int(step)


def _common_hint(ens: Any) -> str:
    common = ens.steps
    return f"the last step every run has is {int(common[-1])}" if common.size else \
        "no step is a snapshot of every run"


def run_params(arch: Any, row: int) -> np.ndarray:
    """float32 ``[N]``: one run's parameters at ``row`` (read where the task runs: on a worker under Dask);
    NaN/inf (a diverged run) is an error naming it."""
    w = np.asarray(arch.params[int(row):int(row) + 1, :], dtype=np.float32)[0]
    if not np.all(np.isfinite(w)):
        raise AnalysisError(f"{arch.path}: parameters at step {int(arch.steps[row])} hold NaN/inf (a diverged "
                            "run); leave it out of the ensemble")
    return w


def check_same_model(ens: Any, keys: tuple[str, ...] = ("model",)) -> None:
    """Raise unless every run has the same ``model`` (spec/factory/class) and the given other metadata."""
    ref = ens.archives[0]
    for a in ens.archives[1:]:
        for key in keys:
            ma, mb = _identity(ref.metadata, key), _identity(a.metadata, key)
            if ma != mb:
                raise AnalysisError(f"runs have different {key} metadata: {ref.path} has {_short(ma)}, {a.path} "
                                    f"has {_short(mb)}; analyse one architecture / dataset at a time")


def _identity(meta: dict[str, Any], key: str) -> Any:
    v = meta.get(key)
    if key == "model" and isinstance(v, dict):
        return {k: v.get(k) for k in ("spec", "factory", "kwargs", "class")}
    if key == "dataset" and isinstance(v, dict):
        return v.get("spec", v)
    return v


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def permutation_spec(ens: Any) -> Any:
    """The registered permutation symmetries of the ensemble's model (error naming how to register one)."""
    return permutation_spec_for(ens.archives[0])


_REBUILT: dict[tuple[Any, ...], Any] = {}


def rebuilt(arch: Any, row: int, device: str) -> Any:
    """The rebuilt run ``arch`` at ``row`` (:class:`~trajkit.experiments.rebuild.Rebuilt`), whose
    ``loss(W, split)`` every run shares; built where the task runs (a Dask worker or the client) and kept
    for the next task of the same run, step and device (one entry)."""
    from trajkit.experiments import rebuild  # torch, only when a loss is evaluated

    step = int(arch.steps[int(row)])
    key = (str(arch.path), str(arch.metadata.get("run_id")), step, device)
    if key not in _REBUILT:
        rb = rebuild(arch, step, device=device)
        if rb.data is None:
            raise AnalysisError(f"{arch.path}: metadata has no dataset.spec, so the loss cannot be "
                                "evaluated; record it with `trajkit record` or rebuild it with "
                                "trajkit.experiments.rebuild(..., data=...)")
        _REBUILT.clear()
        _REBUILT[key] = rb
    return _REBUILT[key]


def run_seed(seed: int, run: int) -> np.random.Generator:
    """The generator of run ``run`` under the analysis seed ``seed`` (independent streams)."""
    return np.random.default_rng([int(seed), int(run)])


def parse_pairs(text: str, n_runs: int) -> np.ndarray:
    """int64 ``[P, 2]`` from ``all`` (every a < b), ``consecutive`` (r, r+1) or ``"0:1,0:2"``."""
    text = str(text).strip()
    if text == "all":
        a, b = np.triu_indices(n_runs, k=1)
        return np.stack([a, b], axis=1).astype(np.int64)
    if text == "consecutive":
        r = np.arange(n_runs - 1)
        return np.stack([r, r + 1], axis=1).astype(np.int64)
    out = []
    for part in text.split(","):
        try:
            a, b = (int(x) for x in part.split(":"))
        except ValueError:
            raise AnalysisError(f"parameter 'pairs': cannot read {part!r}; use all, consecutive or "
                                "a:b,c:d (run indices)") from None
        if not (0 <= a < n_runs and 0 <= b < n_runs) or a == b:
            raise AnalysisError(f"parameter 'pairs': {a}:{b} is not a pair of two different runs among "
                                f"0..{n_runs - 1}")
        out.append((a, b))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def check_cache_dir(cache: str | None, ens: Any) -> Path | None:
    """The probe cache directory, refused when it lies inside an input archive (archives are never written)."""
    if cache is None:
        return None
    d = Path(cache).resolve()
    for a in ens.archives:
        root = Path(str(a.path)).resolve()
        if d == root or root in d.parents:
            raise AnalysisError(f"parameter 'cache'={cache!r} is inside the archive {a.path}; analyses never "
                                "write into archives, choose a directory outside it (e.g. the --out directory)")
    return d


def cache_key(run_id: str, step: int, params: dict[str, Any]) -> str:
    """File name of a run's probes for these probe parameters."""
    blob = json.dumps({"run": run_id, "step": step, **params}, sort_keys=True, default=str)
    return f"probes-{str(run_id)[:8]}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"
