"""Hook specifications of trajkit's plugin system (pluggy project name ``"trajkit"``).

Every hook a plugin may implement is declared here, each with a one-line docstring saying when it is
called and what it returns. A plugin is any importable object (usually a module) named by an entry point
of the group ``trajkit.plugins``; it implements hooks with the :data:`hookimpl` marker::

    from trajkit.analysis import hookimpl

    @hookimpl
    def trajkit_register_analyses(register):
        register(MyAnalysis)

``trajkit_register_models`` (make an architecture rebuildable) is declared in
:mod:`trajkit.models.hookspecs`, the layer that rebuilds runs, and re-exported here.

Registration hooks receive a ``register`` callable (as in simonw/llm), so the core stays in control of
validation and bookkeeping: it knows which plugin registered what.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from trajkit.models.hookspecs import trajkit_register_models

PROJECT = "trajkit"
__all__ = ["PROJECT", "hookimpl", "hookspec", "trajkit_register_analyses", "trajkit_register_models"]

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def trajkit_register_analyses(register: Callable[[type], None]) -> None:
    """Called once when plugins load; call ``register(cls)`` for each ``Analysis`` subclass provided."""

