"""What every built-in figure shares: axis labels with symbols, definitions and units, error bands, fit
titles and a caption line saying what was analysed.

>>> ax.set_ylabel(plotting.LABELS["msd"]); ax.set_xlabel(plotting.LAG)             # doctest: +SKIP
>>> plotting.band(ax, lag, mean, sem, label="$t_w$ = 100")                         # doctest: +SKIP
>>> plotting.caption(fig, plotting.describe(result))                               # doctest: +SKIP

Conventions (trajkit's own):

- Times are in optimisation steps: ``t_w`` the waiting time, ``t`` the lag; a two-time observable
  ``F(t_w, t_w+t)`` is drawn against the lag, labelled ``t − t_w [steps]`` (:data:`LAG`).
- An error band is ``mean ± sem`` (one standard error: over replicas, or the bootstrap standard
  deviation where the analysis says so), drawn with ``fill_between`` in the colour of its line.
- The caption is one figure-level text at the bottom (``supxlabel``, so constrained layout keeps room for
  it; its ``gid`` is :data:`CAPTION_GID`): the analysis, the analysed sweep point (``provenance["coords"]``:
  the sweep coordinates and temperature of the inputs, filled by :func:`input_coords`), the runs and
  replicas, the N selected parameters and the selection, ε, the waiting times actually used (the
  ``tw_step`` coordinate), the snapshot step, masked snapshots.
- ``fig`` may be a :class:`matplotlib.figure.SubFigure`: helpers only call ``add_subplot``, ``subplots``,
  ``supxlabel``, ``suptitle`` and ``legend`` on it.

Nothing here imports matplotlib at import time (the core imports this module for :func:`input_coords`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

#: ``gid`` of the caption text (tests and callers find the caption by it).
CAPTION_GID = "trajkit-caption"

#: x axis of two-time curves at fixed waiting time.
LAG = r"$t - t_w$ [steps]"
#: x axis of origin-averaged curves (``mode = lag``).
LAG_ORIGINS = r"lag $t$ [steps], mean over origins $t_w$"
#: x axis of the time-temperature superposition.
TTS_X = r"$t/\tau_e(T)$  ($\tau_e$: $Q(t_w, t_w+\tau_e) = c\,Q(t_w, t_w)$)"

#: y axis of each observable: symbol = definition (w the N selected parameters, δw = w(t_w+t) − w(t_w)).
LABELS: dict[str, str] = {
    "overlap": r"$C(t_w, t_w+t) = w(t_w)\cdot w(t_w+t)/N$",
    "overlap_normalized": r"$\tilde C(t_w, t_w+t) = \hat w(t_w)\cdot\hat w(t_w+t)$, $\hat w = w/|w|$",
    "msd": r"$\Delta(t_w, t_w+t) = |\delta w|^2/N$",
    "self_overlap": r"$Q(t_w, t_w+t) = \langle\Theta(\varepsilon - |\delta w_i|)\rangle_i$",
    "d4": r"$D_4(t_w, t_w+t) = \sum_i \delta w_i^4/N$",
    "participation": r"$Y(t_w, t_w+t) = \sum_i \delta w_i^4 / (\sum_i \delta w_i^2)^2$",
    "alpha2": r"$\alpha_2(t_w, t_w+t) = \langle\delta w_i^4\rangle / 3\langle\delta w_i^2\rangle^2 - 1$",
    "chi4": r"$\chi_4(t_w, t_w+t) = N\,[\langle Q^2\rangle - \langle Q\rangle^2]_{\rm replicas}$",
    "replica_overlap": r"$q(t) = \langle\hat w^a(t)\cdot\hat w^b(t)\rangle_{a<b}$",
}

#: Short symbols (titles, legends).
SYMBOLS: dict[str, str] = {
    "overlap": r"$C$", "overlap_normalized": r"$\tilde C$", "msd": r"$\Delta$", "self_overlap": r"$Q$",
    "d4": r"$D_4$", "participation": r"$Y$", "alpha2": r"$\alpha_2$", "chi4": r"$\chi_4$",
}

#: Short names of well-known metadata keys in captions and legends.
KEY_SYMBOLS: dict[str, str] = {
    "dynamics.temperature": "T", "config.dynamics.temperature": "T", "dynamics.lr": "lr",
    "dynamics.batch_size": "B", "config.dynamics.batch_size": "B",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a figure: ``%.{digits}g``; ``None`` / NaN / inf as ``"n/a"``; other values as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{f:.{digits}g}" if math.isfinite(f) else "n/a"


def fmt_ci(value: Any, ci: Any = None, digits: int = 3) -> str:
    """``"v [lo, hi]"`` (the interval left out when absent or not finite)."""
    text = fmt(value, digits)
    if ci is not None and len(ci) == 2 and all(c is not None and np.isfinite(c) for c in ci):
        text += f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"
    return text


def finite(value: Any) -> bool:
    """True for a finite number (``None``, strings and NaN are not)."""
    try:
        return value is not None and not isinstance(value, str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def band(ax: Any, x: np.ndarray, mean: np.ndarray, sem: np.ndarray | None = None, *, label: str | None = None,
         color: Any = None, alpha: float = 0.25, **line_kw: Any) -> Any:
    """A line ``mean(x)`` and, where ``sem`` is finite, the band ``mean ± sem`` (``fill_between``).

    Points where ``x`` or ``mean`` is not finite are dropped. Returns the line.
    """
    x = np.asarray(x, dtype=float)
    mean = np.asarray(mean, dtype=float)
    ok = np.isfinite(x) & np.isfinite(mean)
    (line,) = ax.plot(x[ok], mean[ok], label=label, color=color, **line_kw)
    if sem is not None:
        sem = np.asarray(sem, dtype=float)[ok]
        has = np.isfinite(sem)
        if has.any():
            s = np.where(has, sem, 0.0)
            ax.fill_between(x[ok], mean[ok] - s, mean[ok] + s, where=has, color=line.get_color(), alpha=alpha,
                            lw=0, interpolate=False)
    return line


def legend(ax: Any, **kw: Any) -> Any:
    """A small legend when the axes hold labelled artists (else nothing)."""
    if not ax.get_legend_handles_labels()[1]:
        return None
    kw.setdefault("fontsize", "x-small")
    return ax.legend(**kw)


def caption(fig: Any, text: str, fontsize: float = 7.0) -> Any:
    """Write ``text`` as the figure's caption line (bottom, left-aligned, wrapped to the figure width).

    Uses ``supxlabel`` so that constrained layout keeps room for it (also on a SubFigure).
    """
    try:
        width_in = float(fig.bbox.width) / float(fig.dpi)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        width_in = 9.0
    chars = max(40, int(width_in * 72 / (0.55 * fontsize)))
    wrapped = "\n".join(textwrap.wrap(text, chars)) if text else ""
    t = fig.supxlabel(wrapped, x=0.01, ha="left", fontsize=fontsize, color="0.25")
    t.set_gid(CAPTION_GID)
    return t


def join_lines(parts: Sequence[str], width: int = 70, sep: str = "; ") -> str:
    """Join ``parts`` with ``sep``, starting a new line before a part that would pass ``width`` characters
    (parts are never split, so mathtext inside one stays whole)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return "\n".join(lines)


