"""Run metadata: building the root ``trajkit`` attribute and validating it against the JSON schema.

``schemas/archive.schema.json`` (draft 2020-12) is checked on write and on open; a failure lists the
JSON pointers of every failing field.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import importlib.metadata
import json
import platform
import subprocess
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from trajkit.archive.format import FORMAT_NAME, FORMAT_VERSION, to_jsonable
from trajkit.errors import MetadataError


def schema_path(name: str) -> Path:
    """Path of a shipped JSON schema (``trajkit/schemas`` in a wheel, ``schemas/`` in a checkout)."""
    try:
        p = resources.files("trajkit").joinpath("schemas", name)
        if p.is_file():
            return Path(str(p))
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - defensive
        pass
    return Path(__file__).resolve().parents[2] / "schemas" / name


@functools.cache
def _validator(name: str):
    import jsonschema

    schema = json.loads(schema_path(name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_problems(doc: Any, schema: str) -> list[tuple[str, str]]:
    """``[(json_pointer, message), ...]`` for every schema violation in ``doc`` (empty when valid)."""
    errors = sorted(_validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    out = []
    for e in errors:
        pointer = "/" + "/".join(str(p) for p in e.absolute_path) if e.absolute_path else ""
        out.append((pointer, e.message if len(e.message) < 160 else e.message[:157] + "..."))
    return out


def validate_metadata(meta: dict[str, Any], where: str) -> None:
    """Raise :class:`MetadataError` listing the failing JSON pointers unless ``meta`` is valid."""
    problems = schema_problems(meta, "archive.schema.json")
    if problems:
        raise MetadataError(where, problems)


def _installed_version(dist: str) -> str | None:
    """The version of the installed distribution ``dist`` (None if absent), read without importing it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """The versions of trajkit, Python, torch, numpy and zarr recorded in an archive's metadata.

    Read from the installed distributions (``importlib.metadata``): creating an archive never imports
    torch (a multi-second import), and a process that never imported it still records its version.
    """
    from trajkit.version import __version__

    return {"trajkit": __version__, "python": platform.python_version(), "torch": _installed_version("torch"),
            "numpy": _installed_version("numpy"), "zarr": _installed_version("zarr")}


def git_state(path: str | Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git work tree holding ``path`` (the cwd by default), or None."""
    cwd = str(path) if path else None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``extra`` (nested dicts merge; other values replace)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def build_metadata(n_params: int, layout: list[dict[str, Any]], user: dict[str, Any] | None) -> dict[str, Any]:
    """The root metadata of a new archive: required keys filled in, ``user`` merged on top.

    ``user`` is nested (``{"dynamics": {"lr": 0.1}}``); dotted keys (``{"dynamics.lr": 0.1}``) are
    accepted and expanded.
    """
    base: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "run_id": str(uuid.uuid4()),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "device": "cpu",
        "model": {"n_params": int(n_params)},
        "layout": layout,
    }
    git = git_state()
    if git is not None:
        base["git"] = git
    extra = expand_dotted(to_jsonable(user or {}))
    for fixed in ("format", "format_version"):
        extra.pop(fixed, None)
    meta = deep_merge(base, extra)
    meta["model"]["n_params"] = int(n_params)
    meta["layout"] = layout
    return meta


def expand_dotted(d: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}`` for the top-level keys only.

    Values are kept verbatim, so nested dicts whose keys contain dots (``ensemble.coords`` =
    ``{"dynamics.temperature": 1e-5}``) survive unchanged.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        parts = str(k).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(v, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = deep_merge(node[parts[-1]], v)
        else:
            node[parts[-1]] = v
    return out


def get_path(meta: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``meta["a"]["b"]`` for ``dotted == "a.b"``, or ``default`` when any level is missing."""
    node: Any = meta
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node
