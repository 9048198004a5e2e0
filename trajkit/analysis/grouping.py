"""Sweep groups: an ensemble analysis never averages over runs of different sweep points silently.

A *sweep point* is what tells runs apart beyond being replicas: the coordinates ``trajkit record`` writes
to ``ensemble.coords``, and the ``dynamics``, ``model``, ``dataset``, ``loss``, ``optimizer`` and
``config`` metadata — ignoring keys named ``seed``, ``replica``, ``replicas``, ``run_id``, ``id``,
``device`` and ``init_from`` (they differ between replicas of one point) unless they are themselves
sweep coordinates. The *label keys* of a sweep are the fewest varying keys, coordinates first, that tell
its points apart (a temperature sweep: ``dynamics.temperature``).

Every ``needs = "ensemble"`` analysis that does not declare ``group_by`` itself gets the parameter
(:meth:`Analysis.all_params <trajkit.analysis.contract.Analysis.all_params>`):

- ``auto`` (default): ``compute`` runs once per sweep point; with one point the result is exactly the
  plain result, with several it is a *grouped result* (below);
- ``none``: one computation over all runs; when they span several points the result says so: scalar
  ``pooled_groups`` (the points' labels), ``result.grouping["pooled"]`` and a :class:`GroupingNotice`;
- metadata keys (dotted, comma-separated): one group per value; sweep points mixed inside a group are
  stated the same way (``pooled_groups`` per group).

An analysis that declares ``group_by`` (``relaxation``) groups in its own ``compute``; the core only
states the pooling when its value is ``none``. A ``needs = "groups"`` analysis (``loss``) gets its groups
by its own key as before; when one of them mixes sweep points (``loss`` by ``model.n_params`` on a
temperature sweep) the result says so in ``pooled_groups`` (one list per group) and a notice.

Grouped result of G groups (:func:`stack_results`; :meth:`Result.group` gives back group i as a plain
result, the one the analysis computes on that group's runs alone):

- ``coords["group"]``: the labels ``[G]``, e.g. ``"dynamics.temperature=0.001"`` (keys joined by ``", "``);
- each array of the analysis ``[G, ...]`` with dims ``("group", *its dims)``;
- ``group.<key> [G]`` over ``("group",)`` for each label key (float64 when every value is a number, else
  strings);
- each scalar of the analysis becomes the list of its G per-group values (``None`` where a group has none);
- ``result.grouping``: ``{"by": [label keys], "labels": [...], "runs": [[run ids] per group],
  "absent": {name: [groups without it]}, "pooled": [[labels] per group]}`` (the last only when pooled),
  written to ``result.json``.

Groups whose arrays differ in a dimension's coordinate (e.g. different waiting-time grids) or, for a
dimension without a coordinate, in its length, are aligned on the union of the coordinate values (the
longest length): cells a group does not have are NaN (integer and boolean arrays become float64, string
arrays get ``""``), and ``group_mask.<dim> [G, n]`` (bool, over ``("group", dim)``) says which entries
each group has. Results that cannot be aligned (an array with other dims in another group, a coordinate
with repeated values), and a group whose ``compute`` fails (chi4 on a one-replica point), are refused with
one line naming the group, listing all of them and how to analyse one. ``result.group(i)`` carries
``provenance["group"]`` (its label) and ``provenance["group_keys"]`` (key → value) for captions.

>>> r = trajkit.analyze("chi4", ["sweep/"])                                 # doctest: +SKIP
>>> r.coords["group"], r.arrays["group.dynamics.temperature"], r.scalars["chi4_peak"]   # doctest: +SKIP
>>> r.group("dynamics.temperature=0.001").scalars["chi4_peak"]              # doctest: +SKIP
>>> trajkit.analyze("chi4", ["sweep/"], group_by="none").scalars["pooled_groups"]        # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trajkit.analysis.ensemble import Ensemble
from trajkit.analysis.result import GROUP_DIM, KEY_PREFIX, MASK_PREFIX, Result
from trajkit.archive.metadata import get_path
from trajkit.errors import AnalysisError, TrajkitError

if TYPE_CHECKING:
    from trajkit.analysis.contract import Analysis, Context

#: Metadata sections whose differences make a sweep point (``ensemble.coords`` comes first).
SECTIONS = ("dynamics", "model", "dataset", "loss", "optimizer", "config")
#: Keys that differ between replicas of one point; ignored unless they are sweep coordinates.
REPLICA_KEYS = frozenset({"seed", "replica", "replicas", "run_id", "id", "device", "init_from"})
_MISSING = "<missing>"          # a key a run does not have, in the comparison of sweep points
_ABSENT = object()


class GroupingNotice(UserWarning):
    """An analysis mixed runs of different sweep points because it was asked to (``group_by``)."""


@dataclass
class SweepGroup:
    """Runs analysed together: ``keys`` (label key → value), their ``ensemble``, and ``pooled`` (labels of
    the sweep points mixed in it, empty unless two or more)."""

    keys: dict[str, Any]
    ensemble: Ensemble
    pooled: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return label_of(self.keys)


def format_value(v: Any) -> str:
    """A metadata value as it appears in a group label (``0.001``, ``mlp``, ``[32, 32]``)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)