def tw_label(tw: Any) -> str:
    """Legend entry of a waiting time."""
    return f"$t_w$ = {int(tw)}" if finite(tw) else f"$t_w$ = {tw}"


def _key(k: str) -> str:
    return KEY_SYMBOLS.get(k, k)


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        inner = ", ".join(_value(x) for x in v[:8]) + (", …" if len(v) > 8 else "")
        return "{" + inner + "}"
    return fmt(v, 4)


def coords_text(coords: dict[str, Any] | None, split: Sequence[str] = ()) -> str:
    """``"T = 0.001, B = 32"`` from ``{key: value}``; a list value as ``∈ {…}``, marked ``(pooled)``
    unless the key is in ``split`` (the result resolves it: one curve or entry per value)."""
    parts = []
    for k, v in (coords or {}).items():
        if isinstance(v, list | tuple) and len(v) > 1:
            parts.append(f"{_key(k)} ∈ {_value(v)} " + ("(one entry per value)" if k in split else "(pooled)"))
        else:
            parts.append(f"{_key(k)} = {_value(v[0] if isinstance(v, list | tuple) and v else v)}")
    return ", ".join(parts)


def _steps_text(steps: Sequence[Any]) -> str:
    steps = [int(s) for s in steps]
    if len(steps) > 8:
        return ", ".join(str(s) for s in steps[:4]) + ", …, " + ", ".join(str(s) for s in steps[-2:])
    return ", ".join(str(s) for s in steps)


