"""A trajkit plugin: the mean square weight and the distance travelled from the first snapshot."""

import numpy as np

from trajkit.analysis import Analysis, Param, Result, hookimpl


class WeightNorm(Analysis):
    """norm2(t) = |w(t)|² / n and dist2(t) = |w(t) − w(t0)|² / n over the n selected parameters."""

    name = "weightnorm"
    version = "0.1.0"
    description = "Mean square weight |w(t)|²/n and square distance |w(t) − w(t0)|²/n from the start."
    needs = "archive"
    params = (
        Param("select", "str", default="all", help="subset: all, weights, hidden, layer:K or a glob"),
        Param("scale", "float", default=1.0, min=0.0, help="multiply both curves by this factor"),
    )

    def compute(self, data, params, ctx):
        cols = data.select(params["select"])
        T = data.n_snapshots
        pairs = np.stack([np.zeros(T, dtype=np.int64), np.arange(T)], axis=1)  # (t0, t) for every t
        sums = ctx.kernels.pair_sums(data, pairs, cols=cols, sums=("sq",))    # one pass over the archive
        k = params["scale"] / sums["n_cols"]
        return Result(arrays={"norm2": (k * sums["norm_b"], ("step",)), "dist2": (k * sums["sq"], ("step",))},
                      coords={"step": data.steps},
                      scalars={"final_dist2": float(k * sums["sq"][-1])})

    def plot(self, result, fig):
        ax = fig.add_subplot(1, 1, 1)
        ax.loglog(result.coords["step"][1:], result.arrays["dist2"][1:], label="|w(t) − w(t0)|²/n")
        ax.set_xlabel("step")
        ax.legend()
        return fig


@hookimpl
def trajkit_register_analyses(register):
    register(WeightNorm)
