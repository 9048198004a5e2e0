"""The Python face of ``trajkit analyze`` and ``trajkit plugins``.

>>> r = trajkit.analyze("overlaps", ["sweep/"], waiting_times=[10, 100], select="hidden")   # doctest: +SKIP
>>> r.arrays["msd"].shape, r.provenance["plugin"]                                            # doctest: +SKIP
>>> [a["name"] for a in trajkit.list_analyses()]                                             # doctest: +SKIP

Order of work in :func:`analyze`: find the analysis, validate every parameter (nothing is read before
that), open the data it needs read-only, compute, then fill the result's parameters and provenance.
An exception raised inside a plugin's ``compute`` becomes one :class:`~trajkit.errors.PluginError` line
naming the analysis and its plugin (the original is chained for ``--debug``).
"""

from __future__ import annotations

import os
from typing import Any

from trajkit.analysis.contract import Context
from trajkit.analysis.ensemble import Ensemble, open_ensemble, resolve_paths
from trajkit.analysis.plotting import input_coords
from trajkit.analysis.plugins import AnalysisInfo, get_registry
from trajkit.analysis.result import Result, now_iso
from trajkit.archive import Archive, open_archive
from trajkit.errors import AnalysisError, PluginError, TrajkitError


def list_analyses() -> list[dict[str, Any]]:
    """Each registered analysis as a dict: name, version, description, needs, params, plugin, distribution."""
    reg = get_registry()
    return [reg.analyses[k].to_json() for k in sorted(reg.analyses)]


def _open_data(info: AnalysisInfo, archives: Any, params: dict[str, Any]) -> tuple[Any, list[Archive]]:
    needs = info.cls.needs
    if isinstance(archives, Ensemble):
        ens = archives
    elif isinstance(archives, Archive):
        ens = Ensemble([archives], check=False)
    else:
        if isinstance(archives, str | os.PathLike):
            archives = [archives]
        if needs == "archive" and not all(isinstance(a, Archive) for a in archives):
            found, _ = resolve_paths(archives)
            if len(found) != 1:
                raise AnalysisError(f"analysis {info.name!r} takes exactly one archive, got {len(found)}; "
                                    "pass one archive (or run it once per archive)")
            a = open_archive(found[0])
            return a, [a]
        ens = open_ensemble(archives, check=False)
    if needs == "archive":
        if len(ens) != 1:
            raise AnalysisError(f"analysis {info.name!r} takes exactly one archive, got {len(ens)}")
        return ens[0], ens.archives
    if needs == "ensemble":
        ens = Ensemble(ens.archives, ens.info, check=True)
        return ens, ens.archives
    return ens.groups(params["group_by"]), ens.archives


def analyze(name: str, archives: Any, device: str | None = None, progress: bool = False,
            params: dict[str, Any] | None = None, from_cli: bool = False, **kw: Any) -> Result:
    """Run analysis ``name`` on ``archives`` (paths, ensemble directories, globs, Archive/Ensemble objects).

    Parameters go as keywords (``waiting_times=[10, 100]``) or as a ``params`` dict; ``from_cli`` parses
    string values as ``-p key=value`` does. ``device`` is ``cpu``, ``cuda`` or None (CUDA when present).
    """
    given = dict(params or {})
    given.update(kw)
    return run_analysis(get_registry().get(name), archives, device, progress, given, from_cli)


def run_analysis(info: AnalysisInfo, archives: Any, device: str | None = None, progress: bool = False,
                 given: dict[str, Any] | None = None, from_cli: bool = False) -> Result:
    """:func:`analyze` for an already looked-up (or, in tests, hand-made) :class:`AnalysisInfo`."""
    resolved = info.cls.resolve_params(given or {}, from_cli=from_cli)
    data, used = _open_data(info, archives, resolved)
    ctx = Context(device=device, show_progress=progress, analysis=info.name)
    where = f"analysis {info.name!r} (plugin {info.plugin!r}" + \
        (f", {info.distribution} {info.plugin_version})" if info.distribution else ")")
    try:
        result = info.cls().compute(data, dict(resolved), ctx)
    except TrajkitError as e:
        err = AnalysisError(f"{where}: {e}")
        err.exit_code = e.exit_code
        raise err from e
    except Exception as e:
        text = " ".join(str(e).split())
        raise PluginError(f"{where} raised {type(e).__name__}: {text}") from e
    if not isinstance(result, Result):
        raise PluginError(f"{where}: compute() returned {type(result).__name__}, expected "
                          "trajkit.analysis.Result")
    from trajkit import __version__

    result.params = resolved
    result.provenance = {
        "analysis": info.name, "analysis_version": info.cls.version, "plugin": info.plugin,
        "distribution": info.distribution, "plugin_version": info.plugin_version,
        "trajkit_version": __version__, "run_ids": [str(a.metadata.get("run_id")) for a in used],
        "inputs": [str(a.path) for a in used], "created": now_iso(), "device": ctx.device,
        "coords": input_coords(used),
    }
    result.analysis = info.cls
    return result