def describe(result: Any, extra: Sequence[str] = ()) -> str:
    """The caption text of ``result``: what was analysed, from its params, scalars, coords, provenance.

    Parts (each when known): analysis and version; sweep point (``provenance["coords"]``); runs and
    replicas; ``N`` selected and ``select``; ε (absolute, or ``std(w(t_w))/F`` with the range used);
    the waiting times actually used (``tw_step`` coordinate or scalar) or the lag mode's origins; the
    snapshot step (landscape); the grouping key; masked snapshots; then ``extra``.
    """
    p, s, prov = result.params or {}, result.scalars or {}, result.provenance or {}
    coords = getattr(result, "coords", {}) or {}
    parts: list[str] = []
    name = prov.get("analysis")
    if name:
        parts.append(f"{name} {prov.get('analysis_version', '')}".strip())
    where = coords_text(prov.get("coords"), _split_keys(result))
    if where:
        parts.append(where)
    runs = prov.get("run_ids")
    n_runs = len(runs) if runs else s.get("n_runs")
    reps = s.get("replicas")
    if isinstance(reps, list | tuple):
        reps = "per group " + "/".join(str(r) for r in reps)
    if n_runs:
        parts.append(f"{n_runs} runs" + (f" (replicas {reps})" if reps is not None and str(reps) != str(n_runs)
                                          else ""))
    elif reps is not None:
        parts.append(f"{reps} replicas")
    if "n_selected" in s:
        parts.append(f"N = {s['n_selected']} parameters (select = {p.get('select', 'all')}), "
                     "δw_i = w_i(t_w+t) − w_i(t_w)")
    elif "select" in p:
        parts.append(f"select = {p['select']}")
    if p.get("epsilon") is not None:
        parts.append(f"ε = {fmt(p['epsilon'])}")
    elif "epsilon_factor" in p and "n_selected" in s:
        at = {"last": "w(last snapshot)", "step": f"w(step {p.get('epsilon_step')})"}.get(p.get("epsilon_from"),
                                                                                          "w(t_w)")
        text = f"ε = std({at})/{fmt(p['epsilon_factor'])}"
        eps = getattr(result, "arrays", {}).get("epsilon")
        if eps is not None and np.isfinite(eps).any():
            text += f" ∈ [{fmt(np.nanmin(eps))}, {fmt(np.nanmax(eps))}]"
        parts.append(text)
    if "tw_step" in coords:
        parts.append(f"t_w = {_steps_text(coords['tw_step'])} (used)")
    elif "tw_step" in s:
        parts.append(f"t_w = {s['tw_step']}")
    elif "lag" in coords:
        parts.append(f"lag mode: origins t_w ≥ {p.get('origin_min_step', 0)}")
    if "step" in s and "tw_step" not in coords:
        parts.append(f"at step {s['step']}")
    if p.get("group_by") not in (None, "none", "auto"):
        parts.append(f"grouped by {p['group_by']}")
    masked = s.get("masked_steps")
    if masked:
        parts.append(f"masked snapshots: {_steps_text(masked)}")
    parts.extend(extra)
    return "; ".join(parts)


def _split_keys(result: Any) -> list[str]:
    """Sweep keys the result resolves rather than pools: those named by ``group_by`` (``auto``: the
    temperature) or by a result coordinate (``temperature``, ``width``, ...); all of them when the result
    has a ``group`` coordinate."""
    keys = list(((result.provenance or {}).get("coords") or {}).keys())
    coords = getattr(result, "coords", {}) or {}
    if "group" in coords:
        return keys
    by = (result.params or {}).get("group_by")
    out = []
    for k in keys:
        if k.split(".")[-1] in coords or by in (k, f"config.{k}") or (by == "auto" and k == "dynamics.temperature"
                                                                     and "temperature" in coords):
            out.append(k)
    return out


def input_coords(archives: Sequence[Any]) -> dict[str, Any]:
    """The sweep point of ``archives``: ``{key: value}`` for each key of their ``ensemble.coords`` and for
    ``dynamics.temperature`` (Langevin runs, or runs that do not name their dynamics); a key whose value
    differs between runs maps to the sorted list of its values.

    Stored by the core in ``result.provenance["coords"]``; :func:`describe` puts it in the caption.
    """
    values: dict[str, list[Any]] = {}
    for a in archives:
        meta = getattr(a, "metadata", {}) or {}
        point = dict((meta.get("ensemble") or {}).get("coords") or {})
        dyn = meta.get("dynamics") if isinstance(meta.get("dynamics"), dict) else {}
        temp = dyn.get("temperature") if "langevin" in str(dyn.get("kind", "langevin")) else None
        if temp is not None and "dynamics.temperature" not in point:
            point["dynamics.temperature"] = temp
        for k, v in point.items():
            if isinstance(v, bool | int | float | str):
                bucket = values.setdefault(k, [])
                if v not in bucket:
                    bucket.append(v)
    out: dict[str, Any] = {}
    for k, vs in values.items():
        try:
            vs = sorted(vs)
        except TypeError:
            pass
        out[k] = vs[0] if len(vs) == 1 else vs
    return out