def label_of(keys: dict[str, Any]) -> str:
    """``"k1=v1, k2=v2"``; ``"all runs"`` for no keys."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in keys.items()) or "all runs"


def _flatten(d: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(d, dict):
        for k, v in d.items():
            if k in REPLICA_KEYS:
                continue
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out.setdefault(prefix, d)


def sweep_point(archive: Any) -> dict[str, Any]:
    """The keys that place one run in its sweep: ``ensemble.coords`` entries, then the flattened
    :data:`SECTIONS` (without :data:`REPLICA_KEYS`)."""
    meta = archive.metadata
    out: dict[str, Any] = dict(get_path(meta, "ensemble.coords", None) or {})
    for section in SECTIONS:
        if section in meta:
            _flatten(meta[section], section, out)
    return out


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _key_value(archive: Any, key: str) -> Any:
    """``key`` of ``archive``: its sweep coordinate when it has one, else the dotted metadata path."""
    coords = get_path(archive.metadata, "ensemble.coords", None) or {}
    if key in coords:
        return coords[key]
    v = get_path(archive.metadata, key, _ABSENT)
    if v is _ABSENT:
        raise AnalysisError(f"{archive.path} (run {str(archive.metadata.get('run_id', '?'))[:8]}) has no metadata "
                            f"key or sweep coordinate {key!r} (group_by); `trajkit info` lists its keys")
    return v


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, bool) or v is None:
        return (2, str(v))
    if isinstance(v, int | float):
        return (0, float(v))
    return (1, format_value(v))


def _partition(points: list[dict[str, Any]], keys: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(_canon(p.get(k, _MISSING)) for k in keys) for p in points]


def sweep_keys(points: list[dict[str, Any]]) -> list[str]:
    """The label keys: the fewest varying keys (in order: coordinates, then metadata) that separate the
    sweep points as finely as all varying keys together."""
    order: list[str] = []
    for p in points:
        order += [k for k in p if k not in order]
    varying = [k for k in order if len({_canon(p.get(k, _MISSING)) for p in points}) > 1]
    n_points = len(set(_partition(points, varying)))
    chosen: list[str] = []
    for k in varying:
        if len(set(_partition(points, chosen))) == n_points:
            break
        if len(set(_partition(points, [*chosen, k]))) > len(set(_partition(points, chosen))):
            chosen.append(k)
    return chosen


def _split(keys: list[str], values: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[int]]]:
    by: dict[tuple[str, ...], list[int]] = {}
    for i, v in enumerate(values):
        by.setdefault(tuple(_canon(v.get(k, _MISSING)) for k in keys), []).append(i)
    groups = [({k: values[idx[0]].get(k) for k in keys}, idx) for idx in by.values()]
    groups.sort(key=lambda g: tuple(_sort_key(g[0][k]) for k in keys))
    return groups


def _sweep(archives: Sequence[Any]) -> tuple[list[dict[str, Any]], list[str], list[str], dict[str, tuple]]:
    """Sweep points of ``archives``, the label keys, each run's point label and a sort key per label."""
    points = [sweep_point(a) for a in archives]
    keys = sweep_keys(points)
    point_of = [label_of({k: p.get(k) for k in keys}) for p in points]
    rank = {point_of[i]: tuple(_sort_key(p.get(k)) for k in keys) for i, p in enumerate(points)}
    return points, keys, point_of, rank


