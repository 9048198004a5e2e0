"""The two-time observables of the dynamics plugins, from the pair sums of the kernels.

For snapshots ``a = w(tw)`` and ``b = w(tw+t)`` of N parameters: ``overlap = dot/N``,
``overlap_normalized = dot/sqrt(norm_a·norm_b)``, ``msd = sq/N``, ``self_overlap = theta/N``,
``d4 = quart/N``, ``participation = quart/sq²`` and ``alpha2 = N·quart/(3 sq²) − 1`` (see
:mod:`trajkit_dynamics.overlaps`). Shared by :mod:`trajkit_dynamics.measure` (which computes them per
replica) and :mod:`trajkit_dynamics.overlaps` (which reports them), so neither imports the other.
"""

from __future__ import annotations

import numpy as np

#: Arrays computed from the pair sums, in the order the plugin reports them.
TWO_TIME_NAMES = ("overlap", "overlap_normalized", "msd", "self_overlap", "d4", "participation", "alpha2")


def two_time_from_sums(sums: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The two-time observables from pair sums over ``n`` parameters (any common shape, e.g. ``[P]``).

    Each output appears when its inputs are present: ``dot`` → overlap (with ``norm_a, norm_b`` also the
    normalised overlap), ``sq`` → msd, ``theta`` → self_overlap, ``sq`` and ``quart`` → d4,
    participation, alpha2.
    """
    out: dict[str, np.ndarray] = {}
    n = float(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if "dot" in sums:
            dot = np.asarray(sums["dot"], dtype=float)
            out["overlap"] = dot / n
            if "norm_a" in sums and "norm_b" in sums:
                out["overlap_normalized"] = dot / np.sqrt(np.asarray(sums["norm_a"], float)
                                                          * np.asarray(sums["norm_b"], float))
        if "theta" in sums:
            out["self_overlap"] = np.asarray(sums["theta"], dtype=float) / n
        if "sq" in sums:
            sq = np.asarray(sums["sq"], dtype=float)
            out["msd"] = sq / n
        if "sq" in sums and "quart" in sums:
            quart = np.asarray(sums["quart"], dtype=float)
            out["d4"] = quart / n
            moving = sq > 0
            safe = np.where(moving, sq, 1.0)
            out["participation"] = np.where(moving, quart / safe**2, np.nan)
            out["alpha2"] = np.where(moving, n * quart / (3.0 * safe**2) - 1.0, np.nan)
    return out
