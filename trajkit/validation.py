"""One validation layer for user input: JSON Schema rules, and one "did you mean".

Every value a user hands trajkit (a ``trajkit record`` config key, a ``--set`` override, an analysis
parameter given as ``-p key=value`` or as a Python keyword) is described by a JSON Schema fragment
(Draft 2020-12) and checked by :mod:`jsonschema`, whose two numeric types are tightened to what trajkit
can store in JSON metadata:

- ``"number"`` is an ``int`` or a *finite* ``float`` — never a ``bool``, NaN or ±inf (TOML, ``--set`` and
  ``float("nan")`` can all produce those; JSON cannot hold them);
- ``"integer"`` is an ``int`` — never a ``bool``, and never a float such as ``1.0``.

:func:`first_violation` returns the first broken rule as a :class:`Violation`; each caller phrases it as
its one-line error (the config names ``section.key``, the analysis core names ``parameter 'x'``), so the
rules live in one place and the wording stays the caller's. :func:`closest` / :func:`did_you_mean` are
the only "did you mean" logic in trajkit.

>>> first_violation({"type": "number", "minimum": 0}, float("nan")).rule
'finite'
>>> did_you_mean("epsilom", ["epsilon", "mode"])
"; did you mean 'epsilon'?"
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Violation", "check_schema", "closest", "did_you_mean", "first_violation", "is_finite_number",
           "trajkit_validator_class", "validator"]


def is_finite_number(value: Any) -> bool:
    """True for an ``int`` or a finite ``float`` (``bool`` is not a number here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_number(_checker: Any, value: Any) -> bool:
    return is_finite_number(value)


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def trajkit_validator_class() -> Any:
    """Draft 2020-12 with trajkit's numeric types (finite numbers, integers that are ints); built on first
    use so that importing trajkit does not import :mod:`jsonschema`."""
    import jsonschema

    types = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_number, "integer": _is_integer})
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=types)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise :class:`jsonschema.SchemaError` unless ``schema`` is a valid Draft 2020-12 schema."""
    trajkit_validator_class().check_schema(schema)


def validator(schema: dict[str, Any]) -> Any:
    """A validator of :func:`trajkit_validator_class` for ``schema`` (not re-checked against the
    meta-schema: see :func:`check_schema`)."""
    return trajkit_validator_class()(schema)


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    ``path`` locates the offending value inside the instance (keys and list indices; ``()`` is the whole
    instance); ``rule`` is the JSON Schema keyword that failed (``type``, ``enum``, ``minimum``,
    ``exclusiveMinimum``, ``maximum``, ``exclusiveMaximum``, ``minItems``, ``additionalProperties``, ...)
    or ``"finite"`` for NaN/±inf where a (finite) number is expected; ``value`` is the offending value (for
    ``additionalProperties``: the first unknown key); ``limit`` is the rule's value in the schema (the
    bound, the allowed values, the expected type; for ``additionalProperties`` the known keys).
    """

    path: tuple[Any, ...]
    rule: str
    value: Any
    limit: Any


def _violation(err: Any) -> Violation:
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties":
        known = list(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in known]
        return Violation(path, "additionalProperties", unknown[0], known)
    value = err.instance
    expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    if err.validator == "type" and "number" in expected and isinstance(value, float) and not math.isfinite(value):
        return Violation(path, "finite", value, err.validator_value)
    return Violation(path, str(err.validator), value, err.validator_value)


def _order(instance: Any, path: tuple[Any, ...]) -> tuple[int, ...]:
    """Position of ``path`` in a walk of ``instance`` (dicts in insertion order, lists by index)."""
    out, node = [], instance
    for part in path:
        if isinstance(node, dict):
            keys = list(node)
            out.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        else:
            out.append(0)
    return tuple(out)


def first_violation(schema: dict[str, Any], instance: Any) -> Violation | None:
    """The first rule of ``schema`` that ``instance`` breaks, or None when it is valid.

    "First": the shallowest problem (an unknown section before a bad value inside a section), then the
    one met first walking the instance in its own order.
    """
    errors = list(validator(schema).iter_errors(instance))
    if not errors:
        return None
    best = min(errors, key=lambda e: (len(e.absolute_path), _order(instance, tuple(e.absolute_path)),
                                      e.validator != "type"))
    return _violation(best)


def env_seconds(name: str, default: float, error: type[Exception] = ValueError) -> float:
    """A positive number of seconds from environment variable ``name`` (``default`` when unset); ``error``
    with one line naming the variable when it is not one."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise error(f"{name}={raw!r} must be a positive number of seconds")
    return value


def closest(word: Any, options: Iterable[Any], cutoff: float = 0.6) -> str | None:
    """The option closest to ``word`` (difflib ratio ≥ ``cutoff``), or None.

    For dotted names (``dynamics.temprature``) a miss on the whole name falls back to the last
    component (``temprature`` ~ ``temperature``), returning the full option.
    """
    opts = [str(o) for o in options]
    text = str(word)
    close = difflib.get_close_matches(text, opts, n=1, cutoff=cutoff)
    if close:
        return close[0]
    if any("." in o for o in opts):
        tails = {o.rsplit(".", 1)[-1]: o for o in opts}
        close = difflib.get_close_matches(text.rsplit(".", 1)[-1], list(tails), n=1, cutoff=max(cutoff, 0.6))
        if close:
            return tails[close[0]]
    return None


def did_you_mean(word: Any, options: Iterable[Any], *, quote: bool = True, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` (``quote=False``: ``"; did you mean x?"``) for the closest option, or ``""``."""
    c = closest(word, options, cutoff)
    if c is None:
        return ""
    return f"; did you mean {c!r}?" if quote else f"; did you mean {c}?"
