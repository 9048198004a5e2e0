"""The analysis contract: :class:`Analysis` (what a measurement declares) and :class:`Param` (its options).

An analysis is a class with a ``name``, a ``version``, a one-line ``description``, what it ``needs``, typed
``params`` and a ``compute`` method returning a :class:`~trajkit.analysis.Result`. The core validates the
parameters (unknown key, wrong type, out of range) *before any data is read*, opens the data the analysis
needs, calls ``compute`` and fills the result's parameters and provenance. A complete analysis::

    import numpy as np
    from trajkit.analysis import Analysis, Param, Result, hookimpl

    class MeanSquareDisplacement(Analysis):
        name = "msd-from-start"
        version = "1.0.0"
        description = "Mean square displacement from the first snapshot, Δ(t) = |w(t) − w(0)|² / N."
        needs = "archive"
        params = (Param("select", "str", default="all", help="parameter subset, e.g. weights or layer:0"),)

        def compute(self, data, params, ctx):
            cols = data.select(params["select"])
            pairs = np.stack([np.zeros(data.n_snapshots, int), np.arange(data.n_snapshots)], axis=1)
            sums = ctx.kernels.pair_sums(data, pairs, cols=cols, sums=("sq",))
            return Result(arrays={"msd": (sums["sq"] / cols.size, ("step",))},
                          coords={"step": data.steps})

    @hookimpl
    def trajkit_register_analyses(register):
        register(MeanSquareDisplacement)

``needs`` is ``"archive"`` (``data`` is one :class:`~trajkit.archive.Archive`), ``"ensemble"`` (``data``
is an :class:`~trajkit.analysis.Ensemble` of replicas whose N, layout and step schedule agree) or
``"groups"`` (``data`` is ``{group value: Ensemble}`` split by the metadata key in parameter ``group_by``;
the core adds ``group_by`` with default ``dynamics.temperature`` when the class does not declare it).

Parameter types: ``int``, ``float``, ``str``, ``bool``, and the list types ``ints``, ``floats``, ``strs``.
A list type also accepts a single value and keeps it scalar (so ``waiting_times`` can be ``8``, meaning
"8 log-spaced snapshots", or ``[100, 1000]``); on the command line ``-p waiting_times=8`` gives ``8``,
``-p waiting_times=100,1000`` gives ``[100, 1000]`` and ``-p waiting_times=100,`` gives ``[100]``. A
parameter whose default is ``None`` also accepts ``none`` / ``null``. Ranges: ``min`` / ``max``
(inclusive), ``choices``, or a ``check`` predicate with a ``valid`` text shown in errors and help.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from trajkit.errors import AnalysisError

if TYPE_CHECKING:
    from trajkit.analysis.result import Result

TYPES = ("int", "float", "str", "bool", "ints", "floats", "strs")
NEEDS = ("archive", "ensemble", "groups")
_SCALAR = {"ints": "int", "floats": "float", "strs": "str"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "ints": "an integer or a comma-separated list of integers",
               "floats": "a number or a comma-separated list of numbers",
               "strs": "a string or a comma-separated list of strings"}


@dataclass(frozen=True)
class Param:
    """One typed, documented, validated analysis parameter.

    ``Param(name, type, default=None, help="", choices=None, min=None, max=None, check=None, valid=None)``:
    ``type`` is one of :data:`TYPES`; ``choices`` restricts values (each element for list types);
    ``min``/``max`` are inclusive bounds (each element for list types); ``check(value) -> bool`` is any
    further condition, described to users by ``valid`` (e.g. ``"> 0"``).
    """

    name: str
    type: str = "str"
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    check: Callable[[Any], bool] | None = field(default=None, compare=False)
    valid: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise AnalysisError(f"Param {self.name!r}: type {self.type!r} is not one of {', '.join(TYPES)}")
        if not self.name.isidentifier():
            raise AnalysisError(f"Param {self.name!r}: names must be Python identifiers (e.g. waiting_times)")

    # -- description -------------------------------------------------------------------------------

    @property
    def is_list(self) -> bool:
        return self.type in _SCALAR

    @property
    def nullable(self) -> bool:
        return self.default is None

    def valid_text(self) -> str:
        """Human description of the valid values, e.g. ``"a number, > 0"`` or ``"one of waiting, lag"``."""
        parts = [_TYPE_WORDS[self.type]]
        if self.choices is not None:
            parts.append("one of " + ", ".join(str(c) for c in self.choices))
        if self.min is not None and self.max is not None:
            parts.append(f"in [{self.min}, {self.max}]")
        elif self.min is not None:
            parts.append(f">= {self.min}")
        elif self.max is not None:
            parts.append(f"<= {self.max}")
        if self.valid:
            parts.append(self.valid)
        if self.nullable:
            parts.append("or none")
        return ", ".join(parts)

    # -- parsing and validation --------------------------------------------------------------------

    def parse(self, text: str) -> Any:
        """The value of a command-line string (``-p name=text``); :class:`AnalysisError` if malformed."""
        s = text.strip()
        if self.nullable and s.lower() in _NONE:
            return None
        if self.is_list:
            body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
            if "," in body or s.startswith("["):
                items = [t.strip() for t in body.split(",") if t.strip()]
                return [self._parse_scalar(t, _SCALAR[self.type]) for t in items]
            return self._parse_scalar(s, _SCALAR[self.type])
        return self._parse_scalar(s, self.type)

    def _parse_scalar(self, s: str, kind: str) -> Any:
        try:
            if kind == "int":
                f = float(s)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            if kind == "float":
                return float(s)
            if kind == "bool":
                if s.lower() in _TRUE:
                    return True
                if s.lower() in _FALSE:
                    return False
                raise ValueError
            return s
        except (ValueError, OverflowError):
            raise AnalysisError(f"parameter {self.name!r}: cannot read {s!r}; expected {self.valid_text()}") \
                from None

    def validate(self, value: Any) -> Any:
        """``value`` coerced to the parameter's type and checked; raises :class:`AnalysisError` naming it."""
        if value is None:
            if self.nullable:
                return None
            raise AnalysisError(f"parameter {self.name!r} must be set; expected {self.valid_text()}")
        if isinstance(value, str) and self.type not in ("str", "strs"):
            value = self.parse(value)
        if self.is_list and isinstance(value, Iterable) and not isinstance(value, str | bytes):
            items = list(value)
            out: Any = [self._coerce(v, _SCALAR[self.type]) for v in items]
            for v in out:
                self._check_range(v, out)
        else:
            out = self._coerce(value, _SCALAR.get(self.type, self.type))
            self._check_range(out, out)
        if self.check is not None:
            try:
                ok = bool(self.check(out))
            except Exception:
                ok = False
            if not ok:
                raise AnalysisError(f"parameter {self.name!r}={_show(out)} is out of range; valid: "
                                    f"{self.valid or 'see --help'}")
        return out

    def _coerce(self, v: Any, kind: str) -> Any:
        import numpy as np

        bad = AnalysisError(f"parameter {self.name!r}: got {_show(v)} ({type(v).__name__}); expected "
                            f"{self.valid_text()}")
        if kind == "bool":
            if isinstance(v, bool | np.bool_):
                return bool(v)
            if isinstance(v, str):
                return self._parse_scalar(v, "bool")
            raise bad
        if kind == "int":
            if isinstance(v, bool | np.bool_):
                raise bad
            if isinstance(v, int | np.integer):
                return int(v)
            if isinstance(v, float | np.floating) and float(v).is_integer():
                return int(v)
            if isinstance(v, str):
                return self._parse_scalar(v, "int")
            raise bad
        if kind == "float":
            if isinstance(v, bool | np.bool_):
                raise bad
            if isinstance(v, int | float | np.integer | np.floating):
                f = float(v)
                if math.isnan(f):
                    raise bad
                return f
            if isinstance(v, str):
                return self._parse_scalar(v, "float")
            raise bad
        if not isinstance(v, str):
            raise bad
        return v

    def _check_range(self, v: Any, whole: Any) -> None:
        if self.choices is not None and v not in self.choices:
            close = difflib.get_close_matches(str(v), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AnalysisError(f"parameter {self.name!r}={_show(whole)} is not allowed{hint}; valid: one of "
                                + ", ".join(str(c) for c in self.choices))
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise AnalysisError(f"parameter {self.name!r}={_show(whole)} is out of range; valid: "
                                f"{self.valid_text()}")


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


class Analysis:
    """Base class of every analysis; subclass it, set the class attributes and write :meth:`compute`.

    Class attributes: ``name`` (unique, used by ``trajkit analyze --plugin NAME``), ``version``,
    ``description`` (one line), ``needs`` (``"archive"``, ``"ensemble"`` or ``"groups"``), ``params``
    (a tuple of :class:`Param`). Optional method ``plot(self, result, fig)`` draws a result into a
    matplotlib Figure and returns it.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "archive"
    params: ClassVar[tuple[Param, ...]] = ()

    def compute(self, data: Any, params: dict[str, Any], ctx: Context) -> Result:
        """The result for ``data`` (see ``needs``) and validated ``params``; ``ctx`` gives the kernels."""
        raise NotImplementedError(f"analysis {self.name!r} does not implement compute()")

    # -- parameters --------------------------------------------------------------------------------

    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        """The declared parameters plus ``group_by`` for ``needs = "groups"`` / ``"ensemble"`` when not declared."""
        ps = tuple(cls.params)
        if cls.needs == "groups" and not any(p.name == "group_by" for p in ps):
            ps += (Param("group_by", "str", default="dynamics.temperature",
                         help="metadata key (dotted) whose values split the ensemble into groups"),)
        if cls.needs == "ensemble" and not any(p.name == "group_by" for p in ps):      # trajkit.analysis.grouping
            ps += (Param("group_by", "str", default="auto",
                         help="auto: one result per sweep point; none: pool all runs (stated in the result); "
                              "or metadata keys, comma-separated"),)
        return ps

    @classmethod
    def resolve_params(cls, given: dict[str, Any] | None = None, *, from_cli: bool = False) -> dict[str, Any]:
        """Defaults updated by ``given``, every value validated; :class:`AnalysisError` on the first problem.

        Unknown keys are reported with the closest valid name. With ``from_cli`` the values are strings
        from ``-p key=value`` and are parsed first.
        """
        by_name = {p.name: p for p in cls.all_params()}
        given = dict(given or {})
        for key in given:
            if key not in by_name:
                close = difflib.get_close_matches(key, list(by_name), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                names = ", ".join(by_name) or "none"
                raise AnalysisError(f"analysis {cls.name!r} has no parameter {key!r}{hint} "
                                    f"(parameters: {names})")
        out: dict[str, Any] = {}
        for name, p in by_name.items():
            if name in given:
                v = given[name]
                if from_cli and isinstance(v, str):
                    v = p.parse(v)
                out[name] = p.validate(v)
            else:
                out[name] = p.default if p.default is None else p.validate(p.default)
        return out

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A JSON-ready description: name, version, description, needs, params with defaults and help."""
        return {"name": cls.name, "version": cls.version, "description": cls.description, "needs": cls.needs,
                "params": [{"name": p.name, "type": p.type, "default": p.default, "help": p.help,
                            "valid": p.valid_text()} for p in cls.all_params()]}

    def __repr__(self) -> str:
        return f"<analysis {self.name} {self.version}>"


def check_analysis_class(cls: Any, where: str) -> None:
    """Raise :class:`AnalysisError` unless ``cls`` meets the contract (called when a plugin registers it)."""
    if not (isinstance(cls, type) and issubclass(cls, Analysis)):
        raise AnalysisError(f"{where}: register() got {cls!r}; pass a subclass of trajkit.analysis.Analysis")
    label = f"{where}: analysis {cls.__name__}"
    if not isinstance(cls.name, str) or not cls.name or any(c.isspace() for c in cls.name):
        raise AnalysisError(f"{label} has no valid name (set name = 'short-name', no spaces)")
    if not isinstance(cls.version, str) or not cls.version:
        raise AnalysisError(f"{label} has no version string")
    if not isinstance(cls.description, str) or not cls.description.strip() or "\n" in cls.description.strip():
        raise AnalysisError(f"{label} needs a one-line description")
    if cls.needs not in NEEDS:
        raise AnalysisError(f"{label}: needs={cls.needs!r}; use one of {', '.join(NEEDS)}")
    names = [p.name for p in cls.all_params() if isinstance(p, Param)]
    if len(names) != len(cls.all_params()):
        raise AnalysisError(f"{label}: params must be Param(...) instances")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise AnalysisError(f"{label}: duplicate parameter {sorted(dup)[0]!r}")
    reserved = {"device", "out", "debug"}
    if reserved & set(names):
        raise AnalysisError(f"{label}: parameter name {sorted(reserved & set(names))[0]!r} is reserved")
    if cls.compute is Analysis.compute:
        raise AnalysisError(f"{label} does not implement compute(self, data, params, ctx)")
    try:
        cls.resolve_params({})
    except AnalysisError as e:
        raise AnalysisError(f"{label}: invalid default: {e}") from None


class Context:
    """What :meth:`Analysis.compute` gets besides the data: device, progress bars and the pair kernels.

    ``ctx.device`` is ``"cpu"`` or ``"cuda"``; ``ctx.progress(iterable, total=None, desc=None)`` wraps an
    iterable in a progress bar (silent when disabled); ``ctx.kernels.pair_sums(...)`` and
    ``ctx.kernels.gram(...)`` are :mod:`trajkit.analysis.kernels` with this device and progress bound.
    """

    def __init__(self, device: str | None = None, show_progress: bool = False, analysis: str = ""):
        from trajkit.analysis.kernels import resolve_device

        self.device = resolve_device(device)
        self.show_progress = show_progress
        self.analysis = analysis
        self.kernels = _BoundKernels(self)

    def progress(self, iterable: Iterable[Any], total: int | None = None,
                 desc: str | None = None) -> Iterable[Any]:
        """``iterable`` with a tqdm progress bar on stderr when progress is shown, else unchanged."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc or self.analysis, leave=False)

    def __repr__(self) -> str:
        return f"Context(device={self.device!r}, progress={self.show_progress})"


class _BoundKernels:
    """:mod:`trajkit.analysis.kernels` with the context's device and progress as defaults."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def pair_sums(self, archive: Any, pairs: Any, **kw: Any) -> dict[str, Any]:
        from trajkit.analysis import kernels

        kw.setdefault("device", self._ctx.device)
        kw.setdefault("progress", self._ctx.show_progress)
        return kernels.pair_sums(archive, pairs, **kw)

    def gram(self, archive: Any, **kw: Any) -> tuple[Any, Any]:
        from trajkit.analysis import kernels

        kw.setdefault("device", self._ctx.device)
        kw.setdefault("progress", self._ctx.show_progress)
        return kernels.gram(archive, **kw)

    def __getattr__(self, name: str) -> Any:
        from trajkit.analysis import kernels

        return getattr(kernels, name)
