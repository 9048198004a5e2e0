"""A working plugin: the number of snapshots of an archive."""

from trajkit.analysis import Analysis, Param, Result, hookimpl


class CountSnapshots(Analysis):
    name = "count-snapshots"
    version = "2.0.0"
    description = "Number of committed snapshots, times a factor."
    needs = "archive"
    params = (Param("factor", "int", default=1, min=1, max=10, help="multiplier"),)

    def compute(self, data, params, ctx):
        return Result(scalars={"n": data.n_snapshots * params["factor"]})


@hookimpl
def trajkit_register_analyses(register):
    register(CountSnapshots)
