"""Which analyses a report runs, with which parameters, and what each result depends on (its cache key).

Selection. ``analyses=None`` takes every installed analysis whose ``needs`` the inputs meet
(:func:`why_not` is None): ``archive`` — exactly one run; ``ensemble`` — the runs of each sweep point
share N, layout and snapshot steps (:func:`trajkit.analysis.grouping.plan_groups`); ``runs`` — the runs of
each sweep point share N and layout and can be rebuilt (a registered model, ``dataset.spec`` and
``loss.name`` in their metadata: the landscape analyses evaluate the rebuilt loss); ``groups`` — every run
has the ``group_by`` key. The analyses left out are listed with the reason. A named analysis
(``analyses=["chi4", ...]``) is always attempted; when its needs are not met that is its failure.

Parameters are ``{analysis: {key: value}}`` (``-p NAME.key=value`` on the command line; strings are parsed
as ``trajkit analyze -p`` parses them) and are validated before anything is read.

The cache key of an analysis is the SHA-256 of its name, analysis version, plugin, plugin version,
trajkit version, resolved parameters and the analysed runs' ``[run_id, committed snapshots]``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

from trajkit.analysis.ensemble import Ensemble
from trajkit.analysis.grouping import declares_group_by, plan_groups
from trajkit.analysis.plugins import AnalysisInfo, Registry
from trajkit.archive.format import to_jsonable
from trajkit.archive.metadata import get_path
from trajkit.errors import AnalysisError, TrajkitError
from trajkit.validation import did_you_mean
from trajkit.version import __version__


@dataclass
class Planned:
    """One analysis of a report: its registry entry, the parameters given (as given) and resolved."""

    info: AnalysisInfo
    given: dict[str, Any]
    params: dict[str, Any]
    why_not: str | None = None       # set when a named analysis's needs are not met (its failure)

    @property
    def name(self) -> str:
        return self.info.name


def parse_param_options(pairs: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``("overlaps.n_waiting_times=4", ...)`` → ``{"overlaps": {"n_waiting_times": "4"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        name, dot, param = key.strip().rpartition(".")
        if not sep or not dot or not name or not param:
            raise AnalysisError(f"-p {item!r}: expected NAME.key=value, e.g. -p overlaps.n_waiting_times=4")
        out.setdefault(name, {})[param] = value
    return out


def _names(text: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise AnalysisError("--analyses is empty; name analyses (comma-separated) or leave it out for all that apply")
    return names


def check_request(reg: Registry, analyses: str | list[str] | None, params: dict[str, dict[str, Any]]
                  ) -> tuple[list[str] | None, dict[str, dict[str, Any]]]:
    """Validate ``analyses`` and ``params`` against the installed analyses before any data is read:
    unknown names (with the closest), parameters of analyses not selected, invalid values."""
    names = _names(analyses)
    for n in names or ():
        if n not in reg.analyses:
            raise AnalysisError(f"--analyses: no analysis named {n!r}{did_you_mean(n, reg.analyses)}; "
                                "`trajkit plugins` lists them")
    for n, given in params.items():
        if n not in reg.analyses:
            raise AnalysisError(f"-p {n}.{next(iter(given), 'key')}=...: no analysis named {n!r}"
                                f"{did_you_mean(n, reg.analyses)}; `trajkit plugins` lists them")
        if names is not None and n not in names:
            raise AnalysisError(f"-p {n}.{next(iter(given), 'key')}=...: analysis {n!r} is not selected "
                                f"(--analyses {','.join(names)}); add it to --analyses or drop the -p")
        reg.analyses[n].cls.resolve_params(given)
    return names, params


def _group_key_missing(ens: Ensemble, key: str) -> str | None:
    for a in ens.archives:
        coords = get_path(a.metadata, "ensemble.coords", None) or {}
        if key not in coords and get_path(a.metadata, key, None) is None:
            return f"{a.path} has no metadata key {key!r} to group by"
    return None


def _not_rebuildable(ens: Ensemble) -> str | None:
    from trajkit.models.registry import model_entry

    for a in ens.archives:
        try:
            model_entry(a.metadata, a.path)
        except TrajkitError as e:
            return str(e)
        if not isinstance(get_path(a.metadata, "dataset.spec", None), dict) or not get_path(a.metadata, "loss.name",
                                                                                             None):
            return f"{a.path}: no dataset.spec or loss.name in its metadata, so its loss cannot be rebuilt"
    return None


def why_not(info: AnalysisInfo, ens: Ensemble, params: dict[str, Any]) -> str | None:
    """Why the analysed runs do not meet the analysis's ``needs`` (module doc), or None when they do."""
    needs = info.cls.needs
    if not ens.archives:
        return "no finished runs to analyse yet"
    empty = next((a for a in ens.archives if a.n_snapshots == 0), None)
    if empty is not None:
        return f"{empty.path} has no committed snapshots yet"
    if needs == "archive":
        return None if len(ens) == 1 else f"takes one archive; the inputs are {len(ens)} runs"
    if needs == "groups":
        return _group_key_missing(ens, params["group_by"])
    group_by = "auto" if declares_group_by(info.cls) or params.get("group_by") == "none" else params["group_by"]
    try:
        plan_groups(ens, group_by, same_steps=needs == "ensemble")
    except TrajkitError as e:
        return str(e)
    return _not_rebuildable(ens) if needs == "runs" else None


def select(reg: Registry, names: list[str] | None, params: dict[str, dict[str, Any]], ens: Ensemble
           ) -> tuple[list[Planned], dict[str, str]]:
    """``(planned analyses, {left-out analysis: reason})`` (module doc)."""
    planned, left_out = [], {}
    for n in names if names is not None else sorted(reg.analyses):
        info = reg.analyses[n]
        given = dict(params.get(n, {}))
        resolved = info.cls.resolve_params(given)
        reason = why_not(info, ens, resolved)
        if reason is not None and names is None:
            if n in params:
                raise AnalysisError(f"-p {n}.{next(iter(given), 'key')}=...: analysis {n!r} does not apply to these "
                                    f"inputs ({reason}); name it in --analyses to run it anyway")
            left_out[n] = reason
            continue
        planned.append(Planned(info, given, resolved, reason))
    return planned, left_out


def cache_key(p: Planned, fingerprint: list[list[Any]]) -> str:
    """The SHA-256 of what the result of ``p`` depends on (module doc)."""
    doc = {"analysis": p.name, "analysis_version": p.info.cls.version, "plugin": p.info.plugin,
           "plugin_version": p.info.plugin_version, "trajkit_version": __version__,
           "params": to_jsonable(p.params, strict=True), "runs": fingerprint}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def cli_value(v: Any) -> str:
    """A parameter value as ``-p`` text: lists comma-joined, None as ``none``, booleans lower-case."""
    if isinstance(v, list | tuple):
        return ",".join(cli_value(x) for x in v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def analyze_command(p: Planned, args: list[str]) -> str:
    """The ``trajkit analyze`` command line that reproduces the result of ``p`` on ``args``."""
    parts = ["trajkit", "analyze", "--plugin", p.name]
    for k, v in p.given.items():
        parts += ["-p", f"{k}={cli_value(v)}"]
    return shlex.join([*parts, *args])
