"""``minima``: how an ensemble's minima are organised — permutation-aligned distances, hierarchical
clustering, ultrametricity and the overlap distribution P(q).

For R runs (R ≥ 3) at one snapshot (``step``, default the last), with ``w_a`` the flat parameters:

- ``distance [R, R]``: ``d_ab = |w_a − w_b|/√N`` over the ``select``-ed parameters (N their number);
- ``distance_aligned [R, R]``: the same after permutation alignment (weight matching, see
  :mod:`trajkit.landscape.weight_matching`), ``align`` = ``reference`` (every run aligned to run 0, R−1
  matchings; distances between the aligned vectors), ``pairwise`` (b aligned to a for every pair a < b,
  R(R−1)/2 matchings: each pair's own best match) or ``none`` (no alignment: equal to ``distance``);
- ``q [R, R]`` and ``q_aligned [R, R]``: overlaps ``q_ab = w_a·w_b/(|w_a||w_b|)``;
- ``linkage [R−1, 4]`` (scipy format) of the aligned distances (``distance = overlap`` clusters on
  ``1 − q_aligned`` instead) with ``method`` single/average/complete/ward; ``labels [R]`` at
  ``n_clusters``; ``leaves [R]`` the dendrogram order;
- ``pq [bins]`` over coordinate ``q``: the histogram P(q) of the off-diagonal ``q_aligned``.

Histograms (the inherent-structure figures), each a density with its bin edges: ``distance_hist`` and
``distance_aligned_hist [B]`` over ``distance_bin`` (the pairwise ``d_ab``, a < b, raw and aligned, on one
set of edges ``distance_edges [B+1]``); ``weight_hist [B]`` (the selected parameters of every run pooled,
edges ``weight_edges``); with a loss metric (``metric``; default ``train_loss`` when every run records it)
``final_loss [R]`` over ``run_a`` (its value at the analysed snapshot) and ``final_loss_hist [B]`` (edges
``final_loss_edges``). ``B`` = ``hist_bins``.

Scalars: ``cophenetic`` (cophenetic correlation of the linkage), ``ultrametricity`` (mean over triangles
of ``(d_max − d_mid)/d_min``, :mod:`trajkit.landscape.ultrametric`), ``ultrametricity_control`` and
``ultrametricity_control_std`` (the same for ``shuffles`` symmetric shuffles of the distance matrix),
``mean_distance``, ``mean_distance_aligned``, ``mean_q_aligned``, ``step``, ``n_runs``, ``final_loss_metric``
(the metric histogrammed, None without one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.errors import AnalysisError
from trajkit.landscape import clustering, ultrametric
from trajkit.landscape.permutations import apply_permutations
from trajkit.landscape.weight_matching import align_vectors
from trajkit_landscape.common import STEP, check_same_model, permutation_spec, run_params, snapshot_rows


def _density(values: np.ndarray, bins: int, edges: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density histogram ``(hist [bins], edges [bins + 1])`` of finite ``values`` (a degenerate range widened)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if edges is None:
        edges = _edges(float(v.min()), float(v.max()), bins) if v.size else _edges(0.0, 1.0, bins)
    hist, edges = np.histogram(v, bins=edges, density=v.size > 0)
    return hist.astype(float), edges


def _edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """``bins + 1`` equal bins over ``[lo, hi]`` (a degenerate range widened)."""
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    return np.linspace(lo, hi, bins + 1)


def _histograms(ens: Any, rows: np.ndarray, weights: tuple[np.ndarray, np.ndarray], d_raw: np.ndarray,
                d_al: np.ndarray, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The histogram arrays of the module docstring and the metric of the final losses (None without one);
    ``weights`` is the pooled parameter histogram ``(density, edges)``."""
    bins = params["hist_bins"]
    d_edges = _density(np.concatenate([d_raw, d_al]), bins)[1]
    w_hist, w_edges = weights
    out: dict[str, Any] = {"distance_hist": (_density(d_raw, bins, d_edges)[0], ("distance_bin",)),
                           "distance_aligned_hist": (_density(d_al, bins, d_edges)[0], ("distance_bin",)),
                           "distance_edges": (d_edges, ("distance_edge",)),
                           "weight_hist": (w_hist, ("weight_bin",)), "weight_edges": (w_edges, ("weight_edge",))}
    metric = params["metric"]
    if metric is None:
        metric = "train_loss" if all("train_loss" in a.metrics for a in ens.archives) else None
        if metric is None:
            return out, None
    for a in ens.archives:
        if metric not in a.metrics:
            raise AnalysisError(f"{a.path}: no snapshot metric {metric!r} (metrics: {', '.join(a.metrics) or 'none'}); "
                                "pass metric=NAME of a recorded metric")
    final = np.array([float(a.metrics[metric][int(row)]) for a, row in zip(ens.archives, rows, strict=True)])
    l_hist, l_edges = _density(final, bins)
    out.update({"final_loss": (final, ("run_a",)), "final_loss_hist": (l_hist, ("loss_bin",)),
                "final_loss_edges": (l_edges, ("loss_edge",))})
    return out, metric


