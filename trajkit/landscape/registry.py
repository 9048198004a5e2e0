"""Rebuildable model architectures and their permutation symmetries.

To probe the landscape around a recorded minimum, trajkit must rebuild the network from the archive's
metadata. The built-in experiments' models (``model.spec.kind`` = ``mlp``, ``cnn``, ``rnn``) are always
known. A third-party package makes its own architecture rebuildable from a plugin (an entry point of the
group ``trajkit.plugins``) that implements the ``trajkit_register_models`` hook::

    from trajkit.analysis import hookimpl

    @hookimpl
    def trajkit_register_models(register):
        register("mypkg.nets:Net", factory=lambda spec: Net(**spec),
                 symmetries={"P0": [("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)]})

``register(name, factory, symmetries=None)``:

- ``name`` is matched against the archive's metadata, first ``model.spec.kind``, then ``model.factory``
  (``"module:function"``), then ``model.class`` (``"module.Class"``, what :class:`trajkit.Recorder` stores).
- ``factory(spec) -> torch.nn.Module`` builds the module (parameters are overwritten from the snapshot) from
  ``model.spec`` (or ``model.kwargs``; ``{}`` when neither is recorded). Its ``named_parameters()`` must
  match the archive layout.
- ``symmetries`` declares which axes share a permutation: a dict ``{group: [(tensor, axis), ...]}``, a
  :class:`~trajkit.landscape.permutations.PermutationSpec`, a callable ``symmetries(layout) -> either``,
  the string ``"feedforward"`` (derive it as for a chain of linear/conv layers,
  :func:`~trajkit.landscape.permutations.feedforward_spec`), or None (no symmetry declared: alignment
  is refused with a message saying so).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trajkit.errors import AnalysisError
from trajkit.landscape.permutations import Layout, PermutationSpec, builtin_spec, feedforward_spec

REGISTER_HELP = ("make it rebuildable from a plugin: `@hookimpl def trajkit_register_models(register): "
                 "register(NAME, factory=lambda spec: MyNet(**spec), symmetries={...})` (see "
                 "trajkit.landscape.registry)")


@dataclass(frozen=True)
class ModelEntry:
    """A rebuildable architecture: ``name``, ``factory(spec) -> nn.Module``, ``symmetries``, ``plugin``."""

    name: str
    factory: Callable[[dict[str, Any]], Any]
    symmetries: Any = None
    plugin: str = "trajkit"

    def permutation_spec(self, layout: Layout) -> PermutationSpec:
        """The architecture's :class:`PermutationSpec` for ``layout``; raises if none was declared."""
        sym = self.symmetries
        if callable(sym) and not isinstance(sym, PermutationSpec):
            sym = sym(layout)
        if sym is None:
            raise AnalysisError(f"model {self.name!r} (registered by {self.plugin!r}) declares no "
                                "permutation symmetries; pass symmetries={group: [(tensor, axis), ...]} to "
                                "register(), or run without alignment (align=none)")
        if isinstance(sym, str):
            if sym != "feedforward":
                raise AnalysisError(f"model {self.name!r}: symmetries={sym!r}; the only named kind is "
                                    "'feedforward'")
            return feedforward_spec(layout)
        if isinstance(sym, PermutationSpec):
            return PermutationSpec.from_groups(sym.to_json(), layout)
        if isinstance(sym, Mapping):
            return PermutationSpec.from_groups(sym, layout)
        raise AnalysisError(f"model {self.name!r}: symmetries of type {type(sym).__name__} are not "
                            "understood; give a dict {group: [(tensor, axis), ...]}, a PermutationSpec or a "
                            "callable")


def _builtin_factory(spec: dict[str, Any]) -> Any:
    from trajkit.experiments.models import build_model

    return build_model(spec)


def _builtin_entries() -> dict[str, ModelEntry]:
    out = {}
    for kind in ("mlp", "cnn", "rnn"):
        def sym(layout: Layout, kind: str = kind) -> PermutationSpec:
            return builtin_spec(kind, layout)

        out[kind] = ModelEntry(kind, lambda spec, kind=kind: _builtin_factory({**spec, "kind": kind}), sym)
    return out


def registered_models() -> dict[str, ModelEntry]:
    """Every rebuildable architecture: the built-ins plus those registered through the plugin hook.

    A plugin whose registration raises is skipped with a warning naming it.
    """
    from trajkit.analysis.plugins import PluginWarning, get_registry

    models = _builtin_entries()
    pm = get_registry().pm
    for impl in pm.hook.trajkit_register_models.get_hookimpls():
        plugin = impl.plugin_name
        added: dict[str, ModelEntry] = {}

        def register(name: str, factory: Callable[[dict[str, Any]], Any], symmetries: Any = None,
                     plugin: str = plugin, added: dict[str, ModelEntry] = added) -> None:
            if not isinstance(name, str) or not name:
                raise AnalysisError(f"plugin {plugin!r}: register() needs a model name string, got {name!r}")
            if not callable(factory):
                raise AnalysisError(f"plugin {plugin!r}: register({name!r}, factory=...) needs a callable "
                                    "factory")
            if name in models:
                raise AnalysisError(f"plugin {plugin!r}: model {name!r} is already registered by "
                                    f"{models[name].plugin!r}")
            added[name] = ModelEntry(name, factory, symmetries, plugin)

        try:
            impl.function(register=register)
        except Exception as e:
            warnings.warn(f"plugin {plugin!r}: trajkit_register_models failed: {type(e).__name__}: {e}",
                          PluginWarning, stacklevel=2)
            continue
        models.update(added)
    return models


def model_keys(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(field, name), ...]``: names under which an archive's model may be registered, in lookup order."""
    model = metadata.get("model") or {}
    keys = []
    spec = model.get("spec")
    if isinstance(spec, Mapping) and spec.get("kind"):
        keys.append(("model.spec.kind", str(spec["kind"])))
    for field in ("factory", "class"):
        if model.get(field):
            keys.append((f"model.{field}", str(model[field])))
    return keys


def model_entry(metadata: Mapping[str, Any], where: str = "archive") -> ModelEntry:
    """The registered architecture of an archive (by its metadata); one-line error with the fix if none."""
    models = registered_models()
    keys = model_keys(metadata)
    for _, name in keys:
        if name in models:
            return models[name]
    if not keys:
        raise AnalysisError(f"{where}: metadata names no model (no model.spec, model.factory or "
                            f"model.class), so it cannot be rebuilt; {REGISTER_HELP}")
    field, name = keys[0]
    raise AnalysisError(f"{where}: model {name!r} ({field}) is not a registered model (known: "
                        f"{', '.join(sorted(models))}); {REGISTER_HELP}")


def model_spec_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's argument: ``model.spec`` (without ``kind``), else ``model.kwargs``, else ``{}``."""
    model = metadata.get("model") or {}
    spec = model.get("spec")
    if isinstance(spec, Mapping):
        return {k: v for k, v in spec.items() if k != "kind"}
    return dict(model.get("kwargs") or {})


def permutation_spec_for(archive: Any) -> PermutationSpec:
    """The :class:`PermutationSpec` of an archive's model (registered symmetries applied to its layout)."""
    entry = model_entry(archive.metadata, str(getattr(archive, "path", "archive")))
    return entry.permutation_spec(archive.layout)
