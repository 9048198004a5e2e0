"""The landscape of trained minima: permutation alignment, clustering, interpolation barriers, probes.

Modules (one concern each): :mod:`~trajkit.landscape.permutations` (which axes share a permutation, as
data), :mod:`~trajkit.landscape.weight_matching` (aligning one network to another),
:mod:`~trajkit.landscape.clustering` (distances, overlaps, linkage, P(q)),
:mod:`~trajkit.landscape.ultrametric` (ultrametricity index and its shuffled control),
:mod:`~trajkit.landscape.interpolation` (loss along linear paths, barriers),
:mod:`~trajkit.landscape.probes` (random directions and random walks around a minimum),
:mod:`~trajkit.landscape.rugosity` (sharpness, rugosity, increment variance, autocorrelation length),
:mod:`~trajkit.landscape.correlation` (Spearman/Pearson with bootstrap intervals),
:mod:`~trajkit.landscape.registry` (the permutation symmetries of the models registered in
:mod:`trajkit.models.registry`, through the ``trajkit_register_models`` hook).

>>> import trajkit.landscape as tl                                                # doctest: +SKIP
>>> aligned_b, perms, info = tl.align("a.trajkit", "b.trajkit")                  # doctest: +SKIP
>>> info["distance_raw"], info["distance"]        # |w_a − w_b|/√N before and after  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from trajkit.archive import open_archive
from trajkit.errors import AnalysisError
from trajkit.landscape.permutations import (
    Axis,
    PermutationSpec,
    apply_permutations,
    builtin_spec,
    feedforward_spec,
    permutation_index,
    random_permutations,
    recurrent_spec,
)
from trajkit.landscape.registry import permutation_spec_for
from trajkit.landscape.weight_matching import align_to_reference, align_vectors, weight_matching

__all__ = ["Axis", "PermutationSpec", "align", "align_to_reference", "align_vectors", "apply_permutations",
           "builtin_spec", "feedforward_spec", "final_params", "permutation_index", "permutation_spec_for",
           "random_permutations", "recurrent_spec", "weight_matching"]


def _open(a: Any) -> Any:
    return open_archive(a) if isinstance(a, str | os.PathLike) else a


def final_params(archive: Any, step: int | None = None) -> tuple[np.ndarray, int]:
    """``(w float32 [N], step)``: the parameters at snapshot ``step`` (None: the last snapshot).

    Raises :class:`~trajkit.errors.ArchiveError` naming the nearest snapshot if ``step`` is not one.
    """
    archive = _open(archive)
    if archive.n_snapshots == 0:
        raise AnalysisError(f"{archive.path}: archive has no committed snapshots")
    row = archive.n_snapshots - 1 if step is None else archive.row(int(step))
    w = np.asarray(archive.params[row:row + 1, :], dtype=np.float32)[0]
    return w, int(archive.steps[row])


def align(archive_a: Any, archive_b: Any, step: int | None = None,
          **kw: Any) -> tuple[np.ndarray, dict, dict]:
    """Align run ``b``'s parameters at ``step`` to run ``a``'s: ``(aligned_b float32 [N], perms, info)``.

    Both archives (paths or open :class:`~trajkit.archive.Archive`) must share a layout; the permutation
    symmetries come from the model registry (:mod:`trajkit.landscape.registry`). ``step`` None takes each
    run's last snapshot; otherwise it must be a snapshot of both. Keyword arguments go to
    :func:`~trajkit.landscape.weight_matching.weight_matching`. ``info`` holds ``distance_raw`` and
    ``distance`` (``|w_a − w_b|/√N`` before and after alignment), ``sweeps``, ``converged``, objectives.
    """
    a, b = _open(archive_a), _open(archive_b)
    if a.layout != b.layout:
        raise AnalysisError(f"{b.path}: parameter layout differs from {a.path}'s (different architectures); "
                            "align runs of one model only")
    spec = permutation_spec_for(a)
    wa, _ = final_params(a, step)
    wb, _ = final_params(b, step)
    return align_vectors(wa, wb, a.layout, spec, **kw)
