"""The Python face of ``trajkit analyze`` and ``trajkit plugins``.

>>> r = trajkit.analyze("overlaps", ["sweep/"], waiting_times=[10, 100], select="hidden")   # doctest: +SKIP
>>> r.arrays["msd"].shape, r.provenance["plugin"]                                            # doctest: +SKIP
>>> [a["name"] for a in trajkit.list_analyses()]                                             # doctest: +SKIP

Order of work in :func:`analyze`: find the analysis, validate every parameter (nothing is read before
that), open the data it needs read-only, compute, then fill the result's parameters and provenance.

:func:`analyze` takes analysis parameters only, as Python values (``waiting_times=[100, 1000]``); the
command line parses its ``-p key=value`` strings itself. Besides the parameters it has execution
options, keyword-only: ``device`` (:func:`trajkit.devices.resolve_device`), ``progress`` and
``storage_options`` (fsspec options of URL inputs such as ``s3://bucket/ens/``). A
``trajkit analyze`` option passed as a keyword (``out=``, ``from_cli=``, ...) is refused in one line.

A :class:`~trajkit.errors.TrajkitError` raised inside a plugin's ``compute`` keeps its class (an
:class:`~trajkit.errors.ArchiveError` stays one), its message prefixed with the analysis and its plugin;
any other exception becomes one :class:`~trajkit.errors.PluginError` line naming them (the original is
chained for ``--debug``).
"""

from __future__ import annotations

import os
from typing import Any

from trajkit.analysis.contract import CLI_OPTIONS, Context
from trajkit.analysis.ensemble import Ensemble, open_ensemble, resolve_paths
from trajkit.analysis.grouping import run_grouped
from trajkit.analysis.plotting import input_coords
from trajkit.analysis.plugins import AnalysisInfo, find_analysis_class, get_registry
from trajkit.analysis.result import Result, now_iso
from trajkit.analysis.result import load_result as _load_result
from trajkit.analysis.tasks import Executor
from trajkit.archive import Archive, open_archive
from trajkit.archive.info import check_unfinished
from trajkit.errors import AnalysisError, PluginError, TrajkitError
from trajkit.scheduler import connect


def list_analyses() -> list[dict[str, Any]]:
    """Each registered analysis as a dict: name, version, description, needs, params, plugin, distribution."""
    reg = get_registry()
    return [reg.analyses[k].to_json() for k in sorted(reg.analyses)]


def _open_data(info: AnalysisInfo, archives: Any, params: dict[str, Any],
               storage_options: dict[str, Any] | None = None) -> tuple[Any, list[Archive]]:
    needs = info.cls.needs
    if isinstance(archives, Ensemble):
        ens = archives
    elif isinstance(archives, Archive):
        ens = Ensemble([archives], check=False)
    else:
        if isinstance(archives, str | os.PathLike):
            archives = [archives]
        if needs == "archive" and not all(isinstance(a, Archive) for a in archives):
            found, _ = resolve_paths(archives, storage_options)
            if len(found) != 1:
                raise AnalysisError(f"analysis {info.name!r} takes exactly one archive, got {len(found)}; "
                                    "pass one archive (or run it once per archive)")
            a = open_archive(found[0], storage_options=storage_options)
            return a, [a]
        # an analysis with a ``stage`` parameter may be given a [[stages]] protocol's output directory
        ens = open_ensemble(archives, check=False, storage_options=storage_options, stage=params.get("stage"))
    if needs == "archive":
        if len(ens) != 1:
            raise AnalysisError(f"analysis {info.name!r} takes exactly one archive, got {len(ens)}")
        return ens[0], ens.archives
    if needs == "runs":
        ens = Ensemble(ens.archives, ens.info, check=True, same_steps=False)
        return ens, ens.archives
    if needs == "ensemble":
        return ens, ens.archives                    # checked per sweep group by grouping.run_grouped
    return ens.groups(params["group_by"]), ens.archives


#: why a keyword of :data:`~trajkit.analysis.contract.CLI_OPTIONS` is not a parameter, when it is not a CLI flag
_NOT_A_PARAMETER = {"params": "pass the parameters themselves as keywords",
                    "from_cli": "the command line parses its -p strings itself; pass Python values"}


