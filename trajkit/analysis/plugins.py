"""Plugin discovery: a pluggy ``PluginManager("trajkit")`` fed one entry point at a time.

Every entry point of the group ``trajkit.plugins`` (first-party plugins in ``plugins/`` use it too) is
loaded on its own: import, ``pm.register`` (pluggy validates each hook implementation against
:mod:`~trajkit.analysis.hookspecs`), then its ``trajkit_register_analyses(register)`` is called with a
``register`` callable bound to that plugin, so every analysis knows its plugin, distribution and version.
A plugin that fails at any of these steps is unregistered, reported in a warning naming it, and listed in
``registry.broken`` with its error; the others load. Environment switches:

- ``TRAJKIT_STRICT_PLUGINS=1``: a broken plugin raises :class:`~trajkit.errors.PluginError` instead.
- ``TRAJKIT_LOAD_PLUGINS=a,b``: load only the entry points named ``a`` and ``b`` (empty: none).

Tests and notebooks may add a plugin object directly with :func:`register_plugin` and remove it with
:func:`unregister_plugin`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from trajkit.analysis import hookspecs
from trajkit.analysis.contract import Analysis, check_analysis_class
from trajkit.errors import AnalysisError, PluginError, PluginWarning
from trajkit.models import registry as model_registry
from trajkit.validation import did_you_mean

GROUP = model_registry.GROUP   # the entry-point group (trajkit.models.registry owns it)


@dataclass(frozen=True)
class AnalysisInfo:
    """A registered analysis and where it came from."""

    cls: type[Analysis]
    plugin: str
    distribution: str | None
    plugin_version: str | None

    @property
    def name(self) -> str:
        return self.cls.name

    def to_json(self) -> dict[str, Any]:
        d = self.cls.describe()
        d.update(plugin=self.plugin, distribution=self.distribution, plugin_version=self.plugin_version)
        return d


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to load, with its one-line error."""

    plugin: str
    distribution: str | None
    plugin_version: str | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "distribution": self.distribution,
                "plugin_version": self.plugin_version, "error": self.error}


@dataclass
class Registry:
    """Loaded plugins: ``analyses`` (name → :class:`AnalysisInfo`), ``broken``, ``plugins`` (names)."""

    pm: pluggy.PluginManager
    analyses: dict[str, AnalysisInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    plugins: list[dict[str, Any]] = field(default_factory=list)

    def get(self, name: str) -> AnalysisInfo:
        """The analysis called ``name``; the error suggests the closest name and mentions broken plugins."""
        if name in self.analyses:
            return self.analyses[name]
        hint = did_you_mean(name, self.analyses)
        broken = f" (broken plugins: {', '.join(b.plugin for b in self.broken)})" if self.broken else ""
        raise AnalysisError(f"no analysis named {name!r}{hint}; `trajkit plugins` lists them{broken}")


_registry_env: tuple[str | None, str | None] = (None, None)
_registry: Registry | None = None
_extra: list[tuple[Any, str]] = []


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _signature_problem(plugin: Any) -> str | None:
    """A one-line description quoting the signature of a hook implementation that does not match its spec."""
    for attr in dir(plugin):
        if not attr.startswith("trajkit_"):
            continue
        fn = getattr(plugin, attr, None)
        if not callable(fn) or not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            continue
        spec = getattr(hookspecs, attr, None)
        if spec is None:
            known = ", ".join(n for n in dir(hookspecs) if n.startswith("trajkit_"))
            return f"unknown hook {attr}{inspect.signature(fn)} (known hooks: {known})"
        extra = set(inspect.signature(fn).parameters) - set(inspect.signature(spec).parameters)
        if extra:
            return (f"hook implementation {attr}{inspect.signature(fn)} does not match the specification "
                    f"{attr}{inspect.signature(spec)}: unknown argument(s) {', '.join(sorted(extra))}")
    return None


def _load_one(reg: Registry, plugin: Any, name: str, dist: str | None, version: str | None) -> None:
    """Register ``plugin`` and call its registration hook; on failure undo and raise PluginError."""
    problem = _signature_problem(plugin)
    if problem:
        raise PluginError(problem)
    try:
        reg.pm.register(plugin, name=name)
    except pluggy.PluginValidationError as e:
        raise PluginError(f"invalid hook implementation: {_one_line(e)}") from None
    except ValueError as e:  # already registered under another name
        raise PluginError(_one_line(e)) from None
    added: dict[str, AnalysisInfo] = {}

    def register(cls: Any) -> None:
        check_analysis_class(cls, f"plugin {name!r}")
        if cls.name in reg.analyses or cls.name in added:
            other = reg.analyses.get(cls.name) or added[cls.name]
            raise AnalysisError(f"analysis name {cls.name!r} is already registered by plugin "
                                f"{other.plugin!r}")
        added[cls.name] = AnalysisInfo(cls, name, dist, version)

    try:
        for impl in reg.pm.hook.trajkit_register_analyses.get_hookimpls():
            if impl.plugin_name == name:
                impl.function(register=register)
    except Exception as e:
        reg.pm.unregister(name=name)
        raise PluginError(_one_line(e)) from None
    reg.analyses.update(added)
    reg.plugins.append({"plugin": name, "distribution": dist, "plugin_version": version,
                        "analyses": sorted(added)})


def _fail(reg: Registry, name: str, dist: str | None, version: str | None, error: str, strict: bool) -> None:
    msg = f"plugin {name!r}" + (f" ({dist} {version})" if dist else "") + f" failed to load: {error}"
    if strict:
        raise PluginError(msg + " (TRAJKIT_STRICT_PLUGINS=1)")
    warnings.warn(msg, PluginWarning, stacklevel=4)
    reg.broken.append(BrokenPlugin(name, dist, version, error))


def load_plugins() -> Registry:
    """A fresh :class:`Registry` from the installed entry points and the directly registered plugins."""
    strict = os.environ.get("TRAJKIT_STRICT_PLUGINS", "") not in ("", "0")
    reg = Registry(_new_manager())
    for ep in model_registry.selected_entry_points():
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        try:
            plugin = ep.load()
        except Exception as e:
            _fail(reg, ep.name, dist, version, f"import of {ep.value} failed: {_one_line(e)}", strict)
            continue
        try:
            _load_one(reg, plugin, ep.name, dist, version)
        except PluginError as e:
            _fail(reg, ep.name, dist, version, str(e), strict)
    for plugin, name in _extra:
        try:
            _load_one(reg, plugin, name, None, None)
        except PluginError as e:
            _fail(reg, name, None, None, str(e), strict)
    return reg


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use (``reload=True`` rescans the entry points)."""
    global _registry, _registry_env
    env = (os.environ.get("TRAJKIT_LOAD_PLUGINS"), os.environ.get("TRAJKIT_STRICT_PLUGINS"))
    if _registry is None or reload or env != _registry_env:  # the switches changed: rescan
        _registry = load_plugins()
        _registry_env = env
    return _registry


def register_plugin(plugin: Any, name: str) -> None:
    """Add a plugin object (module or instance with hook implementations) without an entry point."""
    _extra.append((plugin, name))
    model_registry.register_plugin(plugin, name)
    get_registry(reload=True)


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with :func:`register_plugin`."""
    _extra[:] = [(p, n) for p, n in _extra if n != name]
    model_registry.unregister_plugin(name)
    get_registry(reload=True)


def find_analysis_class(name: str) -> type[Analysis] | None:
    """The registered analysis class called ``name``, or None (never raises)."""
    try:
        info = get_registry().analyses.get(name)
    except Exception:
        return None
    return info.cls if info else None
