"""Landscape probes around a minimum ``w0``: loss profiles along random directions, and random walks.

Both probes evaluate a **batched loss** ``loss_fn(W) -> L``: ``W`` float32 ``[B, N]`` (``B`` parameter
vectors in the layout's order), ``L`` float64 ``[B]``; :func:`trajkit.experiments.rebuild` provides one
for a recorded run (``torch.func.functional_call`` vmapped over the batch), and any callable works (the
tests use closed-form quadratics). Vectors are built ``batch`` at a time, so memory stays ``O(batch·N)``.

Direction normalisation (``normalization``), applied to a raw Gaussian direction ``g`` and a minimum ``w0``:

- ``"filter"`` (Li et al. 2018, "Visualizing the loss landscape of neural nets"): for every tensor of 2 or
  more dims, each output unit / filter (slice along axis 0) is rescaled to the norm of the same slice of
  ``w0``: ``d_f = g_f · |w0_f| / |g_f|``; 1-D tensors (biases) are rescaled as a whole, ``d_t = g_t ·
  |w0_t| / |g_t|``. Radii and steps are then *relative* to the weights' scale (scale-invariant to the
  rescalings a ReLU network allows), and ``|d| = |w0|``.
- ``"layer"``: every tensor rescaled as a whole, ``d_t = g_t · |w0_t| / |g_t|``.
- ``"unit"``: ``d = g / |g|``, a uniformly random unit vector; radii are absolute parameter distances.

**Profiles** (:func:`direction_profiles`): ``L(w0 + t·d_j)`` for ``count`` directions ``d_j`` and
``points`` offsets ``t`` evenly spaced on ``[−r, r]`` (``points`` odd, so ``t = 0`` is on the grid).

**Random walks** (:func:`random_walks`): ``w_0 = w0``, ``w_{k+1} = w_k + δ·ξ_k`` with independent
normalised directions ``ξ_k`` (each drawn afresh, normalised against ``w0``), ``k = 0..steps−1``, for
every step size ``δ`` in ``deltas`` and ``walks`` independent walks: losses ``[n_delta, walks, steps+1]``.

All randomness comes from one ``numpy.random.Generator`` (``seed``), in a fixed order, so probes are
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from trajkit.errors import AnalysisError
from trajkit.landscape.permutations import Layout

LossFn = Callable[[np.ndarray], np.ndarray]
NORMALIZATIONS = ("filter", "layer", "unit")


def normalize_directions(g: np.ndarray, w0: np.ndarray, layout: Layout,
                         normalization: str = "filter") -> np.ndarray:
    """Raw directions ``g [D, N]`` normalised against ``w0 [N]`` (module docstring); float32 ``[D, N]``."""
    if normalization not in NORMALIZATIONS:
        raise AnalysisError(f"direction normalization {normalization!r} is not one of "
                            f"{', '.join(NORMALIZATIONS)}")
    g = np.array(g, dtype=np.float64, ndmin=2)
    w0 = np.asarray(w0, dtype=np.float64)
    if normalization == "unit":
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        return (g / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    out = np.empty_like(g)
    for e in layout:
        sl = slice(e["offset"], e["offset"] + e["size"])
        rows = int(e["shape"][0]) if normalization == "filter" and len(e["shape"]) >= 2 else 1
        gd = g[:, sl].reshape(g.shape[0], rows, -1)
        wd = w0[sl].reshape(1, rows, -1)
        gn = np.linalg.norm(gd, axis=2, keepdims=True)
        wn = np.linalg.norm(wd, axis=2, keepdims=True)
        out[:, sl] = (gd * (wn / np.where(gn > 0, gn, 1.0))).reshape(g.shape[0], -1)
    return out.astype(np.float32)


def random_directions(w0: np.ndarray, layout: Layout, count: int, normalization: str = "filter",
                      seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``count`` normalised random directions around ``w0``: float32 ``[count, N]``."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((count, np.asarray(w0).size))
    return normalize_directions(g, w0, layout, normalization)


def profile_offsets(radius: float, points: int) -> np.ndarray:
    """Offsets ``t`` float64 ``[points]``, evenly spaced on ``[−radius, radius]`` (``points`` odd, ≥ 3)."""
    if not radius > 0:
        raise AnalysisError(f"probe radius={radius}; it must be > 0")
    if points < 3 or points % 2 == 0:
        raise AnalysisError(f"probe points={points}; use an odd number >= 3 so that t = 0 is on the grid")
    return np.linspace(-radius, radius, points)


def evaluate(loss_fn: LossFn, vectors: np.ndarray) -> np.ndarray:
    """``loss_fn`` on float32 ``[B, N]`` as float64 ``[B]`` (checks the evaluator's output shape)."""
    out = np.asarray(loss_fn(np.ascontiguousarray(vectors, dtype=np.float32)), dtype=np.float64).reshape(-1)
    if out.shape[0] != vectors.shape[0]:
        raise AnalysisError(f"loss evaluator returned {out.shape[0]} values for {vectors.shape[0]} parameter "
                            "vectors; it must return one loss per row")
    return out


def direction_profiles(loss_fn: LossFn, w0: np.ndarray, directions: np.ndarray, radius: float, points: int,
                       batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(t [P], L [D, P])`` with ``L[j, i] = loss(w0 + t_i d_j)`` for directions ``[D, N]``."""
    t = profile_offsets(radius, points)
    w0 = np.asarray(w0, dtype=np.float32)
    directions = np.asarray(directions, dtype=np.float32)
    n_dir = directions.shape[0]
    flat_j, flat_i = np.divmod(np.arange(n_dir * t.size), t.size)
    losses = np.empty(n_dir * t.size)
    for lo in range(0, losses.size, max(1, batch)):
        j, i = flat_j[lo:lo + batch], flat_i[lo:lo + batch]
        vecs = w0[None, :] + t[i, None].astype(np.float32) * directions[j]
        losses[lo:lo + j.size] = evaluate(loss_fn, vecs)
    return t, losses.reshape(n_dir, t.size)


def random_walks(loss_fn: LossFn, w0: np.ndarray, layout: Layout, deltas: Sequence[float], walks: int,
                 steps: int, normalization: str = "filter", seed: int | np.random.Generator | None = 0,
                 batch: int = 64) -> np.ndarray:
    """Losses ``[n_delta, walks, steps+1]`` of random walks of step ``δ`` from ``w0`` (0: ``L(w0)``)."""
    deltas = [float(d) for d in deltas]
    if not deltas or any(not d > 0 for d in deltas):
        raise AnalysisError(f"random-walk deltas={deltas}; give one or more step sizes > 0")
    if walks < 1 or steps < 2:
        raise AnalysisError(f"random walks: walks={walks}, steps={steps}; need walks >= 1 and steps >= 2")
    rng = np.random.default_rng(seed)
    w0 = np.asarray(w0, dtype=np.float64)
    out = np.empty((len(deltas), walks, steps + 1))
    for a, delta in enumerate(deltas):
        for b in range(walks):
            pos = w0.copy()
            first = [pos.astype(np.float32)]
            for lo in range(0, steps, max(1, batch)):
                m = min(max(1, batch), steps - lo)
                xi = normalize_directions(rng.standard_normal((m, w0.size)), w0, layout, normalization)
                path = pos[None, :] + delta * np.cumsum(xi, axis=0, dtype=np.float64)
                pos = path[-1].copy()
                vecs = np.concatenate([np.stack(first), path.astype(np.float32)]) if first else path
                vals = evaluate(loss_fn, vecs)
                start = lo + 1 - len(first)
                out[a, b, start:start + vals.size] = vals
                first = []
    return out
