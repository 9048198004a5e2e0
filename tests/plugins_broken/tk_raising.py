"""A plugin that loads fine but whose analysis raises while computing."""

from trajkit.analysis import Analysis, hookimpl


class Explode(Analysis):
    name = "explode"
    version = "0.0.1"
    description = "Always fails in compute()."
    needs = "archive"

    def compute(self, data, params, ctx):
        raise RuntimeError("boom at snapshot 3")


@hookimpl
def trajkit_register_analyses(register):
    register(Explode)