class Minima(Analysis):
    name = "minima"
    version = "1.0.0"
    description = "Permutation-aligned distances between minima, hierarchical clustering, ultrametricity, P(q)."
    needs = "runs"
    params = (
        STEP,
        Param("align", "str", default="reference", choices=("reference", "pairwise", "none"),
              help="permutation alignment: to run 0, every pair, or none"),
        Param("method", "str", default="average", choices=clustering.METHODS, help="linkage method"),
        Param("distance", "str", default="euclidean", choices=("euclidean", "overlap"),
              help="clustered distance: |w_a - w_b|/sqrt(N) or 1 - q_ab (both aligned)"),
        Param("select", "str", default="all", help="parameters entering distances: all, weights, layer:K, glob"),
        Param("n_clusters", "int", default=2, min=1, help="clusters for the labels (cut of the dendrogram)"),
        Param("shuffles", "int", default=50, min=1, help="shuffled distance matrices for the control"),
        Param("bins", "int", default=30, min=2, help="bins of the P(q) histogram"),
        Param("seed", "int", default=0, min=0, help="seed of the shuffles and of the matching sweep order"),
        Param("hist_bins", "int", default=30, min=2, help="bins of the distance, final-loss and weight histograms"),
        Param("metric", "str", default=None,
              help="snapshot metric of the final-loss histogram (default: train_loss when every run has it)"),
    )

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        ens = data
        r = len(ens.archives)
        if r < 3:
            raise AnalysisError(f"clustering needs at least 3 runs, got {r}; add replicas (run.replicas)")
        check_same_model(ens)
        rows, step = snapshot_rows(ens, params["step"])
        cols = ens.select(params["select"])
        spec = permutation_spec(ens) if params["align"] != "none" else None
        arch, rows_ = ens.archives, rows.tolist()
        perms: list[Any] = [None] * r
        if params["align"] == "reference":
            perms[1:] = ctx.map(reference_permutation, arch[1:], rows_[1:], desc="minima: aligning",
                                ref=arch[0], ref_row=rows_[0], spec=spec, seed=params["seed"])
        pairs = [(a, b) for a in range(r) for b in range(a + 1, r)]
        done = ctx.map(pair_entries, [arch[a] for a, _ in pairs], [arch[b] for _, b in pairs],
                       [rows_[a] for a, _ in pairs], [rows_[b] for _, b in pairs], [perms[a] for a, _ in pairs],
                       [perms[b] for _, b in pairs], desc="minima: pairs", cols=cols, align=params["align"],
                       spec=spec, seed=params["seed"])
        d_raw, q_raw, d_al, q_al = (np.zeros((r, r)), np.eye(r), np.zeros((r, r)), np.eye(r))
        for (a, b), entries in zip(pairs, done, strict=True):
            for m, v in zip((d_raw, q_raw, d_al, q_al), entries, strict=True):
                m[a, b] = m[b, a] = v
        ranges = ctx.map(weight_range, arch, rows_, desc="minima: weight range", cols=cols)
        w_edges = _edges(min(lo for lo, _ in ranges), max(hi for _, hi in ranges), params["hist_bins"])
        counts = np.sum(ctx.map(weight_counts, arch, rows_, desc="minima: weight histogram", cols=cols,
                                edges=w_edges), axis=0)
        weights = (counts / np.diff(w_edges) / counts.sum(), w_edges)
        target = d_al if params["distance"] == "euclidean" else 1.0 - q_al
        np.fill_diagonal(target, 0.0)
        z = clustering.linkage(target, params["method"])
        labels = clustering.cluster_labels(z, n_clusters=min(params["n_clusters"], r))
        um = ultrametric.ultrametricity_index(target)
        control, control_std = ultrametric.ultrametricity_control(target, params["shuffles"], params["seed"])
        centres, pq = clustering.overlap_distribution(q_al, bins=params["bins"])
        iu = np.triu_indices(r, k=1)
        runs = np.arange(r)
        hists, metric = _histograms(ens, rows, weights, d_raw[iu], d_al[iu], params)
        return Result(
            arrays={**hists, "distance": (d_raw, ("run_a", "run_b")), "distance_aligned": (d_al, ("run_a", "run_b")),
                    "q": (q_raw, ("run_a", "run_b")), "q_aligned": (q_al, ("run_a", "run_b")),
                    "linkage": (z, ("merge", "linkage_field")), "labels": (labels, ("run_a",)),
                    "leaves": (clustering.leaf_order(z), ("leaf",)), "pq": (pq, ("q",))},
            coords={"run_a": runs, "run_b": runs, "leaf": runs, "q": centres,
                    "linkage_field": np.array(["cluster_1", "cluster_2", "height", "size"])},
            scalars={"cophenetic": clustering.cophenetic_correlation(z, target), "ultrametricity": um,
                     "ultrametricity_control": control, "ultrametricity_control_std": control_std,
                     "mean_distance": float(d_raw[iu].mean()), "mean_distance_aligned": float(d_al[iu].mean()),
                     "mean_q_aligned": float(q_al[iu].mean()), "step": step, "n_runs": r,
                     "clustered": "distance_aligned" if params["distance"] == "euclidean" else "1-q_aligned",
                     "final_loss_metric": metric})

    def plot(self, result: Result, fig: Any) -> Any:
        from scipy.cluster import hierarchy

        z = result.arrays["linkage"]
        by_distance = result.scalars.get("clustered") == "distance_aligned"
        clustered = result.arrays["distance_aligned"] if by_distance else 1.0 - result.arrays["q_aligned"]
        what = r"$d_{ab} = |w_a - \pi w_b|/\sqrt{N}$" if by_distance else r"$1 - q_{ab}$ (aligned)"
        order = result.arrays["leaves"]
        gs = fig.add_gridspec(3, 2, height_ratios=[1, 3, 1.6], width_ratios=[3, 2])
        ax_d = fig.add_subplot(gs[0, 0])
        hierarchy.dendrogram(z, ax=ax_d, no_labels=len(order) > 40, color_threshold=None)
        ax_d.set_ylabel(f"merge height\n{what}", fontsize=8)
        ax_d.set_xlabel("run", fontsize=8)
        sc = result.scalars
        ax_d.set_title(f"{result.params.get('method', '')} linkage: cophenetic correlation "
                       f"{plotting.fmt(sc['cophenetic'])}\nultrametricity {plotting.fmt(sc['ultrametricity'])} "
                       f"(shuffled {plotting.fmt(sc['ultrametricity_control'])} ± "
                       f"{plotting.fmt(sc.get('ultrametricity_control_std'), 2)})", fontsize=8)
        ax_h = fig.add_subplot(gs[1, 0])
        im = ax_h.imshow(clustered[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
        ax_h.set_xticks(range(len(order)), [str(int(k)) for k in order], fontsize=6)
        ax_h.set_yticks(range(len(order)), [str(int(k)) for k in order], fontsize=6)
        ax_h.set_xlabel("run $b$ (dendrogram order)")
        ax_h.set_ylabel("run $a$ (dendrogram order)")
        fig.colorbar(im, ax=ax_h, label=what)
        ax_q = fig.add_subplot(gs[:2, 1])  # row 2 holds the histograms
        centres = result.coords["q"]
        width = float(np.diff(centres).mean()) if centres.size > 1 else 0.01
        ax_q.bar(centres, result.arrays["pq"], width=width, color="tab:blue", alpha=0.8, label="aligned")
        q_raw = result.arrays["q"][np.triu_indices(result.arrays["q"].shape[0], k=1)]
        ax_q.hist(q_raw, bins=max(5, centres.size), density=True, histtype="step", color="tab:gray", label="raw")
        ax_q.set_xlabel(r"$q_{ab} = \hat w_a\cdot\hat w_b$, $\hat w = w/|w|$, $a < b$")
        ax_q.set_ylabel("$P(q)$ (density)")
        ax_q.set_title(f"mean aligned $q$ = {plotting.fmt(sc.get('mean_q_aligned'))}\nmean $d$: raw "
                       f"{plotting.fmt(sc.get('mean_distance'))}, "
                       f"aligned {plotting.fmt(sc.get('mean_distance_aligned'))}", fontsize=8)
        ax_q.legend(fontsize="x-small")
        _plot_histograms(result, [fig.add_subplot(c) for c in gs[2, :].subgridspec(1, 3)])
        p = result.params
        plotting.caption(fig, plotting.describe(result, [
            f"alignment {p.get('align')} (weight matching)", f"clustered on {sc.get('clustered')}",
            f"{p.get('shuffles')} shuffled controls"]))
        return fig


def reference_permutation(arch: Any, row: int, *, ref: Any, ref_row: int, spec: Any, seed: int) -> Any:
    """Run ``arch``'s task (``align=reference``): the weight-matching permutations aligning it to ``ref``
    (run 0) — index arrays, not parameters."""
    _, perms, _ = align_vectors(run_params(ref, ref_row), run_params(arch, row), arch.layout, spec, seed=seed)
    return perms


def pair_entries(arch_a: Any, arch_b: Any, row_a: int, row_b: int, perm_a: Any, perm_b: Any, *, cols: Any,
                 align: str, spec: Any, seed: int) -> tuple[float, float, float, float]:
    """Pair (a, b)'s task: ``(d_ab, q_ab, d_ab aligned, q_ab aligned)`` over the ``cols`` selection. Aligned:
    ``reference`` applies each run's permutation onto run 0 (run 0's is None), ``pairwise`` aligns b to a."""
    wa, wb = run_params(arch_a, row_a), run_params(arch_b, row_b)
    two = np.stack([wa[cols], wb[cols]])
    d, q = clustering.distance_matrix(two)[0, 1], clustering.overlap_matrix(two)[0, 1]
    if align == "none":
        return d, q, d, q
    if align == "pairwise":
        wb, _, _ = align_vectors(wa, wb, arch_a.layout, spec, seed=seed)
    else:
        wa, wb = (w if p is None else apply_permutations(w, arch_a.layout, spec, p)
                  for w, p in ((wa, perm_a), (wb, perm_b)))
    two = np.stack([wa[cols], wb[cols]])
    return d, q, clustering.distance_matrix(two)[0, 1], clustering.overlap_matrix(two)[0, 1]


def weight_range(arch: Any, row: int, *, cols: Any) -> tuple[float, float]:
    """Run ``arch``'s task: ``(min, max)`` of its selected parameters (the edges of the pooled histogram)."""
    v = np.asarray(run_params(arch, row)[cols], dtype=float)
    return float(v.min()), float(v.max())


def weight_counts(arch: Any, row: int, *, cols: Any, edges: np.ndarray) -> np.ndarray:
    """Run ``arch``'s task: the counts of its selected parameters on ``edges``; the client adds them."""
    return np.histogram(np.asarray(run_params(arch, row)[cols], dtype=float), bins=edges)[0]


def _plot_histograms(result: Result, axes: list[Any]) -> None:
    """The distance, final-loss and weight histograms on three axes (an axis without its data is hidden)."""
    a = result.arrays
    ax_d, ax_l, ax_w = axes
    if "distance_hist" in a:
        ax_d.stairs(a["distance_hist"], a["distance_edges"], color="tab:gray", label="raw")
        ax_d.stairs(a["distance_aligned_hist"], a["distance_edges"], color="tab:blue", label="aligned")
        ax_d.set_xlabel(r"$d_{ab} = |w_a - w_b|/\sqrt{N}$, $a < b$", fontsize=8)
        ax_d.set_ylabel("density", fontsize=8)
        plotting.legend(ax_d)
    else:
        ax_d.set_visible(False)
    if "final_loss_hist" in a:
        ax_l.stairs(a["final_loss_hist"], a["final_loss_edges"], fill=True, alpha=0.6)
        ax_l.set_xlabel(f"final {result.scalars.get('final_loss_metric')} (one per run)", fontsize=8)
        ax_l.set_ylabel("density", fontsize=8)
    else:
        ax_l.set_visible(False)
    if "weight_hist" in a:
        ax_w.stairs(a["weight_hist"], a["weight_edges"], fill=True, alpha=0.6, color="tab:green")
        ax_w.set_xlabel(f"parameters $w_i$ (select = {result.params.get('select', 'all')}, all runs)", fontsize=8)
        ax_w.set_ylabel("density", fontsize=8)
    else:
        ax_w.set_visible(False)
