"""The permutation symmetries of registered models: the landscape's reading of the model registry.

The registry itself (which architectures can be rebuilt, the ``trajkit_register_models`` plugin hook)
is :mod:`trajkit.models.registry`, the layer under both ``trajkit.experiments`` and ``trajkit.landscape``;
its names are re-exported here. A registered model's ``symmetries`` are data; this module turns them
into a :class:`~trajkit.landscape.permutations.PermutationSpec` for an archive's layout:

- a dict ``{group: [(tensor, axis), ...]}`` or a :class:`PermutationSpec`: checked against the layout;
- a callable ``symmetries(layout)`` returning either;
- a named kind: ``"feedforward"`` (:func:`~trajkit.landscape.permutations.feedforward_spec`) or a
  built-in kind ``"mlp"``, ``"cnn"``, ``"rnn"`` (:func:`~trajkit.landscape.permutations.builtin_spec`);
- None: no symmetry declared, alignment is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trajkit.errors import AnalysisError
from trajkit.landscape.permutations import Layout, PermutationSpec, builtin_spec, feedforward_spec
from trajkit.models.registry import (
    BUILTIN_KINDS,
    REGISTER_HELP,
    ModelEntry,
    model_entry,
    model_keys,
    model_spec_of,
    registered_models,
)

__all__ = ["REGISTER_HELP", "ModelEntry", "model_entry", "model_keys", "model_spec_of", "permutation_spec",
           "permutation_spec_for", "registered_models"]


def permutation_spec(entry: ModelEntry, layout: Layout) -> PermutationSpec:
    """The :class:`PermutationSpec` that ``entry``'s declared symmetries give on ``layout``; raises if none."""
    sym = entry.symmetries
    if callable(sym) and not isinstance(sym, PermutationSpec):
        sym = sym(layout)
    if sym is None:
        raise AnalysisError(f"model {entry.name!r} (registered by {entry.plugin!r}) declares no "
                            "permutation symmetries; pass symmetries={group: [(tensor, axis), ...]} to "
                            "register(), or run without alignment (align=none)")
    if isinstance(sym, str):
        if sym == "feedforward":
            return feedforward_spec(layout)
        if sym in BUILTIN_KINDS:
            return builtin_spec(sym, layout)
        raise AnalysisError(f"model {entry.name!r}: symmetries={sym!r}; the named kinds are 'feedforward', "
                            f"{', '.join(repr(k) for k in BUILTIN_KINDS)}")
    if isinstance(sym, PermutationSpec):
        return PermutationSpec.from_groups(sym.to_json(), layout)
    if isinstance(sym, Mapping):
        return PermutationSpec.from_groups(sym, layout)
    raise AnalysisError(f"model {entry.name!r}: symmetries of type {type(sym).__name__} are not "
                        "understood; give a dict {group: [(tensor, axis), ...]}, a PermutationSpec or a "
                        "callable")


def permutation_spec_for(archive: Any) -> PermutationSpec:
    """The :class:`PermutationSpec` of an archive's model (registered symmetries applied to its layout)."""
    entry = model_entry(archive.metadata, str(getattr(archive, "path", "archive")))
    return permutation_spec(entry, archive.layout)