def plan_groups(ens: Ensemble, group_by: str = "auto", *, same_steps: bool = True) -> list[SweepGroup]:
    """The groups ``compute`` runs on for ``group_by`` (``auto``, ``none`` or comma-separated metadata keys);
    each group's ensemble is checked (same N, layout and steps)."""
    points, keys, point_of, rank = _sweep(ens.archives)
    if group_by == "auto":
        split = _split(keys, points)
    elif group_by == "none":
        split = [({}, list(range(len(ens))))]
    else:
        chosen = [k.strip() for k in group_by.split(",") if k.strip()]
        if not chosen:
            raise AnalysisError(f"group_by={group_by!r}: give auto, none or metadata keys (e.g. dynamics.temperature)")
        split = _split(chosen, [{k: _key_value(a, k) for k in chosen} for a in ens.archives])
    out = []
    for labels, idx in split:
        mixed = sorted({point_of[i] for i in idx}, key=rank.__getitem__)
        out.append(SweepGroup(labels, Ensemble([ens.archives[i] for i in idx], ens.info, same_steps=same_steps),
                              mixed if len(mixed) > 1 else []))
    return out


def _runs_text(g: SweepGroup) -> str:
    return f"{g.label} ({len(g.ensemble)} run{'s' if len(g.ensemble) != 1 else ''})"


def describe_groups(groups: Sequence[SweepGroup]) -> str:
    """``"dynamics.temperature=0.0001 (4 runs), ..."``."""
    return ", ".join(_runs_text(g) for g in groups)


def refusal(why: str, groups: Sequence[SweepGroup]) -> AnalysisError:
    """The one-line error for inputs spanning several sweep points that cannot be analysed per group."""
    return AnalysisError(f"{why}; the inputs span {len(groups)} sweep points: {describe_groups(groups)}; "
                         f"analyse one of them (pass only its runs) or pool them with -p group_by=none")


def declares_group_by(cls: type[Analysis]) -> bool:
    """True when the analysis declares its own ``group_by`` (it groups in ``compute``)."""
    return any(p.name == "group_by" for p in cls.params)


def run_grouped(cls: type[Analysis], data: Any, params: dict[str, Any], ctx: Context) -> Result:
    """``cls().compute`` on ``data`` — once per sweep group for ``needs = "ensemble"`` / ``"runs"`` (module
    docstring)."""
    if cls.needs == "groups" and isinstance(data, dict) and data:
        result = cls().compute(data, params, ctx)
        _state_mixed(result, cls.name, list(data.values()), params.get("group_by"))
        return result
    if cls.needs not in ("ensemble", "runs") or not isinstance(data, Ensemble):
        return cls().compute(data, params, ctx)
    same_steps = cls.needs == "ensemble"        # "runs": schedules may differ (trajkit.analysis.contract)
    if declares_group_by(cls):
        result = cls().compute(Ensemble(data.archives, data.info, same_steps=same_steps), params, ctx)
        if params.get("group_by") == "none":
            points = plan_groups(data, "auto", same_steps=same_steps)
            if len(points) > 1:
                _state_pooled(result, cls.name, [g.label for g in points], len(data), "none")
        return result
    groups = plan_groups(data, params["group_by"], same_steps=same_steps)
    if len(groups) == 1:
        g = groups[0]
        result = cls().compute(g.ensemble, params, ctx)
        if g.pooled:
            _state_pooled(result, cls.name, g.pooled, len(g.ensemble), params["group_by"])
        return result
    results = []
    for g in groups:
        try:
            results.append(cls().compute(g.ensemble, params, ctx))
        except TrajkitError as e:
            err = refusal(f"group {_runs_text(g)}: {e}", groups)
            err.exit_code = e.exit_code
            raise err from e
    for r in results:
        if not isinstance(r, Result):
            return r                      # the core reports what compute() returned
    try:
        stacked = stack_results(results, [g.label for g in groups], [g.keys for g in groups])
    except _Unstackable as e:
        raise refusal(f"{cls.name} gives per-group results that cannot be aligned ({e})", groups) \
            from None
    stacked.grouping["runs"] = [g.ensemble.run_ids for g in groups]
    if any(g.pooled for g in groups):
        stacked.grouping["pooled"] = [g.pooled for g in groups]
        stacked.scalars["pooled_groups"] = [g.pooled for g in groups]
        mixed = "; ".join(f"{g.label}: {', '.join(g.pooled)}" for g in groups if g.pooled)
        warnings.warn(f"{cls.name}: group_by={params['group_by']} pools runs of different sweep points within "
                      f"groups ({mixed}); stated in the result as pooled_groups", GroupingNotice, stacklevel=2)
    return stacked


