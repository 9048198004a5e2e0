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
is an :class:`~trajkit.analysis.Ensemble` of replicas whose N, layout and step schedule agree), ``"runs"``
(an :class:`~trajkit.analysis.Ensemble` of runs of one architecture, N and layout checked, whose snapshot
schedules may differ: ``data.steps`` are the steps every run has, each run's row is ``archive.row(step)``) or
``"groups"`` (``data`` is ``{group value: Ensemble}`` split by the metadata key in parameter ``group_by``;
the core adds ``group_by`` with default ``dynamics.temperature`` when the class does not declare it).

Parameter types: ``int``, ``float``, ``str``, ``bool``, and the list types ``ints``, ``floats``, ``strs``.
A parameter's meaning never depends on the type of its value: a list type always comes back as a list
(``waiting_times=20000`` and ``-p waiting_times=20000`` give ``[20000]``, step 20000; ``-p
waiting_times=100,1000`` gives ``[100, 1000]``), and a count gets its own ``int`` parameter
(``n_waiting_times=8``: 8 log-spaced snapshots). Two parameters that say the same thing two ways declare
``excludes`` and may not be given together. A parameter whose default is ``None`` also accepts ``none`` /
``null``. Ranges: ``min`` / ``max`` (inclusive), ``choices``, or a ``check`` predicate with a ``valid``
text shown in errors and help. Numbers are finite: NaN and ±inf are refused like any out-of-range value.

Validation is :mod:`trajkit.validation` (JSON Schema, one rule set with the ``trajkit record`` config):
each :class:`Param` has a :meth:`~Param.json_schema`, an analysis's whole parameter set
:meth:`~Analysis.json_schema` (``trajkit plugins --json`` shows them). Values are first normalised
(numpy scalars to Python, ``3.0`` to ``3`` for an ``int``, a single value to a one-element list, strings
parsed as ``-p`` does), then checked against the schema, then by ``check``. Parameter names may not be a
keyword of :func:`trajkit.analyze` (:data:`ANALYZE_KEYWORDS`) nor a ``trajkit analyze`` option
(:data:`CLI_OPTIONS`): such an analysis is refused when its plugin registers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from trajkit.devices import resolve_device
from trajkit.errors import AnalysisError
from trajkit.validation import Violation, closest, did_you_mean, first_violation, is_finite_number

if TYPE_CHECKING:
    from trajkit.analysis.result import Result

TYPES = ("int", "float", "str", "bool", "ints", "floats", "strs")
NEEDS = ("archive", "ensemble", "runs", "groups")
#: keywords of :func:`trajkit.analyze` other than analysis parameters; no parameter may take these names
ANALYZE_KEYWORDS = ("name", "archives", "device", "progress", "storage_options", "scheduler")
#: options of ``trajkit analyze`` (and keywords of the old ``analyze`` signature) that are not analysis
#: parameters: :func:`trajkit.analyze` refuses them, and no parameter may take these names
CLI_OPTIONS = ("plugin", "param", "params", "out", "json", "help", "debug", "from_cli")
_SCALAR = {"ints": "int", "floats": "float", "strs": "str"}
_SCHEMA_TYPE = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
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

    ``Param(name, type, default=None, help="", choices=None, min=None, max=None, check=None, valid=None,
    excludes=())``: ``type`` is one of :data:`TYPES`; ``choices`` restricts values (each element for list
    types); ``min``/``max`` are inclusive bounds (each element for list types); ``check(value) -> bool`` is
    any further condition, described to users by ``valid`` (e.g. ``"> 0"``); ``excludes`` names the
    parameters that may not be given together with this one (two ways of saying the same thing, such as
    ``waiting_times`` and ``n_waiting_times``).
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
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise AnalysisError(f"Param {self.name!r}: type {self.type!r} is not one of {', '.join(TYPES)}")
        if not self.name.isidentifier():
            raise AnalysisError(f"Param {self.name!r}: names must be Python identifiers (e.g. waiting_times)")
        if isinstance(self.excludes, str):
            object.__setattr__(self, "excludes", (self.excludes,))
        for bound in ("min", "max"):
            if getattr(self, bound) is not None and not is_finite_number(getattr(self, bound)):
                raise AnalysisError(f"Param {self.name!r}: {bound}={getattr(self, bound)!r} must be a finite number")
        if self.choices is not None and (isinstance(self.choices, str) or not isinstance(self.choices, Iterable)):
            raise AnalysisError(f"Param {self.name!r}: choices={self.choices!r} must be a list of values")

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

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (Draft 2020-12, :mod:`trajkit.validation`'s numeric types) of a valid value.

        ``check`` is a Python predicate and is not part of it.
        """
        item: dict[str, Any] = {"type": _SCHEMA_TYPE[_SCALAR.get(self.type, self.type)]}
        if self.choices is not None:
            item["enum"] = list(self.choices)
        if self.min is not None:
            item["minimum"] = self.min
        if self.max is not None:
            item["maximum"] = self.max
        schema = {"type": "array", "items": item} if self.is_list else item
        if self.nullable:
            schema = {**schema, "type": [schema["type"], "null"]}
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema

    # -- parsing and validation --------------------------------------------------------------------

    def parse(self, text: str) -> Any:
        """The value of a command-line string (``-p name=text``); :class:`AnalysisError` if malformed.

        A list type gives a list: ``"100"`` → ``[100]``, ``"100,1000"`` and ``"[100, 1000]"`` →
        ``[100, 1000]``.
        """
        s = text.strip()
        if self.nullable and s.lower() in _NONE:
            return None
        if self.is_list:
            body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
            items = [t.strip() for t in body.split(",") if t.strip()]
            return [self._parse_scalar(t, _SCALAR[self.type]) for t in items]
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

    def normalize(self, value: Any) -> Any:
        """``value`` in the parameter's Python form, not yet checked: strings parsed (non-string types),
        numpy scalars made Python, ``3.0`` → ``3`` for integers, ``3`` → ``3.0`` for floats, and for a
        list type a single value made a one-element list (tuples and arrays made lists)."""
        if value is None:
            return None
        if isinstance(value, str) and self.type not in ("str", "strs"):
            value = self.parse(value)
        if not self.is_list:
            return self._normalize_scalar(value, self.type)
        items = list(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]
        return [self._normalize_scalar(v, _SCALAR[self.type]) for v in items]

    def _normalize_scalar(self, v: Any, kind: str) -> Any:
        if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", None) == 0:
            v = v.item()                                   # numpy scalar or 0-d array
        if isinstance(v, str) and kind != "str":
            return self._parse_scalar(v, kind)
        if isinstance(v, bool):
            return v
        if kind == "int" and isinstance(v, float) and v.is_integer():
            return int(v)
        if kind == "float" and isinstance(v, int):
            return float(v)
        return v

    def validate(self, value: Any) -> Any:
        """``value`` normalised (:meth:`normalize`) and checked; raises :class:`AnalysisError` naming it."""
        if value is None:
            if self.nullable:
                return None
            raise AnalysisError(f"parameter {self.name!r} must be set; expected {self.valid_text()}")
        out = self.normalize(value)
        problem = first_violation(self.json_schema(), out)
        if problem is not None:
            raise AnalysisError(self._message(problem, out))
        if self.check is not None:
            try:
                ok = bool(self.check(out))
            except Exception:
                ok = False
            if not ok:
                raise AnalysisError(f"parameter {self.name!r}={_show(out)} is out of range; valid: "
                                    f"{self.valid or self.valid_text()}")
        return out

    def _message(self, v: Violation, whole: Any) -> str:
        """The one-line error for a broken rule of :meth:`json_schema`."""
        if v.rule == "finite":
            return f"parameter {self.name!r}={_show(whole)} is not a finite number; expected {self.valid_text()}"
        if v.rule == "type":
            return (f"parameter {self.name!r}: got {_show(v.value)} ({type(v.value).__name__}); expected "
                    f"{self.valid_text()}")
        if v.rule == "enum":
            close = closest(v.value, [c for c in self.choices or () if c is not None])
            hint = f" (did you mean {close!r}?)" if close else ""
            return (f"parameter {self.name!r}={_show(whole)} is not allowed{hint}; valid: one of "
                    + ", ".join(str(c) for c in self.choices or ()))
        return f"parameter {self.name!r}={_show(whole)} is out of range; valid: {self.valid_text()}"


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
        if cls.needs in ("ensemble", "runs") and not any(p.name == "group_by" for p in ps):   # analysis.grouping
            ps += (Param("group_by", "str", default="auto",
                         help="auto: one result per sweep point; none: pool all runs (stated in the result); "
                              "or metadata keys, comma-separated"),)
        return ps

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of a complete parameter set (each :meth:`Param.json_schema`, no other keys)."""
        return {"type": "object", "properties": {p.name: p.json_schema() for p in cls.all_params()},
                "additionalProperties": False}

    @classmethod
    def resolve_params(cls, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``given``, every value validated; :class:`AnalysisError` on the first problem.

        Unknown keys are reported with the closest valid name; parameters that exclude each other may not
        both be given. String values are parsed as ``-p key=value`` does (for non-string types).
        """
        params = cls.all_params()
        by_name = {p.name: p for p in params}
        given = dict(given or {})
        names_only = {"type": "object", "properties": {n: {} for n in by_name}, "additionalProperties": False}
        unknown = first_violation(names_only, {k: None for k in given})
        if unknown is not None:
            names = ", ".join(by_name) or "none"
            raise AnalysisError(f"analysis {cls.name!r} has no parameter {unknown.value!r}"
                                f"{did_you_mean(unknown.value, by_name)} (parameters: {names})")
        for p in params:
            clash = [e for e in p.excludes if p.name in given and e in given]
            if clash:
                raise AnalysisError(f"analysis {cls.name!r}: give {p.name} or {clash[0]}, not both "
                                    f"({p.name}: {p.help or p.valid_text()})")
        out: dict[str, Any] = {}
        for p in params:
            if p.name in given:
                out[p.name] = p.validate(given[p.name])
            else:
                out[p.name] = p.default if p.default is None else p.validate(p.default)
        return out

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A JSON-ready description: name, version, description, needs, params with defaults, help, the
        valid values in words and as JSON Schema."""
        return {"name": cls.name, "version": cls.version, "description": cls.description, "needs": cls.needs,
                "params": [{"name": p.name, "type": p.type, "default": p.default, "help": p.help,
                            "valid": p.valid_text(), "schema": p.json_schema(),
                            **({"excludes": list(p.excludes)} if p.excludes else {})}
                           for p in cls.all_params()]}

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
    for n in names:
        if n in ANALYZE_KEYWORDS:
            raise AnalysisError(f"{label}: parameter {n!r} collides with the keyword {n!r} of trajkit.analyze("
                                "name, archives, *, device, progress, storage_options, scheduler, **params); "
                                "rename it")
        if n in CLI_OPTIONS:
            raise AnalysisError(f"{label}: parameter {n!r} collides with the `trajkit analyze` option of that "
                                "name; rename it")
    for p in cls.all_params():
        stray = [e for e in p.excludes if e not in names]
        if stray:
            raise AnalysisError(f"{label}: parameter {p.name!r} excludes {stray[0]!r}, which it does not declare")
    if cls.compute is Analysis.compute:
        raise AnalysisError(f"{label} does not implement compute(self, data, params, ctx)")
    try:
        cls.resolve_params({})
    except AnalysisError as e:
        raise AnalysisError(f"{label}: invalid default: {e}") from None


class Context:
    """What :meth:`Analysis.compute` gets besides the data: device, progress bars and the pair kernels.

    ``ctx.device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:K"`` (:func:`trajkit.devices.resolve_device`);
    ``ctx.progress(iterable, total=None, desc=None)`` wraps an iterable in a progress bar (silent when
    disabled); ``ctx.kernels.pair_sums(...)`` and ``ctx.kernels.gram(...)`` are
    :mod:`trajkit.analysis.kernels` with this device and progress bound — and, on a Dask cluster
    (``ctx.executor``, a :class:`trajkit.analysis.tasks.Executor`), one task per column block.
    ``ctx.map(fn, *iterables, desc=None, **kwargs)`` is ``[fn(*items, **kwargs) for items in
    zip(*iterables)]``, each call a task on the cluster when there is one (``fn`` importable on the workers,
    :class:`~trajkit.archive.Archive` arguments reopened there by path).
    """

    def __init__(self, device: str | None = None, show_progress: bool = False, analysis: str = "",
                 executor: Any = None):
        self.device = resolve_device(device)
        self.show_progress = show_progress
        self.analysis = analysis
        self.executor = executor
        self.kernels = _BoundKernels(self)

    def map(self, fn: Any, *iterables: Iterable[Any], desc: str | None = None, **kwargs: Any) -> list[Any]:
        """``fn`` over the zipped ``iterables`` with shared ``kwargs``, results in order (tasks on a cluster)."""
        if self.executor is not None:
            return self.executor.map(fn, *iterables, desc=desc, **kwargs)
        items = list(zip(*iterables, strict=True))
        return [fn(*args, **kwargs) for args in self.progress(items, total=len(items), desc=desc)]

    def progress(self, iterable: Iterable[Any], total: int | None = None,
                 desc: str | None = None) -> Iterable[Any]:
        """``iterable`` with a tqdm progress bar on stderr when progress is shown, else unchanged."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc or self.analysis, leave=False)

    def __repr__(self) -> str:
        where = "" if self.executor is None else f", executor={self.executor!r}"
        return f"Context(device={self.device!r}, progress={self.show_progress}{where})"


class _BoundKernels:
    """:mod:`trajkit.analysis.kernels` with the context's device and progress as defaults."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def pair_sums(self, archive: Any, pairs: Any, **kw: Any) -> dict[str, Any]:
        from trajkit.analysis import kernels

        kw.setdefault("device", self._ctx.device)
        kw.setdefault("progress", self._ctx.show_progress)
        kw.setdefault("executor", self._ctx.executor)
        return kernels.pair_sums(archive, pairs, **kw)

    def gram(self, archive: Any, **kw: Any) -> tuple[Any, Any]:
        from trajkit.analysis import kernels

        kw.setdefault("device", self._ctx.device)
        kw.setdefault("progress", self._ctx.show_progress)
        kw.setdefault("executor", self._ctx.executor)
        return kernels.gram(archive, **kw)

    def __getattr__(self, name: str) -> Any:
        from trajkit.analysis import kernels

        return getattr(kernels, name)
