"""``interpolation``: loss along straight lines between minima, with and without permutation alignment.

For each chosen pair (a, b) of runs (``pairs``: ``all``, ``consecutive`` or ``"0:1,2:5"``) the train and
test losses along ``(1 − α) w_a + α π(w_b)`` on ``points`` values of α in [0, 1], with ``π`` the identity
(``raw``) and the weight-matching permutation aligning b to a (``aligned``; ``align=false`` skips it).
The model and data are rebuilt from the archives (:func:`trajkit.experiments.rebuild`), and the loss is
evaluated for a whole batch of α at once.

Arrays: ``path_train``, ``path_test`` ``[P, A]`` (raw) and ``path_train_aligned``, ``path_test_aligned``
over ``(pair, alpha)``; ``pairs [P, 2]``; per pair ``barrier_train``, ``barrier_test`` and their
``_aligned`` versions ``[P]``, with ``B = max_α L − max(L(0), L(1))``; and the barrier matrices
``barrier_train_matrix``, ``barrier_train_aligned_matrix`` (and ``test``) ``[R, R]`` (symmetric, NaN
for pairs not computed). Scalars: the mean barrier of each kind (``mean_barrier_train``,
``mean_barrier_train_aligned``, ``mean_barrier_test``, ``mean_barrier_test_aligned``), ``step``,
``n_pairs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.errors import AnalysisError
from trajkit.landscape.interpolation import alpha_grid, barrier, interpolation_path
from trajkit.landscape.weight_matching import align_vectors
from trajkit_landscape.common import (
    STEP,
    check_same_model,
    parse_pairs,
    permutation_spec,
    rebuilt,
    run_params,
    snapshot_rows,
)


class Interpolation(Analysis):
    name = "interpolation"
    version = "1.0.0"
    description = "Train/test loss along linear paths between minima, raw and permutation-aligned; barriers."
    needs = "runs"
    params = (
        STEP,
        Param("pairs", "str", default="all", help="all, consecutive, or run-index pairs like 0:1,0:2"),
        Param("points", "int", default=21, min=2, help="values of alpha on [0, 1]"),
        Param("align", "bool", default=True, help="also interpolate to the permutation-aligned partner"),
        Param("batch", "int", default=64, min=1, help="parameter vectors evaluated per batch"),
        Param("seed", "int", default=0, min=0, help="seed of the weight-matching sweep order"),
    )

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        ens = data
        r = len(ens.archives)
        pairs = parse_pairs(params["pairs"], r)
        if pairs.shape[0] == 0:
            raise AnalysisError(f"interpolation needs at least one pair of runs; the ensemble has {r} run(s)")
        rows, step = snapshot_rows(ens, params["step"])
        check_same_model(ens, ("model", "dataset", "loss"))
        spec = permutation_spec(ens) if params["align"] else None
        alphas = alpha_grid(params["points"])
        kinds = ["raw", "aligned"] if params["align"] else ["raw"]
        arch = ens.archives
        done = ctx.map(pair_paths, [arch[a] for a in pairs[:, 0]], [arch[b] for b in pairs[:, 1]],
                       rows[pairs[:, 0]].tolist(), rows[pairs[:, 1]].tolist(), desc="interpolation",
                       ref=arch[0], ref_row=int(rows[0]), spec=spec, alphas=alphas, batch=params["batch"],
                       seed=params["seed"], device=ctx.device)
        paths = {(k, s): np.stack([d[k, s] for d in done]) for k in kinds for s in ("train", "test")}
        arrays: dict[str, Any] = {"pairs": (pairs, ("pair", "end"))}
        scalars: dict[str, Any] = {"step": step, "n_pairs": int(pairs.shape[0])}
        for (k, s), p in paths.items():
            suffix = "" if k == "raw" else "_aligned"
            bar = np.array([barrier(x) for x in p])
            mat = np.full((r, r), np.nan)
            mat[pairs[:, 0], pairs[:, 1]] = bar
            mat[pairs[:, 1], pairs[:, 0]] = bar
            arrays[f"path_{s}{suffix}"] = (p, ("pair", "alpha"))
            arrays[f"barrier_{s}{suffix}"] = (bar, ("pair",))
            arrays[f"barrier_{s}{suffix}_matrix"] = (mat, ("run_a", "run_b"))
            scalars[f"mean_barrier_{s}{suffix}"] = float(bar.mean())
        runs = np.arange(r)
        return Result(arrays=arrays, coords={"alpha": alphas, "pair": np.arange(pairs.shape[0]),
                                             "end": np.array(["a", "b"]), "run_a": runs, "run_b": runs},
                      scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        alphas = result.coords["alpha"]
        axes = fig.subplots(1, 2, sharey=False)
        sc = result.scalars
        for ax, s in zip(axes, ("train", "test"), strict=True):
            for key, colour, label in ((f"path_{s}", "tab:gray", "raw"),
                                       (f"path_{s}_aligned", "tab:red", "aligned")):
                if key not in result.arrays:
                    continue
                p = result.arrays[key]
                for line in p[:50]:
                    ax.plot(alphas, line, color=colour, alpha=0.2, lw=0.6)
                sem = p.std(axis=0, ddof=1) / np.sqrt(p.shape[0]) if p.shape[0] >= 2 else None
                plotting.band(ax, alphas, p.mean(axis=0), sem, color=colour, lw=2.2,
                              label=f"{label}: mean ± s.e. over {p.shape[0]} pairs" if sem is not None else label)
            ax.set_xlabel(r"$\alpha$ on the path $(1-\alpha)\,w_a + \alpha\,\pi(w_b)$")
            ax.set_ylabel(f"$L_{{\\rm {s}}}$ along the path")
            aligned = sc.get(f"mean_barrier_{s}_aligned")
            title = (r"barrier $B = \max_\alpha L - \max(L(0), L(1))$"
                     + f"\nmean {plotting.fmt(sc[f'mean_barrier_{s}'])} raw"
                     + (f", {plotting.fmt(aligned)} aligned" if aligned is not None else ""))
            ax.set_title(title, fontsize=8)
            plotting.legend(ax)
        p = result.params
        plotting.caption(fig, plotting.describe(result, [
            f"{sc.get('n_pairs')} pairs ({p.get('pairs')})", f"{p.get('points')} values of α",
            "π: weight-matching permutation of b onto a" if p.get("align", True) else "no alignment"]))
        return fig


def pair_paths(arch_a: Any, arch_b: Any, row_a: int, row_b: int, *, ref: Any, ref_row: int, spec: Any,
               alphas: np.ndarray, batch: int, seed: int, device: str) -> dict[tuple[str, str], np.ndarray]:
    """One pair's task: ``{(kind, split): loss along the path [A]}``, kind ``raw`` (and ``aligned`` with a
    ``spec``); reads both runs and rebuilds ``ref`` (run 0) where it runs."""
    wa, wb = run_params(arch_a, row_a), run_params(arch_b, row_b)
    rb = rebuilt(ref, ref_row, device)
    ends = {"raw": wb}
    if spec is not None:
        ends["aligned"], _, _ = align_vectors(wa, wb, arch_a.layout, spec, seed=seed)
    return {(k, s): interpolation_path(rb.loss_fn(s), wa, end, alphas, batch=batch)
            for k, end in ends.items() for s in ("train", "test")}
