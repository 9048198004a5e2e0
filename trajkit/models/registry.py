"""Rebuildable model architectures: the built-ins and those plugins register.

To rebuild a recorded network (for :func:`trajkit.models.rebuild`, landscape probes, alignment) trajkit
needs a factory for the archive's architecture. The built-in experiments' models (``model.spec.kind`` =
``mlp``, ``cnn``, ``rnn``) are always known. A third-party package makes its own architecture rebuildable
from a plugin (an entry point of the group ``trajkit.plugins``) that implements the
``trajkit_register_models`` hook::

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
- ``symmetries`` declares which axes share a permutation, as data the landscape layer interprets
  (:func:`trajkit.landscape.registry.permutation_spec`): a dict ``{group: [(tensor, axis), ...]}``, a
  :class:`~trajkit.landscape.permutations.PermutationSpec`, a callable ``symmetries(layout) -> either``, a
  named kind (``"feedforward"``: a chain of linear/conv layers; ``"mlp"``, ``"cnn"``, ``"rnn"``: as the
  built-ins), or None (no symmetry declared: alignment is refused with a message saying so).

The hook is read by this module's own pluggy manager over the same entry points the analysis core loads
(``TRAJKIT_LOAD_PLUGINS`` applies to both), plus the plugins added with :func:`register_plugin` (which
:func:`trajkit.analysis.plugins.register_plugin` forwards here). This layer imports neither the analysis
core nor torch: a plugin module is imported only when a model is looked up.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from trajkit.errors import AnalysisError, PluginWarning
from trajkit.models import hookspecs

GROUP = "trajkit.plugins"
BUILTIN_KINDS = ("mlp", "cnn", "rnn")
REGISTER_HELP = ("make it rebuildable from a plugin: `@hookimpl def trajkit_register_models(register): "
                 "register(NAME, factory=lambda spec: MyNet(**spec), symmetries={...})` (see "
                 "trajkit.models.registry)")


@dataclass(frozen=True)
class ModelEntry:
    """A rebuildable architecture: ``name``, ``factory(spec) -> nn.Module``, ``symmetries``, ``plugin``."""

    name: str
    factory: Callable[[dict[str, Any]], Any]
    symmetries: Any = None
    plugin: str = "trajkit"


_extra: list[tuple[Any, str]] = []


def register_plugin(plugin: Any, name: str) -> None:
    """Add a plugin object (module or instance) whose ``trajkit_register_models`` is read without an entry point."""
    _extra.append((plugin, name))


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with :func:`register_plugin`."""
    _extra[:] = [(p, n) for p, n in _extra if n != name]


def _builtin_factory(kind: str) -> Callable[[dict[str, Any]], Any]:
    def factory(spec: dict[str, Any]) -> Any:
        from trajkit.models.architectures import build_model  # torch only when a model is built

        return build_model({**spec, "kind": kind})

    return factory


def _builtin_entries() -> dict[str, ModelEntry]:
    return {kind: ModelEntry(kind, _builtin_factory(kind), kind) for kind in BUILTIN_KINDS}


def _plugin_manager() -> tuple[pluggy.PluginManager, list[str]]:
    """A manager holding every loadable plugin, and the names of entry points whose import failed.

    Import failures are not reported here (the analysis core's registry lists broken plugins); they are
    named in the error when a model is not found.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: list[str] = []
    for ep in selected_entry_points():
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception:
            broken.append(ep.name)
    for plugin, name in _extra:
        try:
            pm.register(plugin, name=name)
        except Exception:
            broken.append(name)
    return pm, broken


def selected_entry_points() -> list[md.EntryPoint]:
    """The ``trajkit.plugins`` entry points to load, once each (a distribution seen twice on the path is
    one), sorted by name, and only those named in ``TRAJKIT_LOAD_PLUGINS`` when it is set (empty: none).
    The analysis core's registry loads the same list."""
    allow_env = os.environ.get("TRAJKIT_LOAD_PLUGINS")
    allow = None if allow_env is None else {s.strip() for s in allow_env.split(",") if s.strip()}
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        if (ep.name, ep.value) in seen or (allow is not None and ep.name not in allow):
            continue
        seen.add((ep.name, ep.value))
        out.append(ep)
    return out


def _registered() -> tuple[dict[str, ModelEntry], list[str]]:
    models = _builtin_entries()
    pm, broken = _plugin_manager()
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
                          PluginWarning, stacklevel=3)
            continue
        models.update(added)
    return models, broken


def registered_models() -> dict[str, ModelEntry]:
    """Every rebuildable architecture: the built-ins plus those registered through the plugin hook.

    A plugin whose registration raises is skipped with a :class:`~trajkit.errors.PluginWarning` naming it.
    """
    return _registered()[0]


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
    keys = model_keys(metadata)
    if not keys:
        raise AnalysisError(f"{where}: metadata names no model (no model.spec, model.factory or "
                            f"model.class), so it cannot be rebuilt; {REGISTER_HELP}")
    models, broken = _registered()
    for _, name in keys:
        if name in models:
            return models[name]
    field, name = keys[0]
    failed = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
    raise AnalysisError(f"{where}: model {name!r} ({field}) is not a registered model (known: "
                        f"{', '.join(sorted(models))}); {REGISTER_HELP}{failed}")


def model_spec_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's argument: ``model.spec`` (without ``kind``), else ``model.kwargs``, else ``{}``."""
    model = metadata.get("model") or {}
    spec = model.get("spec")
    if isinstance(spec, Mapping):
        return {k: v for k, v in spec.items() if k != "kind"}
    return dict(model.get("kwargs") or {})