def _state_pooled(result: Any, name: str, labels: list[str], n_runs: int, group_by: str) -> None:
    if not isinstance(result, Result):
        return
    result.scalars["pooled_groups"] = list(labels)
    result.grouping = {"pooled": list(labels)}
    warnings.warn(f"{name}: pooling {n_runs} runs of {len(labels)} sweep points ({'; '.join(labels)}) as asked "
                  f"by group_by={group_by}; stated in the result as pooled_groups", GroupingNotice, stacklevel=3)


def _state_mixed(result: Any, name: str, groups: list[Ensemble], group_by: Any) -> None:
    """For ``needs = "groups"``: state the sweep points the analysis's own groups mix (``pooled_groups``, one
    list per group in the analysis's order)."""
    _, _, point_of, rank = _sweep([a for g in groups for a in g.archives])
    labels = iter(point_of)
    mixed = []
    for g in groups:
        inside = sorted({next(labels) for _ in g.archives}, key=rank.__getitem__)
        mixed.append(inside if len(inside) > 1 else [])
    if not any(mixed) or not isinstance(result, Result):
        return
    result.scalars["pooled_groups"] = mixed
    result.grouping = {"pooled": mixed}
    first = next(m for m in mixed if m)
    warnings.warn(f"{name}: group_by={group_by} mixes runs of different sweep points within a group "
                  f"({'; '.join(first)}); stated in the result as pooled_groups; group by the swept key to "
                  "separate them", GroupingNotice, stacklevel=3)


# -- stacking ---------------------------------------------------------------------------------------------------

class _Unstackable(Exception):
    """Per-group results that cannot be aligned on common dimensions."""


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _axis(results: list[Result], dim: str) -> tuple[np.ndarray | None, list[np.ndarray] | None, int]:
    """The joined axis of ``dim``: ``(coordinate or None, per-group index maps or None, length)``."""
    coords = [r.coords.get(dim) for r in results]
    lengths = []
    for r in results:
        n = {r.arrays[k].shape[r.dims[k].index(dim)] for k in r.arrays if dim in r.dims[k]}
        if dim in r.coords:
            n.add(r.coords[dim].shape[0])
        if len(n) > 1:
            raise _Unstackable(f"dimension {dim!r} has lengths {sorted(n)} within one group")
        lengths.append(n.pop() if n else 0)
    have = [c is not None for c in coords]
    if any(have) and not all(have):
        raise _Unstackable(f"dimension {dim!r} has a coordinate in some groups only")
    if not any(have):
        if len(set(lengths)) == 1:
            return None, None, lengths[0]
        return None, [np.arange(n) for n in lengths], max(lengths)
    if all(_same(coords[0], c) for c in coords[1:]):
        return coords[0], None, coords[0].shape[0]
    for c in coords:
        if np.unique(c).size != c.size:
            raise _Unstackable(f"coordinate {dim!r} has repeated values")
    ordered = all(c.size < 2 or bool(np.all(c[1:] > c[:-1])) for c in coords) and coords[0].dtype.kind in "iuf"
    if ordered:
        union = coords[0]
        for c in coords[1:]:
            union = np.union1d(union, c)
    else:
        values: list[Any] = []
        for c in coords:
            values += [v for v in c.tolist() if v not in values]
        union = np.asarray(values)
    pos = {v: i for i, v in enumerate(union.tolist())}
    return union, [np.array([pos[v] for v in c.tolist()], dtype=np.int64) for c in coords], union.shape[0]