def analyze(name: str, archives: Any, *, device: str | None = None, progress: bool = False,
            storage_options: dict[str, Any] | None = None, scheduler: Any = None, **params: Any) -> Result:
    """Run analysis ``name`` on ``archives`` (paths, ensemble directories, globs, Archive/Ensemble objects).

    ``params`` are the analysis's parameters (``trajkit analyze --plugin NAME --help`` lists them).
    ``device``: ``cpu``, ``cuda``, ``cuda:K`` or None/``auto`` (CUDA when present); asking for CUDA on a
    machine without it is an error. ``progress``: show progress bars on stderr. ``storage_options``: fsspec
    options for archives given as URLs (``s3://…``; see :func:`trajkit.open_archive`). ``scheduler``: where the
    tasks run — ``"tcp://host:port"``, ``"local:N"``, a ``distributed.Client``, ``"in-process"``, or None
    (the active Dask client if this process has one, else in-process); see :mod:`trajkit.scheduler`.
    """
    options = [k for k in params if k in CLI_OPTIONS]
    if options:
        k = options[0]
        raise AnalysisError(f"trajkit.analyze({name!r}, ...) takes analysis parameters only, not {k}=; "
                            f"{_NOT_A_PARAMETER.get(k, f'{k} is an option of the `trajkit analyze` command')} "
                            "(trajkit.analyze(name, archives, *, device=None, progress=False, storage_options=None, "
                            "scheduler=None, **params))")
    return run_analysis(get_registry().get(name), archives, device=device, progress=progress, given=params,
                        storage_options=storage_options, scheduler=scheduler)


def run_analysis(info: AnalysisInfo, archives: Any, *, device: str | None = None, progress: bool = False,
                 given: dict[str, Any] | None = None, storage_options: dict[str, Any] | None = None,
                 scheduler: Any = None) -> Result:
    """:func:`analyze` for an already looked-up (or, in tests, hand-made) :class:`AnalysisInfo`."""
    resolved = info.cls.resolve_params(given or {})
    with connect(scheduler) as cluster:
        executor = None if cluster is None else Executor(cluster, progress)
        ctx = Context(device=device, show_progress=progress, analysis=info.name, executor=executor)
        result = _run(info, archives, resolved, ctx, storage_options)
        if executor is not None:
            result.provenance["scheduler"] = executor.summary()
    return result


def _run(info: AnalysisInfo, archives: Any, resolved: dict[str, Any], ctx: Context,
         storage_options: dict[str, Any] | None) -> Result:
    data, used = _open_data(info, archives, resolved, storage_options)
    unfinished = check_unfinished(used)       # one UnfinishedRunWarning line naming live/interrupted inputs
    where = f"analysis {info.name!r} (plugin {info.plugin!r}" + \
        (f", {info.distribution} {info.plugin_version})" if info.distribution else ")")
    try:
        result = run_grouped(info.cls, data, dict(resolved), ctx)
    except TrajkitError as e:          # the same class, the message says where it came from
        e.args = (f"{where}: {e}", *e.args[1:])
        raise
    except Exception as e:
        text = " ".join(str(e).split())
        raise PluginError(f"{where} raised {type(e).__name__}: {text}") from e
    if not isinstance(result, Result):
        raise PluginError(f"{where}: compute() returned {type(result).__name__}, expected "
                          "trajkit.analysis.Result")
    from trajkit.version import __version__

    result.params = resolved
    result.provenance = {
        "analysis": info.name, "analysis_version": info.cls.version, "plugin": info.plugin,
        "distribution": info.distribution, "plugin_version": info.plugin_version,
        "trajkit_version": __version__, "run_ids": [str(a.metadata.get("run_id")) for a in used],
        "inputs": [str(a.path) for a in used], "created": now_iso(), "device": ctx.device,
        "unfinished": unfinished,
        "coords": input_coords(used),
    }
    result.analysis = info.cls
    return result


def load_result(path: str | os.PathLike) -> Result:
    """:func:`trajkit.analysis.result.load_result` with the analysis class attached when it is installed,
    so ``plot()`` draws the analysis's own figure."""
    result = _load_result(path)
    if result.analysis is None and result.provenance.get("analysis"):
        result.analysis = find_analysis_class(str(result.provenance["analysis"]))
    return result
