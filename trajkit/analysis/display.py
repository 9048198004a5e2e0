"""Results in notebooks and on the ``trajkit report`` page: scalars with their intervals, figures as PNG.

>>> r = trajkit.analyze("overlaps", ["sweep/"]); r          # a notebook shows result_html(r)   # doctest: +SKIP
>>> scalar_rows(r.scalars)                                  # [(name, "0.51 [0.47, 0.55]"), ...]  # doctest: +SKIP

A scalar ``x`` is shown with its uncertainty scalars (:mod:`trajkit.analysis.result` conventions):
``x_ci = [lo, hi]`` as ``x [lo, hi]``, ``x_sem`` / ``x_err`` as ``x ± s``; the uncertainty scalars get no
row of their own. For a grouped result (a list of per-group values per scalar, ``grouping["labels"]``)
each row has one cell per group. Everything here is standard library HTML (:func:`html.escape`); figures
are PNG bytes from :meth:`Result.plot <trajkit.analysis.result.Result.plot>`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

from trajkit.analysis.plotting import fmt, fmt_ci

#: suffixes of uncertainty scalars: interval, standard errors
CI_SUFFIX = "_ci"
ERR_SUFFIXES = ("_sem", "_err")
#: how many items of a list-valued scalar are shown
MAX_ITEMS = 8


def _is_interval(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) == 2 and not any(isinstance(x, list | tuple | str) for x in v)


def value_text(v: Any, ci: Any = None, err: Any = None) -> str:
    """One scalar as text: ``0.51 [0.47, 0.55]``, ``0.51 ± 0.02``, a short list, a string or ``n/a``."""
    if isinstance(v, list | tuple):
        items = ", ".join(value_text(x) for x in v[:MAX_ITEMS])
        return f"[{items}{f', … ({len(v)} values)' if len(v) > MAX_ITEMS else ''}]"
    if isinstance(v, dict):
        return json.dumps(v, default=str)[:200]
    text = fmt_ci(v, ci if _is_interval(ci) else None, 4) if not isinstance(v, str | bool) else str(v)
    if err is not None and not isinstance(err, list | tuple | str) and fmt(err) != "n/a":
        text += f" ± {fmt(err, 2)}"
    return text


def _uncertainty_names(scalars: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """``{base: (ci name, err name)}`` for every scalar that has uncertainty scalars."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for base in scalars:
        ci = base + CI_SUFFIX if base + CI_SUFFIX in scalars else None
        err = next((base + s for s in ERR_SUFFIXES if base + s in scalars), None)
        if ci or err:
            out[base] = (ci, err)
    return out


def scalar_rows(scalars: dict[str, Any], labels: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """``[(name, [cell, ...])]``: one cell per group when ``labels`` (a grouped result), else one cell."""
    extra = _uncertainty_names(scalars)
    hidden = {n for pair in extra.values() for n in pair if n}
    rows = []
    for name, v in scalars.items():
        if name in hidden:
            continue
        ci_name, err_name = extra.get(name, (None, None))
        ci = scalars.get(ci_name) if ci_name else None
        err = scalars.get(err_name) if err_name else None
        if labels and isinstance(v, list) and len(v) == len(labels):
            cells = [value_text(v[g], ci[g] if isinstance(ci, list) and len(ci) == len(labels) else None,
                                err[g] if isinstance(err, list) and len(err) == len(labels) else None)
                     for g in range(len(labels))]
        else:
            cells = [value_text(v, ci, err)]
        rows.append((name, cells))
    return rows


def scalars_html(scalars: dict[str, Any], labels: Sequence[str] | None = None) -> str:
    """The scalars (with their intervals) as an HTML table; a grouped result has one column per group."""
    rows = scalar_rows(scalars, labels)
    if not rows:
        return "<p class='none'>no scalars</p>"
    per_group = bool(labels) and any(len(cells) > 1 for _, cells in rows)
    head = "<th>scalar</th>" + ("".join(f"<th>{html.escape(str(g))}</th>" for g in labels or ()) if per_group
                                else "<th>value</th>")
    body = []
    for name, cells in rows:
        width = len(labels or ()) if per_group else 1
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells) if len(cells) == width else \
            f"<td colspan='{width}'>{html.escape(cells[0])}</td>"
        body.append(f"<tr><th>{html.escape(name)}</th>{tds}</tr>")
    return f"<table class='trajkit scalars'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def params_html(params: dict[str, Any], given: Sequence[str] = ()) -> str:
    """The parameters as ``name = value`` rows; those in ``given`` (set by the user) are marked."""
    rows = "".join(f"<tr{' class=given' if k in given else ''}><th>{html.escape(k)}</th>"
                   f"<td>{html.escape(value_text(v) if v is not None else 'none')}</td></tr>"
                   for k, v in params.items())
    return f"<table class='trajkit params'>{rows}</table>"


def figure_png(result: Any, dpi: int = 100) -> bytes:
    """PNG bytes of ``result.plot()`` (raises what ``plot`` raises, e.g. matplotlib missing)."""
    fig = result.plot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def result_html(result: Any) -> str:
    """A result for a notebook: its analysis, scalars table (with intervals) and figure (inline PNG; left
    out, with the reason, when ``plot`` fails)."""
    name = result.provenance.get("analysis") or "result"
    version = result.provenance.get("analysis_version") or ""
    labels = (result.grouping or {}).get("labels") if result.is_grouped else None
    try:
        png = base64.b64encode(figure_png(result)).decode("ascii")
        figure = f"<img alt='{html.escape(name)} figure' style='max-width:100%' src='data:image/png;base64,{png}'>"
    except Exception as e:
        figure = f"<p class='failure'>no figure: {html.escape(' '.join(str(e).split()))}</p>"
    return (f"<div class='trajkit-result'><b>{html.escape(str(name))}</b> {html.escape(str(version))}"
            f"{scalars_html(result.scalars, labels)}{figure}</div>")
