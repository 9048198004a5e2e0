"""Weight matching: the permutation of ``w_b``'s hidden units that brings it closest to ``w_a``.

Ainsworth, Hayase & Srinivasa (git-re-basin, arXiv 2209.04836), "weight matching": maximise the overlap
``Σ_t ⟨W_a^t, π(W_b)^t⟩`` over permutation sets ``π`` (equivalently minimise ``|w_a − π(w_b)|²``, since
permutations preserve norms). For one group ``P`` with the others held fixed the objective is linear in
``P``: ``Σ_ij A_ij P_ij`` with the ``[n, n]`` matrix

    A = Σ_{(t, axis) ∈ P}  U(W_a^t, axis) · U(π_{−axis}(W_b^t), axis)ᵀ

where ``U(·, axis)`` is the ``[n, rest]`` unit view (:func:`~trajkit.landscape.permutations.unit_view`) and
``π_{−axis}`` applies the current permutations of the tensor's other axes (for a recurrent weight whose
two axes share ``P``, the current ``P`` on the other axis: the objective is then linearised around it).
Each sub-problem is a linear assignment, solved exactly by :func:`scipy.optimize.linear_sum_assignment`;
the groups are updated in turn (coordinate ascent, random order each sweep) and an update is kept only
if it raises the true objective, so the objective never decreases and the iteration stops when a whole
sweep changes nothing.

Initialisation ``"forward"`` (default) first solves the groups in the spec's order using only the axes
whose tensor's other permuted axes belong to groups already solved (for a feed-forward chain: the
incoming weights and biases of each layer, whose input side is already aligned). For an exactly permuted
copy of a network with distinct units this recovers the permutation in one forward pass (the
rearrangement inequality: ``Σ_i ⟨x_i, x_σ(i)⟩ ≤ Σ_i |x_i|²`` with equality only for ``σ`` = identity on
distinct rows), so the aligned distance is zero. ``"identity"`` starts from no permutation, as git-re-basin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from trajkit.errors import AnalysisError
from trajkit.landscape.permutations import (
    Layout,
    Perms,
    PermutationSpec,
    apply_permutations,
    identity_permutations,
    permute_tensor,
    unit_view,
)


def _tensors(w: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    return {e["name"]: np.asarray(w[e["offset"]:e["offset"] + e["size"]], dtype=np.float64)
            .reshape(e["shape"]) for e in layout}


def _cost(group: str, axes: Any, ta: Mapping[str, np.ndarray], tb: Mapping[str, np.ndarray],
          spec: PermutationSpec, perms: Perms) -> np.ndarray:
    n = spec.sizes[group]
    cost = np.zeros((n, n))
    for ax in axes:
        others = {k: v for k, v in spec.axes_of(ax.tensor).items() if k != ax.axis}
        b = permute_tensor(tb[ax.tensor], others, spec, perms)
        cost += unit_view(ta[ax.tensor], ax.axis, n, ax.stacked) @ unit_view(b, ax.axis, n, ax.stacked).T
    return cost


def objective(wa: np.ndarray, wb: np.ndarray, layout: Layout, spec: PermutationSpec,
              perms: Mapping[str, Any]) -> float:
    """The matched overlap ``⟨w_a, π(w_b)⟩`` (float64)."""
    permuted = apply_permutations(np.asarray(wb, np.float64), layout, spec, perms)
    return float(np.dot(np.asarray(wa, np.float64), permuted))


def weight_matching(wa: np.ndarray, wb: np.ndarray, layout: Layout, spec: PermutationSpec, *,
                    init: str = "forward", max_sweeps: int = 100,
                    seed: int | np.random.Generator | None = 0) -> tuple[Perms, dict[str, Any]]:
    """Permutation set ``π`` maximising ``⟨w_a, π(w_b)⟩``; returns ``(perms, info)``.

    ``wa``, ``wb``: flat parameter vectors ``[N]`` in ``layout``'s order. ``perms``: ``{group: int64 [n]}``
    (apply with :func:`~trajkit.landscape.permutations.apply_permutations`). ``info``: ``sweeps`` (coordinate
    sweeps run), ``converged`` (a sweep changed nothing), ``objective`` and ``objective_identity``
    (``⟨w_a, π(w_b)⟩`` after and before matching).
    """
    if init not in ("forward", "identity"):
        raise AnalysisError(f"weight matching: init={init!r}; use 'forward' or 'identity'")
    n_params = sum(int(e["size"]) for e in layout)
    for label, w in (("w_a", wa), ("w_b", wb)):
        if np.shape(w) != (n_params,):
            raise AnalysisError(f"weight matching: {label} has shape {np.shape(w)}, expected [{n_params}] "
                                "(the layout's parameter count)")
        if not np.all(np.isfinite(w)):
            raise AnalysisError(f"weight matching: {label} holds NaN/inf (a diverged run); exclude it")
    ta, tb = _tensors(np.asarray(wa), layout), _tensors(np.asarray(wb), layout)
    perms = identity_permutations(spec)
    if init == "forward":
        solved: set[str] = set()
        for g, axes in spec.groups.items():
            ready = [ax for ax in axes
                     if all(og in solved for k, (og, _) in spec.axes_of(ax.tensor).items() if k != ax.axis)]
            if ready:
                _, col = linear_sum_assignment(_cost(g, ready, ta, tb, spec, perms), maximize=True)
                perms[g] = col.astype(np.int64)
            solved.add(g)
    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    current = objective(wa, wb, layout, spec, perms)
    converged = not names
    sweeps = 0
    while not converged and sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for i in rng.permutation(len(names)):
            g = names[i]
            _, col = linear_sum_assignment(_cost(g, spec.groups[g], ta, tb, spec, perms), maximize=True)
            if np.array_equal(col, perms[g]):
                continue
            trial = {**perms, g: col.astype(np.int64)}
            value = objective(wa, wb, layout, spec, trial)
            if value > current + 1e-12 * max(1.0, abs(current)):
                perms, current, changed = trial, value, True
        converged = not changed
    info = {"sweeps": sweeps, "converged": bool(converged),
            "objective": current,
            "objective_identity": float(np.dot(np.asarray(wa, np.float64), np.asarray(wb, np.float64)))}
    return perms, info


def align_vectors(wa: np.ndarray, wb: np.ndarray, layout: Layout, spec: PermutationSpec,
                  **kw: Any) -> tuple[np.ndarray, Perms, dict[str, Any]]:
    """``(π(w_b), π, info)``: ``w_b`` (dtype kept) permuted to match ``w_a``; see :func:`weight_matching`.

    ``info`` adds ``distance`` and ``distance_raw``: ``|w_a − π(w_b)|/√N`` and ``|w_a − w_b|/√N``.
    """
    perms, info = weight_matching(wa, wb, layout, spec, **kw)
    aligned = apply_permutations(wb, layout, spec, perms)
    n = max(1, len(aligned))
    a64 = np.asarray(wa, np.float64)
    info["distance"] = float(np.linalg.norm(a64 - aligned) / np.sqrt(n))
    info["distance_raw"] = float(np.linalg.norm(a64 - np.asarray(wb, np.float64)) / np.sqrt(n))
    return aligned, perms, info


def align_to_reference(ws: np.ndarray, layout: Layout, spec: PermutationSpec, reference: int = 0,
                       **kw: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every row of ``ws [R, N]`` aligned to row ``reference``: ``(aligned [R, N], infos [R])``."""
    ws = np.asarray(ws)
    out = np.empty_like(ws)
    infos = []
    for r in range(ws.shape[0]):
        if r == reference:
            out[r] = ws[r]
            infos.append({"sweeps": 0, "converged": True, "distance": 0.0, "distance_raw": 0.0})
            continue
        out[r], _, info = align_vectors(ws[reference], ws[r], layout, spec, **kw)
        infos.append(info)
    return out, infos
