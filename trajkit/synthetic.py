"""Synthetic trajectories with known answers, for validating analysis pipelines.

Every generator samples the process *exactly* at the requested snapshot steps (no step-by-step
simulation): for a Gaussian process the increment between two snapshots is itself Gaussian with a known
variance, so a trajectory of T snapshots costs ``O(T·N)`` whatever the step numbers are.

Processes (each returns float64 ``[T, N]`` for steps ``[T]``; ``replicas=R`` gives ``[R, T, N]``):

- :func:`brownian` — independent Brownian parameters ``w(s+1) = w(s) + sqrt(2D)·ξ``; increments over
  ``Δs`` steps are ``N(0, 2D·Δs)``. Closed forms: ``msd = 2Dt`` (:func:`brownian_msd`),
  ``Q = erf(ε/sqrt(4Dt))`` (:func:`brownian_self_overlap`), ``τ_c = ε² / (4 D erfinv(c)²)``
  (:func:`brownian_tau`; τ90 = 0.18481 ε²/D, τe = 2.18154 ε²/D), ``α2 = 0``, ``D4/msd² = 3``,
  ``Y = 3/N`` (to leading order).
- :func:`frozen` — a constant trajectory: ``msd = 0``, ``Q = 1``.
- :func:`ornstein_uhlenbeck` — ``dw = −k w ds + sqrt(2D) dB`` started in its stationary law
  ``N(0, D/k)``, discretised exactly: ``w(s+Δ) = e^{−kΔ} w(s) + sqrt(D/k (1 − e^{−2kΔ}))·ξ``;
  ``C(t) = (D/k) e^{−kt}``, ``msd = 2(D/k)(1 − e^{−kt})``; stationary (no aging).
- :func:`effective_time_process` — Brownian (or OU, with ``rate``) motion run in the effective time
  :func:`effective_time` ``s(t) = t^(1−μ)/(1−μ)`` (``μ = 1``: ``s = ln t``). Two-time functions depend
  only on ``s(tw+t) − s(tw) = ln[h(tw+t)/h(tw)]`` with ``h(u) = exp(u^(1−μ)/(1−μ))``, and for
  ``t ≪ tw`` on ``t/tw^μ`` alone: an aging process with known exponent μ.
- :func:`langevin_flat` — overdamped Langevin ``w ← w − η∇L + sqrt(2Tη/P)·ξ`` on a flat loss (∇L = 0),
  i.e. Brownian with ``D = Tη/P``: relaxation times scale as ``τ ∝ 1/T`` (slope −1 in ln τ vs ln T).
- :func:`loss_curve` — ``L(t) = L∞ + A t^−β`` with optional multiplicative log-normal noise.

Archives: :func:`write_archive` writes one trajectory as a real trajkit archive (through
:func:`trajkit.archive.create`), :func:`write_ensemble` a directory of archives plus ``ensemble.json``
in the shared ensemble format. :func:`brownian_ensemble`, :func:`heterogeneous_ensemble` (each replica
with its own D; χ4 in closed form by :func:`chi4_heterogeneous`) and :func:`langevin_flat_ensemble` (a
temperature sweep with replicas) and :func:`loss_curve_ensemble` (``train_loss`` metrics following a known
power law) are ready-made ensembles.

>>> import numpy as np
>>> from trajkit import synthetic
>>> w = synthetic.brownian([0, 10, 100], n_params=100_000, diffusion=0.5, seed=1)
>>> bool(abs(np.mean((w[2] - w[0]) ** 2) / synthetic.brownian_msd(100, 0.5) - 1) < 0.02)
True
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf, erfinv

from trajkit.errors import TrajkitError

__all__ = [
    "TAU90_FACTOR", "TAUE_FACTOR", "brownian", "brownian_ensemble", "brownian_msd", "brownian_self_overlap",
    "brownian_tau", "chi4_heterogeneous", "effective_time", "effective_time_process", "frozen",
    "heterogeneous_ensemble", "langevin_flat", "langevin_flat_ensemble", "loss_curve", "loss_curve_ensemble",
    "ornstein_uhlenbeck", "two_time_steps", "write_archive", "write_ensemble",
]

#: τ90 = TAU90_FACTOR · ε²/D for Brownian parameters (1 / (4 erfinv(0.9)²)).
TAU90_FACTOR = float(1.0 / (4.0 * erfinv(0.9) ** 2))
#: τe = TAUE_FACTOR · ε²/D for Brownian parameters (1 / (4 erfinv(1/e)²)).
TAUE_FACTOR = float(1.0 / (4.0 * erfinv(np.exp(-1.0)) ** 2))


# -- helpers -------------------------------------------------------------------------------------------------

def _steps(steps: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(steps, dtype=np.int64).ravel()
    if arr.size == 0:
        raise TrajkitError("synthetic: steps is empty; pass the snapshot steps, e.g. schedules.log(1, 1000, 40)"
                           ".steps(1000)")
    if arr[0] < 0 or np.any(np.diff(arr) <= 0):
        raise TrajkitError("synthetic: steps must be non-negative and strictly increasing")
    return arr


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise TrajkitError(f"synthetic: {name} must be > 0, got {value}")
    return value


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _gaussian_walk(scales: np.ndarray, n_params: int, rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    """Cumulative sum of independent Gaussian increments: row k = start + Σ_{j≤k} scales[j]·ξ_j."""
    out = np.empty((scales.size, n_params))
    out[0] = start
    for k in range(1, scales.size):
        out[k] = out[k - 1] + scales[k] * rng.standard_normal(n_params)
    return out


def _replicated(fn: Callable[[np.random.Generator], np.ndarray], replicas: int | None,
                seed: int | np.random.Generator | None) -> np.ndarray:
    if replicas is None:
        return fn(_rng(seed))
    if replicas < 1:
        raise TrajkitError(f"synthetic: replicas must be >= 1, got {replicas}")
    children = np.random.SeedSequence(seed if isinstance(seed, int) else None).spawn(replicas)
    return np.stack([fn(np.random.default_rng(c)) for c in children])


# -- processes -----------------------------------------------------------------------------------------------

def brownian(steps: Sequence[int] | np.ndarray, n_params: int, diffusion: float, *, init_scale: float = 0.0,
             replicas: int | None = None, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Independent Brownian parameters sampled exactly at ``steps``.

    ``w(steps[0]) ~ N(0, init_scale²)``; ``w(s_k) = w(s_{k−1}) + sqrt(2D (s_k − s_{k−1}))·ξ``.
    Returns float64 ``[T, N]`` (or ``[R, T, N]`` with ``replicas``).
    """
    s = _steps(steps)
    d = _positive("diffusion", diffusion)
    scales = np.sqrt(2.0 * d * np.diff(s, prepend=s[0]).astype(float))

    def one(rng: np.random.Generator) -> np.ndarray:
        return _gaussian_walk(scales, n_params, rng, init_scale * rng.standard_normal(n_params))

    return _replicated(one, replicas, seed)


