"""A plugin whose hook implementation asks for an argument the hook specification does not have."""

from trajkit.analysis import hookimpl


@hookimpl
def trajkit_register_analyses(register, config):
    raise AssertionError("never called")
