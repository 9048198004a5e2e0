"""``trajkit report``: a thin wrapper over :func:`trajkit.report.build_report` and ``watch_report``."""

from __future__ import annotations

import click

from trajkit.errors import DeviceError


@click.command("report")
@click.argument("archives", nargs=-1)
@click.option("--out", "out", required=True, metavar="DIR", help="The report directory (DIR/index.html).")
@click.option("--analyses", metavar="A,B,...", default=None,
              help="Analyses to run (default: every installed analysis whose needs the inputs meet).")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME.KEY=VALUE",
              help="A parameter of analysis NAME, e.g. -p overlaps.n_waiting_times=4.")
@click.option("--force", is_flag=True, help="Replace an --out that is a file, another report or other files.")
@click.option("--watch", "watch", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Regenerate every SECONDS while runs are still recording (stop with Ctrl-C).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="Where the kernels run (default: CUDA when available).")
def report_cmd(archives: tuple[str, ...], out: str, analyses: str | None, params: tuple[str, ...], force: bool,
               watch: float | None, device: str | None) -> None:
    """Write a static HTML report of ARCHIVES (archives, ensemble directories or globs) into DIR."""
    from trajkit.devices import resolve_device
    from trajkit.report import build_report, watch_report
    from trajkit.report.plan import parse_param_options

    try:
        dev = resolve_device(device, key="--device")
    except DeviceError as e:
        raise DeviceError(f"{e} (--device cpu, or leave --device out)") from None
    kw = {"analyses": analyses, "params": parse_param_options(params), "force": force, "device": dev}
    if watch is None:
        summary = build_report(list(archives), out, **kw)
        click.echo(summary.line())
        return
    builds = watch_report(list(archives), out, watch, **kw)
    try:
        for summary in builds:
            click.echo(summary.line())
    except KeyboardInterrupt:
        click.echo(f"stopped watching; {out}/index.html holds the last build")
    finally:
        builds.close()


def register(cli: click.Group) -> None:
    """Attach ``report`` to the ``trajkit`` group."""
    cli.add_command(report_cmd)