def frozen(steps: Sequence[int] | np.ndarray, n_params: int, *, scale: float = 1.0,
           seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """A trajectory that never moves: every row equals one Gaussian draw of std ``scale``. ``[T, N]``."""
    s = _steps(steps)
    w = scale * _rng(seed).standard_normal(n_params)
    return np.repeat(w[None, :], s.size, axis=0)


def _ou_rows(times: np.ndarray, n_params: int, diffusion: float, rate: float,
             rng: np.random.Generator) -> np.ndarray:
    var = diffusion / rate
    out = np.empty((times.size, n_params))
    out[0] = np.sqrt(var) * rng.standard_normal(n_params)
    for k in range(1, times.size):
        decay = np.exp(-rate * (times[k] - times[k - 1]))
        out[k] = decay * out[k - 1] + np.sqrt(var * (1.0 - decay**2)) * rng.standard_normal(n_params)
    return out


def ornstein_uhlenbeck(steps: Sequence[int] | np.ndarray, n_params: int, diffusion: float, rate: float, *,
                       replicas: int | None = None,
                       seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Stationary Ornstein–Uhlenbeck parameters ``dw = −k w ds + sqrt(2D) dB`` (``k = rate``), exact at ``steps``.

    Started in the stationary law ``N(0, D/k)``; ``C(t) = (D/k) e^{−kt}``, ``msd(t) = 2(D/k)(1 − e^{−kt})``.
    Returns float64 ``[T, N]`` (or ``[R, T, N]``).
    """
    s = _steps(steps).astype(float)
    d, k = _positive("diffusion", diffusion), _positive("rate", rate)
    return _replicated(lambda rng: _ou_rows(s, n_params, d, k, rng), replicas, seed)


def effective_time(steps: Sequence[int] | np.ndarray | float, mu: float) -> np.ndarray:
    """``s(t) = t^(1−μ)/(1−μ)`` (``μ = 1``: ``ln t``); defined for ``t > 0``. Same shape as ``steps``."""
    t = np.asarray(steps, dtype=float)
    if np.any(t <= 0):
        raise TrajkitError("synthetic.effective_time: steps must be > 0 (s(t) is singular at t = 0 for μ ≥ 1); "
                           "use a schedule without step 0, e.g. schedules.log(1, stop, n, include_zero=False)")
    if abs(mu - 1.0) < 1e-12:
        return np.log(t)
    return t ** (1.0 - mu) / (1.0 - mu)


def effective_time_process(steps: Sequence[int] | np.ndarray, n_params: int, mu: float, diffusion: float, *,
                           rate: float | None = None, replicas: int | None = None,
                           seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Brownian (``rate=None``) or stationary OU (``rate=k``) motion in effective time ``s(t)``.

    With ``Δs = s(tw+t) − s(tw)``: Brownian gives ``msd = 2D·Δs`` and ``Q = erf(ε/sqrt(4DΔs))``; OU gives
    ``msd = 2(D/k)(1 − e^{−kΔs})``. Steps must be > 0. Returns float64 ``[T, N]`` (or ``[R, T, N]``).
    """
    s = effective_time(_steps(steps), mu)
    d = _positive("diffusion", diffusion)
    if rate is not None:
        k = _positive("rate", rate)
        return _replicated(lambda rng: _ou_rows(s - s[0], n_params, d, k, rng), replicas, seed)
    scales = np.sqrt(2.0 * d * np.diff(s, prepend=s[0]))
    return _replicated(lambda rng: _gaussian_walk(scales, n_params, rng, np.zeros(n_params)), replicas, seed)


def langevin_flat(steps: Sequence[int] | np.ndarray, n_params: int, temperature: float, lr: float,
                  n_train: int, *, replicas: int | None = None,
                  seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Overdamped Langevin on a flat loss, trajkit's convention ``w ← w − η∇L + sqrt(2Tη/P)·ξ`` with ∇L = 0.

    Brownian with ``D = T·η/P`` (``P = n_train``); ``temperature = 0`` is a frozen trajectory.
    Returns float64 ``[T, N]`` (or ``[R, T, N]``).
    """
    if temperature < 0:
        raise TrajkitError(f"synthetic.langevin_flat: temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return _replicated(lambda rng: frozen(steps, n_params, seed=rng), replicas, seed)
    return brownian(steps, n_params, temperature * lr / n_train, replicas=replicas, seed=seed)


def loss_curve(steps: Sequence[int] | np.ndarray, loss_inf: float, amplitude: float, beta: float, *,
               noise: float = 0.0, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``L(t) = L∞ + A t^−β`` at ``steps`` (``t = 0`` is evaluated at ``t = 1``), times ``exp(noise·ξ)``. ``[T]``."""
    t = np.maximum(_steps(steps).astype(float), 1.0)
    out = loss_inf + amplitude * t ** (-beta)
    if noise:
        out = out * np.exp(noise * _rng(seed).standard_normal(t.size))
    return out


def two_time_steps(waiting_times: Sequence[int], max_lag: int | None = None, n_lags: int = 24,
                   base: Sequence[int] | np.ndarray = ()) -> np.ndarray:
    """A snapshot schedule resolving short lags after every waiting time.

    The union of ``base``, the waiting times, and ``tw + round(geomspace(1, max_lag or tw, n_lags))``
    for each ``tw``: aging tests need ``t ≪ tw`` to be sampled, which a plain log schedule does not do
    at large ``tw``. Returns sorted unique int64 steps.
    """
    parts = [np.asarray(base, dtype=np.int64).ravel(), np.asarray(waiting_times, dtype=np.int64)]
    for tw in waiting_times:
        lag = max_lag if max_lag is not None else max(int(tw), 1)
        parts.append(int(tw) + np.rint(np.geomspace(1, lag, n_lags)).astype(np.int64))
    return np.unique(np.concatenate(parts))


# -- closed forms ----------------------------------------------------------------------------------------------

def brownian_msd(t: float | np.ndarray, diffusion: float) -> np.ndarray:
    """``Δ(t) = 2Dt``."""
    return 2.0 * diffusion * np.asarray(t, dtype=float)


def brownian_self_overlap(t: float | np.ndarray, diffusion: float, epsilon: float) -> np.ndarray:
    """``Q(t) = P(|Δw| < ε) = erf(ε / sqrt(4Dt))`` (1 at t = 0)."""
    t = np.asarray(t, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(t > 0, erf(epsilon / np.sqrt(4.0 * diffusion * np.maximum(t, 1e-300))), 1.0)


def brownian_tau(c: float, diffusion: float, epsilon: float) -> float:
    """Relaxation time ``τ_c`` with ``Q(τ_c) = c``: ``ε² / (4 D erfinv(c)²)``."""
    return float(epsilon**2 / (4.0 * diffusion * erfinv(c) ** 2))


def chi4_heterogeneous(t: float | np.ndarray, diffusions: Sequence[float], epsilon: float,
                       n_params: int) -> np.ndarray:
    """Expected ``χ4(t) = N[⟨Q²⟩ − ⟨Q⟩²]`` (population variance over the R replicas) for Brownian replicas
    with diffusion constants ``D_r`` and independent parameters.

    With ``p_r = erf(ε/sqrt(4 D_r t))``, ``Q_r`` has mean ``p_r`` and variance ``p_r(1 − p_r)/N``, so
    ``E[χ4] = N[mean(p²) − mean(p)²] + (1 − 1/R)·mean(p(1 − p))``. Shape of ``t``.
    """
    t = np.asarray(t, dtype=float)
    d = np.asarray(diffusions, dtype=float)
    p = brownian_self_overlap(t[..., None], d, epsilon)
    r = d.size
    return n_params * (np.mean(p**2, axis=-1) - np.mean(p, axis=-1) ** 2) \
        + (1.0 - 1.0 / r) * np.mean(p * (1.0 - p), axis=-1)


# -- archives --------------------------------------------------------------------------------------------------

def write_archive(path: str | os.PathLike, steps: Sequence[int] | np.ndarray, params: np.ndarray, *,
                  metadata: dict[str, Any] | None = None, metrics: dict[str, np.ndarray] | None = None,
                  layout: list[dict[str, Any]] | None = None, times: np.ndarray | None = None) -> Path:
    """Write ``params [T, N]`` at ``steps [T]`` (and optional per-snapshot ``metrics``) as a trajkit archive.

    ``metadata`` is merged into the archive's metadata (top-level dotted keys are expanded; nested dicts
    such as ``{"ensemble": {"coords": {"dynamics.temperature": 0.1}}}`` are kept verbatim). The schedule is
    recorded as an explicit one. Returns the archive path.
    """
    from trajkit.archive import create

    s = _steps(steps)
    params = np.asarray(params)
    if params.ndim != 2 or params.shape[0] != s.size:
        raise TrajkitError(f"synthetic.write_archive: params must be [T={s.size}, N], got {params.shape}")
    meta = {"schedule": {"kind": "explicit", "steps": [int(x) for x in s]}}
    meta.update(metadata or {})
    metrics = {k: np.asarray(v, dtype=float) for k, v in (metrics or {}).items()}
    with create(path, n_params=params.shape[1], metadata=meta, layout=layout,
                capacity=s.size) as writer:
        for k, step in enumerate(s):
            writer.append(int(step), params[k].astype(np.float32, copy=False),
                          time=None if times is None else float(times[k]),
                          metrics={name: float(v[k]) for name, v in metrics.items()} or None)
    return Path(path)


def write_ensemble(directory: str | os.PathLike, runs: Sequence[dict[str, Any]], *,
                   sweep: dict[str, list[Any]] | None = None, config: dict[str, Any] | None = None,
                   name: str = "run") -> Path:
    """Write an ensemble directory: one archive per run plus ``ensemble.json`` (format ``trajkit-ensemble`` v1).

    Each run is a dict with ``steps``, ``params [T, N]``, and optionally ``replica`` (default: its index
    among runs with the same ``coords``), ``coords`` (sweep coordinates, e.g.
    ``{"dynamics.temperature": 1e-3}``, also stored under ``ensemble.coords`` and merged into the
    archive's metadata), ``metadata``, ``metrics``, ``layout``. Returns the directory.
    """
    from trajkit.archive import open_archive
    from trajkit.archive.ensemble_file import write_ensemble_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ens_id = str(uuid.uuid4())
    entries, seen = [], {}
    for i, run in enumerate(runs):
        coords = dict(run.get("coords") or {})
        key = json.dumps(coords, sort_keys=True)
        replica = int(run.get("replica", seen.get(key, 0)))
        seen[key] = replica + 1
        tag = "_".join(f"{k.split('.')[-1]}{v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}{v}"
                       for k, v in sorted(coords.items()))
        rel = f"{name}{i:03d}{'_' + tag if tag else ''}_r{replica}.trajkit"
        meta: dict[str, Any] = {"ensemble": {"id": ens_id, "replica": replica, "coords": coords}, "seed": i}
        if config is not None:
            meta["config"] = config
        for k, v in coords.items():
            meta[k] = v
        meta.update(run.get("metadata") or {})
        path = write_archive(root / rel, run["steps"], run["params"], metadata=meta, metrics=run.get("metrics"),
                             layout=run.get("layout"))
        entries.append({"path": rel, "replica": replica, "coords": coords, "run_id": open_archive(path).run_id,
                        "status": "done", "reason": None})
    doc = {"format": "trajkit-ensemble", "version": 1, "id": ens_id, "config": config or {},
           "sweep": sweep or {}, "runs": entries}
    write_ensemble_file(root, doc)
    return root


def brownian_ensemble(directory: str | os.PathLike, steps: Sequence[int] | np.ndarray, n_params: int,
                      diffusion: float, replicas: int, *, seed: int = 0, init_scale: float = 0.0) -> Path:
    """``replicas`` Brownian archives with one diffusion constant ``D`` (metadata ``synthetic.*``)."""
    w = brownian(steps, n_params, diffusion, init_scale=init_scale, replicas=replicas, seed=seed)
    runs = [{"steps": steps, "params": w[r],
             "metadata": {"synthetic": {"process": "brownian", "diffusion": diffusion}}} for r in range(replicas)]
    return write_ensemble(directory, runs)


def heterogeneous_ensemble(directory: str | os.PathLike, steps: Sequence[int] | np.ndarray, n_params: int,
                           diffusions: Sequence[float], *, seed: int = 0) -> Path:
    """One Brownian replica per entry of ``diffusions`` (each relaxing at its own rate); χ4 is
    :func:`chi4_heterogeneous`."""
    children = np.random.SeedSequence(seed).spawn(len(diffusions))
    runs = [{"steps": steps, "params": brownian(steps, n_params, d, seed=np.random.default_rng(c)),
             "metadata": {"synthetic": {"process": "brownian", "diffusion": float(d)}}}
            for d, c in zip(diffusions, children, strict=True)]
    return write_ensemble(directory, runs)


def langevin_flat_ensemble(directory: str | os.PathLike, steps: Sequence[int] | np.ndarray, n_params: int,
                           temperatures: Sequence[float], replicas: int, *, lr: float = 0.1,
                           n_train: int = 100, seed: int = 0) -> Path:
    """A temperature sweep of flat-loss Langevin runs with ``replicas`` each (``dynamics.*`` metadata set)."""
    children = iter(np.random.SeedSequence(seed).spawn(len(temperatures) * replicas))
    runs = []
    for temp in temperatures:
        for r in range(replicas):
            w = langevin_flat(steps, n_params, temp, lr, n_train, seed=np.random.default_rng(next(children)))
            runs.append({"steps": steps, "params": w, "replica": r,
                         "coords": {"dynamics.temperature": float(temp)},
                         "metadata": {"dynamics": {"kind": "langevin", "lr": lr, "temperature": float(temp)},
                                      "dataset": {"name": "flat", "n_train": n_train},
                                      "synthetic": {"process": "langevin_flat"}}})
    return write_ensemble(directory, runs, sweep={"dynamics.temperature": [float(t) for t in temperatures]})


def loss_curve_ensemble(directory: str | os.PathLike, steps: Sequence[int] | np.ndarray, loss_inf: float,
                        amplitude: float, beta: float, replicas: int, *, noise: float = 0.0, n_params: int = 4,
                        seed: int = 0) -> Path:
    """Replicas whose ``snapshots/metrics/train_loss`` is :func:`loss_curve` (independent noise per replica);
    their parameters are a small Brownian walk (the loss analyses ignore them)."""
    children = np.random.SeedSequence(seed).spawn(replicas)
    runs = []
    for c in children:
        rng = np.random.default_rng(c)
        runs.append({"steps": steps, "params": brownian(steps, n_params, 1e-3, seed=rng),
                     "metrics": {"train_loss": loss_curve(steps, loss_inf, amplitude, beta, noise=noise, seed=rng)},
                     "metadata": {"synthetic": {"process": "loss_curve", "loss_inf": loss_inf,
                                                "amplitude": amplitude, "beta": beta, "noise": noise}}})
    return write_ensemble(directory, runs)
