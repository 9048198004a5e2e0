"""Results as xarray Datasets and pandas DataFrames (optional extras: ``pip install 'trajkit[report]'``).

>>> ds = r.to_xarray()            # every array with its dims and coordinates          # doctest: +SKIP
>>> ds["msd"].sel(tw_step=100)                                                         # doctest: +SKIP
>>> r.scalars_frame()             # name, value, ci_low, ci_high, sem (+ group)         # doctest: +SKIP

:func:`to_xarray`: one data variable per array (its ``dims``), one coordinate per entry of ``coords``;
the dataset's attributes are ``analysis``, ``params``, ``scalars``, ``provenance`` (and ``grouping``),
each array's ``long_name`` its axis label (:data:`trajkit.analysis.plotting.LABELS`) when it has one.
:func:`from_xarray` reads such a dataset back into the parts of a result.

:func:`scalars_frame`: one row per scalar (per group and scalar for a grouped result) with its interval
(``<name>_ci`` → ``ci_low``, ``ci_high``) and standard error (``<name>_sem`` / ``<name>_err`` → ``sem``);
the uncertainty scalars get no row of their own. :func:`array_frame`: an array in long form (one column
per dim, then ``value``), as in its CSV table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajkit.analysis.display import CI_SUFFIX, ERR_SUFFIXES, _is_interval
from trajkit.analysis.plotting import LABELS
from trajkit.errors import AnalysisError


def _need(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise AnalysisError(f"{what} needs {module}; install it with: pip install 'trajkit[report]'") from None


def to_xarray(result: Any) -> Any:
    """``result`` as an :class:`xarray.Dataset` (module doc)."""
    xr = _need("xarray", "Result.to_xarray()")
    data_vars = {}
    for name, a in result.arrays.items():
        attrs = {"long_name": LABELS[name]} if name in LABELS else {}
        data_vars[name] = xr.Variable(result.dims[name], a, attrs=attrs)
    attrs: dict[str, Any] = {"analysis": result.provenance.get("analysis"), "params": dict(result.params),
                             "scalars": dict(result.scalars), "provenance": dict(result.provenance)}
    if result.grouping:
        attrs["grouping"] = dict(result.grouping)
    return xr.Dataset(data_vars, coords={d: (d, c) for d, c in result.coords.items()}, attrs=attrs)


def from_xarray(ds: Any) -> dict[str, Any]:
    """The keyword arguments of :class:`~trajkit.analysis.result.Result` (``arrays``, ``coords``,
    ``scalars``, ``params``, ``provenance``) and ``grouping`` of a dataset written by :func:`to_xarray`."""
    return {"arrays": {k: (np.asarray(v.values), tuple(str(d) for d in v.dims)) for k, v in ds.data_vars.items()},
            "coords": {str(d): np.asarray(ds.coords[d].values) for d in ds.coords},
            "scalars": dict(ds.attrs.get("scalars") or {}), "params": dict(ds.attrs.get("params") or {}),
            "provenance": dict(ds.attrs.get("provenance") or {}), "grouping": ds.attrs.get("grouping")}


def _scalar_records(scalars: dict[str, Any], group: str | None, index: int | None) -> list[dict[str, Any]]:
    def pick(v: Any) -> Any:
        return v[index] if index is not None and isinstance(v, list) else v

    hidden = {n for n in scalars if n.endswith((CI_SUFFIX, *ERR_SUFFIXES))
              and any(n == b + s for b in scalars for s in (CI_SUFFIX, *ERR_SUFFIXES))}
    out = []
    for name, v in scalars.items():
        if name in hidden:
            continue
        ci = pick(scalars.get(name + CI_SUFFIX))
        err = next((pick(scalars[name + s]) for s in ERR_SUFFIXES if name + s in scalars), None)
        row = {"name": name, "value": pick(v), "ci_low": ci[0] if _is_interval(ci) else None,
               "ci_high": ci[1] if _is_interval(ci) else None, "sem": err}
        out.append({"group": group, **row} if group is not None else row)
    return out


def scalars_frame(result: Any) -> Any:
    """The scalars with intervals as a :class:`pandas.DataFrame` (module doc)."""
    pd = _need("pandas", "Result.scalars_frame()")
    if result.is_grouped:
        labels = [str(x) for x in result.coords["group"]]
        per_group = {k: v for k, v in result.scalars.items() if isinstance(v, list) and len(v) == len(labels)}
        records = [r for g, label in enumerate(labels) for r in _scalar_records(per_group, label, g)]
        columns = ["group", "name", "value", "ci_low", "ci_high", "sem"]
    else:
        records = _scalar_records(result.scalars, None, None)
        columns = ["name", "value", "ci_low", "ci_high", "sem"]
    return pd.DataFrame.from_records(records, columns=columns)


def array_frame(result: Any, name: str) -> Any:
    """Array ``name`` in long form as a :class:`pandas.DataFrame`: one column per dim (its coordinate
    values, else the index), then ``value``."""
    pd = _need("pandas", "Result.to_dataframe()")
    if name not in result.arrays:
        raise AnalysisError(f"result has no array {name!r}; arrays: {', '.join(result.arrays) or 'none'}")
    a, dims = result.arrays[name], result.dims[name]
    axes = [result.coords.get(d, np.arange(a.shape[i])) for i, d in enumerate(dims)]
    index = pd.MultiIndex.from_product(axes, names=list(dims)) if dims else None
    frame = pd.DataFrame({"value": a.reshape(-1)}, index=index)
    return frame.reset_index() if dims else frame
