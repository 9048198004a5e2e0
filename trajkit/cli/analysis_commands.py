"""``trajkit plugins`` and ``trajkit analyze``: thin wrappers over :mod:`trajkit.analysis`.

``trajkit analyze --plugin NAME --help`` shows that analysis's parameters (types, defaults, valid ranges
and help). Plugin-loading warnings are printed as one ``trajkit: warning:`` line each.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from trajkit.archive.storage import parse_storage_options
from trajkit.cli.archive_commands import storage_options_flag
from trajkit.errors import AnalysisError, DeviceError, TrajkitError


def _registry() -> Any:
    from trajkit.analysis.plugins import get_registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = get_registry()
    for w in caught:
        click.echo(f"trajkit: warning: {w.message}", err=True)
    return reg


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List installed analyses with their plugin, distribution and version, and broken plugins."""
    reg = _registry()
    analyses = [reg.analyses[k].to_json() for k in sorted(reg.analyses)]
    broken = [b.to_json() for b in reg.broken]
    if as_json:
        click.echo(json.dumps({"analyses": analyses, "plugins": reg.plugins, "broken": broken}, indent=2))
        return
    if not analyses:
        click.echo("no analyses installed")
    for a in analyses:
        dist = f"{a['distribution']} {a['plugin_version']}" if a["distribution"] else "not installed"
        click.echo(f"{a['name']:<16} {a['version']:<8} plugin {a['plugin']} ({dist})  {a['description']}")
    for b in broken:
        dist = f" ({b['distribution']} {b['plugin_version']})" if b["distribution"] else ""
        click.echo(f"BROKEN plugin {b['plugin']}{dist}: {b['error']}")


def _analysis_help(info: Any) -> str:
    cls = info.cls
    dist = f", {info.distribution} {info.plugin_version}" if info.distribution else ""
    lines = [f"trajkit analyze --plugin {cls.name} [-p key=value]... ARCHIVES... [--out DIR] [--json]", "",
             f"  {cls.name} {cls.version} (plugin {info.plugin}{dist}): {cls.description}",
             f"  needs: {cls.needs}", "", "Parameters (-p key=value):"]
    for p in cls.all_params():
        default = "none" if p.default is None else json.dumps(p.default)
        lines.append(f"  {p.name} ({p.type}, default {default})")
        if p.help:
            lines.append(f"      {p.help}")
        lines.append(f"      valid: {p.valid_text()}")
    if not cls.all_params():
        lines.append("  (none)")
    return "\n".join(lines)


def _parse_params(cls: Any, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-p key=value`` strings → Python values, each read by its :class:`Param`'s ``parse`` (an unknown
    key keeps its string: :meth:`Analysis.resolve_params` reports it with the closest name)."""
    by_name = {p.name: p for p in cls.all_params()}
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AnalysisError(f"-p {item!r}: expected key=value, e.g. -p waiting_times=100,1000")
        out[key] = by_name[key].parse(value) if key in by_name else value
    return out


@click.command("analyze", add_help_option=False)
@click.option("--plugin", "name", metavar="NAME", help="The analysis to run (see `trajkit plugins`).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="An analysis parameter.")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Write the result and NAME.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print scalars, params and provenance as JSON.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="Where the kernels run (default: CUDA when available).")
@storage_options_flag
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the tasks on a Dask cluster: tcp://HOST:PORT of a running scheduler, or local:N for N local "
                   "worker processes (needs trajkit[dask]).")
@click.option("-h", "--help", "show_help", is_flag=True, help="Show this help, or the analysis's parameters.")
@click.argument("archives", nargs=-1)
@click.pass_context
def analyze_cmd(ctx: click.Context, name: str | None, params: tuple[str, ...], out: str | None, as_json: bool,
                device: str | None, storage_options: str | None, scheduler: str | None, show_help: bool,
                archives: tuple[str, ...]) -> None:
    """Run an analysis on archives, ensemble directories or globs (paths or URLs: s3://bucket/ens/)."""
    if show_help:
        if name:
            click.echo(_analysis_help(_registry().get(name)))
        else:
            click.echo(ctx.get_help())
        return
    if not name:
        raise AnalysisError("missing --plugin NAME; `trajkit plugins` lists the analyses")
    reg = _registry()
    info = reg.get(name)
    given = _parse_params(info.cls, params)
    info.cls.resolve_params(given)                         # parameter errors before anything is opened
    if not archives:
        raise AnalysisError(f"no archives given; usage: trajkit analyze --plugin {name} [-p k=v]... "
                            "ARCHIVES...")
    from trajkit.analysis.api import analyze
    from trajkit.devices import resolve_device

    try:
        dev = resolve_device(device, key="--device")
    except DeviceError as e:
        raise DeviceError(f"{e} (--device cpu, or leave --device out)") from None
    result = analyze(name, list(archives), device=dev, progress=sys.stderr.isatty() and not as_json,
                     storage_options=parse_storage_options(storage_options), scheduler=scheduler or "in-process",
                     **given)
    if out:
        _write_out(result, Path(out), name)
    if as_json:
        from trajkit.archive.format import to_jsonable

        doc = {"analysis": name, "scalars": result.scalars, "params": result.params,
               "provenance": result.provenance}
        click.echo(json.dumps(to_jsonable(doc, strict=True), indent=2))
    else:
        click.echo(repr(result))
        for k, v in result.scalars.items():
            click.echo(f"  {k} = {v}")
        if out:
            click.echo(f"wrote {out}/result.json, arrays, CSV tables and {name}.png")


def _write_out(result: Any, out: Path, name: str) -> None:
    result.save(out)
    try:
        fig = result.plot()
    except AnalysisError as e:          # matplotlib missing: the result itself is written
        click.echo(f"trajkit: warning: no {name}.png: {e}", err=True)
        return
    except TrajkitError:
        raise
    except Exception as e:
        raise AnalysisError(f"analysis {name!r}: plot() raised {type(e).__name__}: {e} "
                            f"(the result is saved in {out})") from e
    fig.savefig(out / f"{name}.png", dpi=120)


def register(cli: click.Group) -> None:
    """Attach ``plugins`` and ``analyze`` to the ``trajkit`` group."""
    cli.add_command(plugins_cmd)
    cli.add_command(analyze_cmd)