def _fill_dtype(dtype: np.dtype) -> tuple[np.dtype, Any]:
    if dtype.kind in "fc":
        return dtype, np.nan
    if dtype.kind in "US":
        return dtype, ""
    return np.dtype(np.float64), np.nan


def _key_values(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.float64)
    return np.asarray([format_value(v) for v in values])


def stack_results(results: list[Result], labels: list[str], keys: list[dict[str, Any]]) -> Result:
    """One grouped :class:`Result` from per-group results (layout in the module docstring)."""
    if len(set(labels)) != len(labels):
        raise _Unstackable("two groups have the same label")
    dims_of: dict[str, tuple[str, ...]] = {}
    for r in results:
        for k, d in r.dims.items():
            if dims_of.setdefault(k, d) != d:
                raise _Unstackable(f"array {k!r} has dims {dims_of[k]} in one group and {d} in another")
    all_dims = list(dict.fromkeys([d for ds in dims_of.values() for d in ds] +
                                  [d for r in results for d in r.coords]))
    if GROUP_DIM in all_dims:
        raise _Unstackable(f"the analysis already uses a dimension called {GROUP_DIM!r}")
    axes = {d: _axis(results, d) for d in all_dims}
    g_count = len(results)
    arrays: dict[str, Any] = {}
    absent: dict[str, list[int]] = {}
    for name, dims in dims_of.items():
        present = [name in r.arrays for r in results]
        if not all(present):
            absent[name] = [i for i, p in enumerate(present) if not p]
        ref = next(r.arrays[name] for r in results if name in r.arrays)
        joined = any(axes[d][1] is not None for d in dims)
        if not joined and all(present):
            arrays[name] = (np.stack([r.arrays[name] for r in results]), (GROUP_DIM, *dims))
            continue
        dtype, fill = _fill_dtype(ref.dtype)
        if dtype.kind in "US":
            dtype = np.result_type(*[r.arrays[name].dtype for r in results if name in r.arrays])
        out = np.full((g_count, *(axes[d][2] for d in dims)), fill, dtype=dtype)
        for g, r in enumerate(results):
            if name not in r.arrays:
                continue
            a = r.arrays[name]
            index = tuple(np.arange(a.shape[i]) if axes[d][1] is None else axes[d][1][g] for i, d in enumerate(dims))
            out[(g, *np.ix_(*index))] = a
        arrays[name] = (out, (GROUP_DIM, *dims))
    coords: dict[str, Any] = {GROUP_DIM: np.asarray(labels)}
    for d, (coord, maps, n) in axes.items():
        if coord is not None:
            coords[d] = coord
        if maps is not None:
            mask = np.zeros((g_count, n), dtype=bool)
            for g, m in enumerate(maps):
                mask[g, m] = True
            arrays[f"{MASK_PREFIX}{d}"] = (mask, (GROUP_DIM, d))
    by = list(dict.fromkeys(k for kv in keys for k in kv))
    for k in by:
        arrays[f"{KEY_PREFIX}{k}"] = (_key_values([kv.get(k) for kv in keys]), (GROUP_DIM,))
    scalars: dict[str, Any] = {}
    for name in dict.fromkeys(k for r in results for k in r.scalars):
        missing = [g for g, r in enumerate(results) if name not in r.scalars]
        if missing:
            absent[name] = missing
        scalars[name] = [r.scalars.get(name) for r in results]
    out_result = Result(arrays=arrays, coords=coords, scalars=scalars)
    out_result.grouping = {"by": by, "labels": list(labels), "absent": absent}
    return out_result
