"""``rugosity``: landscape probes around each run's minimum, and how they correlate with generalisation.

Per run (at ``step``, default the last snapshot) with the model and data rebuilt from the archive
(:func:`trajkit.experiments.rebuild`), on the ``split`` loss (default train):

- ``directions`` random directions normalised by ``normalization`` (``filter``: Li et al. per output
  unit/filter, ``layer``: per tensor, ``unit``: global unit vector), profiles at ``points`` offsets on
  ``[−radius, radius]`` → ``sharpness`` (mean loss rise at the radius) and ``rugosity`` (arc length over
  chord of the half-ray profiles);
- ``walks`` random walks of ``walk_steps`` steps for each step size in ``deltas`` → ``increment_variance
  [R, n_delta]`` (variance of the loss increments), its log–log slope ``increment_exponent``, and the
  1/e ``autocorrelation_length [R, n_delta]`` of the detrended loss along the walk (in distance units);
  the per-run scalar statistic ``correlation_length`` is its value at the smallest δ.

Definitions and closed forms: :mod:`trajkit.landscape.probes`, :mod:`trajkit.landscape.rugosity`.
Generalisation per run at the minimum: ``gap = test loss − train loss`` and ``gap_accuracy = train
accuracy − test accuracy``. Across the ensemble, for each statistic ``s`` in ``sharpness, rugosity,
increment_exponent, correlation_length``: scalars ``spearman_<s>``, ``spearman_<s>_ci``, ``pearson_<s>``,
``pearson_<s>_ci`` against ``gap``, the same four with the suffix ``_acc`` (``spearman_<s>_acc``,
``spearman_<s>_acc_ci``, ...) against ``gap_accuracy`` (percentile bootstrap over runs, ``n_boot``
resamples, 95 %), and ``mean_<s>``.

Arrays over ``run`` ``[R]``: the four statistics, ``gap``, ``gap_accuracy``, ``train_loss``,
``test_loss``, ``train_accuracy``, ``test_accuracy``; ``increment_variance`` and
``autocorrelation_length`` over ``(run, delta)``; the raw probes ``profiles [R, D, P]`` over ``(run,
direction, offset)`` and ``walks [R, n_delta, W, S+1]`` over ``(run, delta, walk, walk_step)`` — so the
probes are saved with the result (``--out DIR``). Probes are seeded per run (``seed``, run index). With
``cache=DIR`` (e.g. ``-p cache=OUT/probes``) each run's probes are also stored in ``DIR`` as
``probes-<run>-<hash>.npz`` and reused when the run, step and probe parameters match; a directory inside
an input archive is refused (archives are never written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trajkit.analysis import Analysis, Param, Result, plotting
from trajkit.landscape import probes
from trajkit.landscape import rugosity as stats
from trajkit.landscape.correlation import correlate
from trajkit_landscape.common import (
    STEP,
    cache_key,
    check_cache_dir,
    check_same_model,
    rebuilt,
    run_params,
    run_seed,
    snapshot_rows,
)

STATISTICS = ("sharpness", "rugosity", "increment_exponent", "correlation_length")
PROBE_KEYS = ("directions", "radius", "points", "deltas", "walks", "walk_steps", "normalization", "split",
              "seed")


class Rugosity(Analysis):
    name = "rugosity"
    version = "1.0.0"
    description = "Sharpness, rugosity, increment variance and correlation length around minima vs the gap."
    needs = "runs"
    params = (
        STEP,
        Param("directions", "int", default=8, min=1, help="random directions per run"),
        Param("radius", "float", default=0.5, check=lambda v: v > 0, valid="> 0",
              help="probe radius r (relative to the weights' scale unless normalization=unit)"),
        Param("points", "int", default=21, min=3, check=lambda v: v % 2 == 1, valid="odd",
              help="offsets per direction on [-r, r] (odd, so that 0 is one)"),
        Param("deltas", "floats", default=[0.005, 0.01, 0.02], check=lambda v: all(x > 0 for x in np.atleast_1d(v)),
              valid="each > 0", help="random-walk step sizes"),
        Param("walks", "int", default=2, min=1, help="random walks per run and step size"),
        Param("walk_steps", "int", default=50, min=2, help="steps per random walk"),
        Param("normalization", "str", default="filter", choices=probes.NORMALIZATIONS,
              help="direction normalisation: filter (Li et al.), layer, unit"),
        Param("split", "str", default="train", choices=("train", "test"), help="loss probed"),
        Param("n_boot", "int", default=1000, min=10, help="bootstrap resamples of the correlations"),
        Param("seed", "int", default=0, min=0, help="seed of the probes (run r uses the stream (seed, r))"),
        Param("batch", "int", default=64, min=1, help="parameter vectors evaluated per batch"),
        Param("cache", "str", default=None, help="directory caching each run's probes (outside the archives)"),
    )

    def compute(self, data: Any, params: dict[str, Any], ctx: Any) -> Result:
        ens = data
        r = len(ens.archives)
        rows, step = snapshot_rows(ens, params["step"])
        cache = check_cache_dir(params["cache"], ens)
        deltas = np.atleast_1d(np.asarray(params["deltas"], dtype=np.float64))
        check_same_model(ens, ("model", "dataset", "loss"))
        probe_params = {k: params[k] for k in PROBE_KEYS}
        paths = [cache / cache_key(ens.run_ids[i], step, probe_params) if cache is not None else None
                 for i in range(r)]
        done = ctx.map(run_probes, ens.archives, rows.tolist(), range(r), paths, desc="rugosity: probing",
                       ref=ens.archives[0], ref_row=int(rows[0]), params=params, deltas=deltas, device=ctx.device)
        at_min = {k: np.array([d[0][k] for d in done]) for k in done[0][0]}
        profiles = np.stack([d[1] for d in done])
        walks = np.stack([d[2] for d in done])
        t = probes.profile_offsets(params["radius"], params["points"])
        inc_var = np.stack([stats.increment_variance(walks[i]) for i in range(r)])
        ac_len = np.stack([stats.autocorrelation_length(deltas, walks[i]) for i in range(r)])
        per_run = {
            "sharpness": np.array([stats.sharpness(t, profiles[i]) for i in range(r)]),
            "rugosity": np.array([stats.rugosity(t, profiles[i]) for i in range(r)]),
            "increment_exponent": np.array([stats.increment_exponent(deltas, inc_var[i]) for i in range(r)]),
            "correlation_length": ac_len[:, int(np.argmin(deltas))],
        }
        gap = at_min["test_loss"] - at_min["train_loss"]
        gap_acc = at_min["train_accuracy"] - at_min["test_accuracy"]
        scalars: dict[str, Any] = {"step": step, "n_runs": r}
        for s in STATISTICS:
            for target, suffix in ((gap, ""), (gap_acc, "_acc")):
                c = correlate(per_run[s], target, n_boot=params["n_boot"], seed=params["seed"])
                for kind in ("spearman", "pearson"):
                    scalars[f"{kind}_{s}{suffix}"] = c[kind]
                    scalars[f"{kind}_{s}{suffix}_ci"] = c[f"{kind}_ci"]
            scalars[f"mean_{s}"] = float(np.nanmean(per_run[s]))
        arrays: dict[str, Any] = {k: (v, ("run",)) for k, v in per_run.items()}
        arrays.update({"gap": (gap, ("run",)), "gap_accuracy": (gap_acc, ("run",))})
        arrays.update({k: (v, ("run",)) for k, v in at_min.items()})
        arrays["increment_variance"] = (inc_var, ("run", "delta"))
        arrays["autocorrelation_length"] = (ac_len, ("run", "delta"))
        arrays["profiles"] = (profiles, ("run", "direction", "offset"))
        arrays["walks"] = (walks, ("run", "delta", "walk", "walk_step"))
        return Result(arrays=arrays, coords={"run": np.arange(r), "delta": deltas, "offset": t,
                                             "direction": np.arange(params["directions"]),
                                             "walk": np.arange(params["walks"]),
                                             "walk_step": np.arange(params["walk_steps"] + 1)},
                      scalars=scalars)

    def plot(self, result: Result, fig: Any) -> Any:
        axes = fig.subplots(2, 3).ravel()
        gap = result.arrays["gap"]
        n = gap.size
        p = result.params
        for ax, s in zip(axes, STATISTICS, strict=False):
            ax.scatter(result.arrays[s], gap, s=18, label=f"{n} runs")
            rho, ci = result.scalars[f"spearman_{s}"], result.scalars[f"spearman_{s}_ci"]
            ax.set_xlabel(STATISTIC_LABELS[s], fontsize=8)
            ax.set_ylabel(r"gap $L_{\rm test} - L_{\rm train}$")
            ax.set_title(f"Spearman $\\rho$ = {_fmt(rho)} [{_fmt(ci[0])}, {_fmt(ci[1])}]", fontsize=9)
        ax = axes[4]
        offsets = result.coords["offset"]
        for prof in result.arrays["profiles"][:8]:
            ax.plot(offsets, prof.T, color="tab:blue", alpha=0.3, lw=0.7)
        ax.set_xlabel(f"offset $t$ ({p.get('normalization', 'filter')}-normalised $d$)", fontsize=8)
        ax.set_ylabel(f"$L_{{\\rm {p.get('split', 'train')}}}(w + t\\,d)$")
        ax.set_title(f"direction profiles (first {min(8, n)} runs)", fontsize=9)
        ax = axes[5]
        deltas = result.coords["delta"]
        inc = result.arrays["increment_variance"]
        for v in inc:
            ax.loglog(deltas, v, "o-", color="tab:green", alpha=0.3, lw=0.7)
        mean = np.nanmean(inc, axis=0)
        sem = np.nanstd(inc, axis=0, ddof=1) / np.sqrt(inc.shape[0]) if inc.shape[0] >= 2 else None
        plotting.band(ax, deltas, mean, sem, color="tab:green", lw=2, label="mean ± s.e. over runs")
        ax.set_xlabel(r"walk step $\delta$")
        ax.set_ylabel(r"Var $\Delta L$ along random walks")
        ax.set_title(f"increment variance; mean $H$ = {_fmt(result.scalars.get('mean_increment_exponent'))}",
                     fontsize=9)
        plotting.legend(ax)
        plotting.caption(fig, plotting.describe(result, [
            f"{p.get('directions')} directions of radius {p.get('radius')} × {p.get('points')} points, "
            f"{p.get('walks')} walks × {p.get('walk_steps')} steps per δ, {p.get('split')} loss",
            f"intervals: {p.get('n_boot')} bootstrap resamples of the runs"]))
        return fig


def run_probes(arch: Any, row: int, i: int, path: Path | None, *, ref: Any, ref_row: int, params: dict[str, Any],
               deltas: np.ndarray, device: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Run ``i``'s task: ``(losses and accuracies at the minimum, profiles [D, P], walks [n_delta, W, S+1])``,
    its parameters read and ``ref`` (run 0) rebuilt where it runs; the probes are read from / stored in the
    cache file ``path`` when one is given."""
    w = run_params(arch, row)
    rb = rebuilt(ref, ref_row, device)
    at_min = {}
    for s in ("train", "test"):
        ev = rb.evaluate(w[None], s)
        at_min[f"{s}_loss"], at_min[f"{s}_accuracy"] = float(ev["loss"][0]), float(ev["accuracy"][0])
    if path is not None and path.exists():
        with np.load(path) as f:
            return at_min, np.asarray(f["profiles"], dtype=np.float64), np.asarray(f["walks"], dtype=np.float64)
    rng = run_seed(params["seed"], i)
    loss_fn = rb.loss_fn(params["split"])
    dirs = probes.random_directions(w, arch.layout, params["directions"], params["normalization"], rng)
    _, profiles = probes.direction_profiles(loss_fn, w, dirs, params["radius"], params["points"],
                                            batch=params["batch"])
    walks = probes.random_walks(loss_fn, w, arch.layout, deltas, params["walks"], params["walk_steps"],
                                params["normalization"], rng, params["batch"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, profiles=profiles, walks=walks)
        tmp.replace(path)
    return at_min, np.asarray(profiles, dtype=np.float64), np.asarray(walks, dtype=np.float64)


#: x-axis labels of the per-run statistics (definitions in :mod:`trajkit.landscape.rugosity`).
STATISTIC_LABELS = {
    "sharpness": r"sharpness $\langle L(w \pm r\,d) - L(w)\rangle_d$",
    "rugosity": "rugosity (arc / chord of profiles)",
    "increment_exponent": r"exponent $H$: Var $\Delta L \propto \delta^H$",
    "correlation_length": r"correlation length $\xi$ (1/e, smallest $\delta$)",
}


def _fmt(v: Any) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.2f}"
