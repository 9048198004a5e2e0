"""Results of analyses: named arrays with coordinates, scalars with uncertainties, parameters, provenance.

>>> r = Result(arrays={"msd": (msd_KxT, ("tw_step", "step"))},            # doctest: +SKIP
...            coords={"tw_step": tw, "step": steps},
...            scalars={"beta": 0.51, "beta_ci": [0.47, 0.55], "regime": "simple"})
>>> r.arrays["msd"], r.dims["msd"], r.scalars["beta"]                       # doctest: +SKIP
>>> r.save("out/overlaps"); trajkit.load_result("out/overlaps")             # doctest: +SKIP

Conventions. An array is given as ``(values, dims)`` or as bare values (dims then default to
``dim_0, dim_1, ...``); each dim that has a coordinate in ``coords`` must match the array's axis length.
Scalars are numbers, strings, booleans, ``None`` (e.g. an unresolved relaxation time) or short lists of
numbers; uncertainties use suffixes on the scalar's name: ``<name>_ci`` = ``[low, high]`` confidence
interval, ``<name>_sem`` / ``<name>_err`` = standard error. The core fills ``params`` and ``provenance``
(``analysis``, ``analysis_version``, ``plugin``, ``distribution``, ``plugin_version``, ``trajkit_version``,
``run_ids``, ``inputs``, ``created``, ``device``).

On disk (``save(dir)``): ``result.json`` (validated by ``schemas/result.schema.json``; non-finite numbers
are written as ``null`` since JSON has none, and read back as ``None``), ``arrays.npz`` and
``coords.npz`` (plain numeric or unicode arrays, no pickle), and CSV tables: ``scalars.csv``, one
``<dim>.csv`` per dimension holding every 1-D array along it, and ``<name>.csv`` in long form (one column
per dim, then ``value``) for each array with two or more dims.

A *grouped* result (one per sweep point, :mod:`trajkit.analysis.grouping`) has a leading ``group`` dim on
every array, ``coords["group"]`` (the labels), ``group.<key>`` arrays, each scalar as the list of its
per-group values and ``grouping`` (also in ``result.json``); ``result.group(i)`` is group i as a plain
result, ``plot()`` draws one subfigure per group, and ``group.csv`` holds one row per group with its keys
and scalars.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.archive.format import to_jsonable
from trajkit.cachedir import use_matplotlib_cache
from trajkit.errors import AnalysisError

RESULT_FORMAT = "trajkit-result"
RESULT_VERSION = 1
#: Grouped results (:mod:`trajkit.analysis.grouping`): the leading dim, the key arrays and the mask arrays.
GROUP_DIM = "group"
KEY_PREFIX = "group."
MASK_PREFIX = "group_mask."
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AnalysisError(f"result {kind} name {name!r} is invalid; use letters, digits, '_', '-', '.' "
                            "starting with a letter or '_'")
    return name


class Result:
    """The output of an analysis.

    Attributes: ``arrays`` (name → ndarray), ``dims`` (name → tuple of dim names), ``coords`` (dim →
    1-D ndarray), ``scalars`` (name → number / str / bool / None / list), ``params`` (dict),
    ``provenance`` (dict), ``analysis`` (the Analysis class when known, used by :meth:`plot`;
    :func:`trajkit.load_result` looks it up among the installed analyses).
    ``result[name]`` returns an array or a scalar.
    """

    def __init__(self, arrays: dict[str, Any] | None = None, coords: dict[str, Any] | None = None,
                 scalars: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None):
        self.arrays: dict[str, np.ndarray] = {}
        self.dims: dict[str, tuple[str, ...]] = {}
        self.coords: dict[str, np.ndarray] = {}
        for dim, values in (coords or {}).items():
            arr = np.asarray(values)
            if arr.ndim != 1:
                raise AnalysisError(f"result coordinate {dim!r} must be 1-D, got shape {arr.shape}")
            self.coords[_check_name("coordinate", dim)] = arr
        for name, spec in (arrays or {}).items():
            _check_name("array", name)
            if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], tuple | list) \
                    and all(isinstance(d, str) for d in spec[1]):
                values, dims = np.asarray(spec[0]), tuple(spec[1])
            else:
                values = np.asarray(spec)
                dims = tuple(f"dim_{i}" for i in range(values.ndim))
            if values.dtype == object:
                raise AnalysisError(f"result array {name!r} has dtype object; use a numeric or string array")
            if len(dims) != values.ndim:
                raise AnalysisError(f"result array {name!r} has {values.ndim} axes but dims {dims}")
            for ax, d in enumerate(dims):
                _check_name("dim", d)
                if d in self.coords and self.coords[d].shape[0] != values.shape[ax]:
                    raise AnalysisError(f"result array {name!r} axis {ax} ({d}) has length "
                                        f"{values.shape[ax]}, coordinate {d!r} has {self.coords[d].shape[0]}")
            self.arrays[name] = values
            self.dims[name] = dims
        self.scalars: dict[str, Any] = {}
        for name, v in (scalars or {}).items():
            _check_name("scalar", name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            self.scalars[name] = v
        self.params: dict[str, Any] = dict(params or {})
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.analysis: Any = None
        self.grouping: dict[str, Any] | None = None

    # -- access ---------------------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        if name in self.arrays:
            return self.arrays[name]
        if name in self.scalars:
            return self.scalars[name]
        raise KeyError(f"result has no array or scalar {name!r} (arrays: {', '.join(self.arrays) or 'none'}; "
                       f"scalars: {', '.join(self.scalars) or 'none'})")

    def __contains__(self, name: str) -> bool:
        return name in self.arrays or name in self.scalars

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}{list(self.dims[k])}" for k in self.arrays)
        name = self.provenance.get("analysis", "?")
        groups = f" {self.n_groups} groups by {', '.join(self.grouping['by'])}," if self.is_grouped else ""
        return f"<Result {name}:{groups} arrays [{arrays}], scalars [{', '.join(self.scalars)}]>"

    # -- sweep groups (trajkit.analysis.grouping) -----------------------------------------------------------

    @property
    def is_grouped(self) -> bool:
        """True for one result per sweep group (leading ``group`` dim; see :mod:`~trajkit.analysis.grouping`)."""
        return bool(self.grouping and self.grouping.get("labels")) and GROUP_DIM in self.coords

    @property
    def n_groups(self) -> int:
        """Number of groups (1 for a plain result)."""
        return int(self.coords[GROUP_DIM].shape[0]) if self.is_grouped else 1

    def group(self, which: int | str) -> Result:
        """Group ``which`` (index or label, e.g. ``"dynamics.temperature=0.001"``) as a plain result: the
        arrays, coordinates and scalars the analysis gives on that group's runs alone."""
        if not self.is_grouped:
            if which in (0, "all runs"):
                return self
            raise AnalysisError(f"result is not grouped; group({which!r}) needs a grouped result")
        labels = [str(x) for x in self.coords[GROUP_DIM]]
        if isinstance(which, str):
            if which not in labels:
                raise AnalysisError(f"result has no group {which!r}; groups: {', '.join(labels)}")
            which = labels.index(which)
        if not -len(labels) <= which < len(labels):
            raise AnalysisError(f"group index {which} out of range; the result has {len(labels)} groups")
        return _group_view(self, which % len(labels))

    # -- serialisation --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` document (without writing anything)."""
        arrays = {}
        for name, a in self.arrays.items():
            table = f"{self.dims[name][0]}.csv" if a.ndim == 1 else (f"{name}.csv" if a.ndim else None)
            entry: dict[str, Any] = {"dims": list(self.dims[name]), "shape": list(a.shape),
                                     "dtype": str(a.dtype), "file": "arrays.npz", "table": table}
            arrays[name] = entry
        coords = {d: {"shape": list(c.shape), "dtype": str(c.dtype), "file": "coords.npz"}
                  for d, c in self.coords.items()}
        doc = {"format": RESULT_FORMAT, "version": RESULT_VERSION,
               "analysis": self.provenance.get("analysis"),
               "params": to_jsonable(self.params, strict=True), "scalars": to_jsonable(self.scalars, strict=True),
               "arrays": arrays, "coords": coords, "provenance": to_jsonable(self.provenance, strict=True)}
        if self.grouping:
            doc["grouping"] = to_jsonable(self.grouping, strict=True)
        return doc

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.json``, ``arrays.npz``, ``coords.npz`` and CSV tables into ``directory``."""
        from trajkit.archive.metadata import schema_problems

        doc = self.to_json()
        problems = schema_problems(doc, "result.schema.json")
        if problems:
            detail = "; ".join(f"{p or '/'}: {m}" for p, m in problems[:5])
            raise AnalysisError(f"result of {doc['analysis']!r} fails schemas/result.schema.json at {detail}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "arrays.npz", **self.arrays)
        np.savez(out / "coords.npz", **self.coords)
        self._write_tables(out)
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, out / "result.json")
        return out

    def _write_tables(self, out: Path) -> None:
        with open(out / "scalars.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "value"])
            for k, v in self.scalars.items():
                w.writerow([k, json.dumps(to_jsonable(v, strict=True)) if isinstance(v, list | tuple) else _csv(v)])
        by_dim: dict[str, list[str]] = {}
        for name, a in self.arrays.items():
            if a.ndim == 1:
                by_dim.setdefault(self.dims[name][0], []).append(name)
            elif a.ndim >= 2:
                self._write_long(out / f"{name}.csv", name)
        per_group = {k: v for k, v in self.scalars.items() if self.is_grouped and isinstance(v, list)
                     and len(v) == self.n_groups and not any(isinstance(x, list | tuple) for x in v)}
        for dim, names in by_dim.items():
            n = self.arrays[names[0]].shape[0]
            names = [k for k in names if self.arrays[k].shape[0] == n]
            coord = self.coords.get(dim, np.arange(n))
            extra = per_group if dim == GROUP_DIM else {}
            with open(out / f"{dim}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow([dim, *names, *extra])
                for i in range(n):
                    w.writerow([_csv(coord[i]), *(_csv(self.arrays[k][i]) for k in names),
                                *(_csv(v[i]) for v in extra.values())])

    def _write_long(self, path: Path, name: str) -> None:
        a, dims = self.arrays[name], self.dims[name]
        axes = [self.coords.get(d, np.arange(a.shape[i])) for i, d in enumerate(dims)]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*dims, "value"])
            for idx in np.ndindex(*a.shape):
                w.writerow([*(_csv(axes[i][j]) for i, j in enumerate(idx)), _csv(a[idx])])

    # -- plotting -------------------------------------------------------------------------------------------

    def plot(self, fig: Any = None) -> Any:
        """A matplotlib Figure: the analysis's ``plot(result, fig)`` when it has one, else a generic plot.

        A grouped result draws one subfigure row per group (``fig.subfigures``), titled with the group's
        keys, each by the analysis's single-group ``plot(self.group(i), subfigure)`` — so a plugin's
        ``plot`` must draw into a Figure or a SubFigure (``subplots``, ``add_subplot``, ``suptitle``,
        ``legend``, ``text``; not ``savefig`` or ``set_size_inches``).
        """
        use_matplotlib_cache()    # before matplotlib's first import: its config goes under trajkit's cache
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise AnalysisError("result.plot() needs matplotlib; install it with: "
                                "pip install 'trajkit[plot]'") from None
        if self.is_grouped:
            fig = fig if fig is not None else Figure(figsize=(9, 4.5 * self.n_groups), layout="constrained")
            for i, sub in enumerate(fig.subfigures(self.n_groups, 1, squeeze=False)[:, 0]):
                view = self.group(i)
                view._draw(sub)
                own = getattr(sub, "_suptitle", None)
                text = own.get_text() if own is not None else ""
                label = str(self.coords[GROUP_DIM][i])
                sub.suptitle(f"{label}: {text}" if text else label, fontsize="medium", fontweight="bold")
            return fig
        fig = fig if fig is not None else Figure(figsize=(9, 6), layout="constrained")
        out = self._draw(fig)
        return out if out is not None else fig

    def _draw(self, fig: Any) -> Any:
        analysis = self.analysis          # set by trajkit.analyze and trajkit.load_result
        if analysis is not None and callable(getattr(analysis, "plot", None)):
            return analysis().plot(self, fig)
        return generic_plot(self, fig)

    # -- notebooks and data frames (trajkit.analysis.display, trajkit.analysis.tables) ----------------------

    def _repr_html_(self) -> str:
        """Scalars table (with intervals) and figure, for Jupyter."""
        from trajkit.analysis.display import result_html

        return result_html(self)

    def _repr_png_(self) -> bytes | None:
        """The figure as PNG for Jupyter (None when it cannot be drawn, e.g. without matplotlib)."""
        from trajkit.analysis.display import figure_png

        try:
            return figure_png(self)
        except AnalysisError:
            return None

    def to_xarray(self) -> Any:
        """An :class:`xarray.Dataset`: every array with its dims and coordinates; params, scalars and
        provenance as attributes (needs xarray: ``pip install 'trajkit[report]'``)."""
        from trajkit.analysis.tables import to_xarray

        return to_xarray(self)

    @classmethod
    def from_xarray(cls, ds: Any) -> Result:
        """The result a :meth:`to_xarray` dataset holds."""
        from trajkit.analysis.tables import from_xarray

        parts = from_xarray(ds)
        grouping = parts.pop("grouping")
        out = cls(**parts)
        out.grouping = grouping
        return out

    def scalars_frame(self) -> Any:
        """The scalars as a :class:`pandas.DataFrame`: ``name, value, ci_low, ci_high, sem`` (and ``group``
        first for a grouped result); needs pandas (``pip install 'trajkit[report]'``)."""
        from trajkit.analysis.tables import scalars_frame

        return scalars_frame(self)

    def to_dataframe(self, array: str | None = None) -> Any:
        """:meth:`scalars_frame`, or with ``array`` that array in long form (one column per dim, then
        ``value``, as in its CSV table)."""
        from trajkit.analysis.tables import array_frame, scalars_frame

        return scalars_frame(self) if array is None else array_frame(self, array)


def _csv(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        return "" if math.isnan(f) else repr(f)
    if isinstance(v, np.generic):
        return v.item()
    return "" if v is None else v


def generic_plot(result: Result, fig: Any) -> Any:
    """One panel per array (up to 6): 1-D arrays as lines against their coordinate, 2-D one line per row."""
    names = [k for k, a in result.arrays.items()
             if a.ndim in (1, 2) and np.issubdtype(a.dtype, np.number)][:6]
    if not names:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        text = "\n".join(f"{k} = {v}" for k, v in result.scalars.items()) or "(empty result)"
        ax.text(0.02, 0.98, text, va="top", family="monospace", fontsize=9)
        return fig
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        a, dims = result.arrays[name], result.dims[name]
        x = result.coords.get(dims[-1], np.arange(a.shape[-1]))
        ys = a[None, :] if a.ndim == 1 else a
        labels = result.coords.get(dims[0], np.arange(a.shape[0])) if a.ndim == 2 else [None]
        for y, lab in zip(ys, labels, strict=False):
            ax.plot(x, y, marker=".", ms=3, label=None if lab is None else f"{dims[0]}={lab}")
        numeric = np.issubdtype(np.asarray(x).dtype, np.number) and x.size > 0
        if numeric and np.nanmin(x) > 0 and np.nanmax(x) / np.nanmin(x) > 100:
            ax.set_xscale("log")
        ax.set_xlabel(dims[-1])
        ax.set_title(name)
        if a.ndim == 2 and a.shape[0] <= 10:
            ax.legend(fontsize=6)
    fig.suptitle(str(result.provenance.get("analysis", "result")))
    return fig


def _group_view(result: Result, i: int) -> Result:
    """Group ``i`` of a grouped result as the plain result of that group (see :meth:`Result.group`)."""
    grouping = result.grouping or {}
    absent = grouping.get("absent", {})
    masks = {k[len(MASK_PREFIX):]: v[i] for k, v in result.arrays.items() if k.startswith(MASK_PREFIX)}
    arrays: dict[str, Any] = {}
    for name, a in result.arrays.items():
        dims = result.dims[name]
        if name.startswith((MASK_PREFIX, KEY_PREFIX)) or not dims or dims[0] != GROUP_DIM \
                or i in absent.get(name, ()):
            continue
        v = a[i]
        for ax, d in enumerate(dims[1:]):
            if d in masks:
                v = np.compress(masks[d], v, axis=ax)
        arrays[name] = (v, dims[1:])
    coords = {d: (c[masks[d]] if d in masks else c) for d, c in result.coords.items() if d != GROUP_DIM}
    scalars = {k: v[i] for k, v in result.scalars.items()
               if isinstance(v, list) and len(v) == len(result.coords[GROUP_DIM]) and i not in absent.get(k, ())}
    label = str(result.coords[GROUP_DIM][i])
    provenance = dict(result.provenance)
    runs = grouping.get("runs")
    if runs:
        provenance["run_ids"] = list(runs[i])
        ids = set(runs[i])
        if len(provenance.get("inputs", [])) == len(result.provenance.get("run_ids", [])):
            provenance["inputs"] = [p for p, r in zip(result.provenance["inputs"], result.provenance["run_ids"],
                                                      strict=True) if r in ids]
    keys = {k[len(KEY_PREFIX):]: result.arrays[k][i].item() for k in result.arrays if k.startswith(KEY_PREFIX)}
    provenance["group"] = label
    provenance["group_keys"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in keys.items()}
    if "coords" in provenance:            # the caption's sweep point (trajkit.analysis.plotting.describe)
        provenance["coords"] = {**(provenance["coords"] or {}), **provenance["group_keys"]}
    view = Result(arrays=arrays, coords=coords, scalars=scalars, params=result.params, provenance=provenance)
    view.analysis = result.analysis
    return view


def load_result(directory: str | os.PathLike) -> Result:
    """Read a result written by :meth:`Result.save` (``result.json`` is schema-validated)."""
    from trajkit.archive.metadata import schema_problems

    d = Path(directory)
    path = d / "result.json"
    if not path.is_file():
        raise AnalysisError(f"{d}: no result.json; pass a directory written by result.save() or --out")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: not valid JSON ({e})") from None
    problems = schema_problems(doc, "result.schema.json")
    if problems:
        detail = "; ".join(f"{p or '/'}: {m}" for p, m in problems[:5])
        raise AnalysisError(f"{path}: fails schemas/result.schema.json at {detail}")
    arrays: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    try:
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            for name, entry in doc["arrays"].items():
                arrays[name] = (z[name], tuple(entry["dims"]))
        with np.load(d / "coords.npz", allow_pickle=False) as z:
            for dim in doc["coords"]:
                coords[dim] = z[dim]
    except (OSError, KeyError) as e:
        raise AnalysisError(f"{d}: arrays.npz/coords.npz missing or incomplete ({e}); re-run the analysis") \
            from None
    r = Result(arrays=arrays, coords=coords, scalars=doc["scalars"], params=doc["params"],
               provenance=doc["provenance"])
    r.grouping = doc.get("grouping")
    return r


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
