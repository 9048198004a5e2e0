"""The hook through which a plugin makes its architectures rebuildable (pluggy project ``"trajkit"``).

It is the same project and entry-point group (``trajkit.plugins``) as the analysis hooks of
:mod:`trajkit.analysis.hookspecs`, which re-exports this specification, so one plugin module may implement
both; :mod:`trajkit.models.registry` reads it with its own plugin manager, so rebuilding a run never
imports the analysis core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "trajkit"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def trajkit_register_models(register: Callable[..., Any]) -> None:
    """Called when runs are rebuilt; call ``register(name, factory, symmetries=None)`` per architecture."""
