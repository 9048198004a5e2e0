"""``trajkit record``: run a built-in experiment config and record every run (parse, call, print)."""

from __future__ import annotations

from typing import Any

import click

from trajkit.cli.archive_commands import storage_options_flag


def _size(n: int | None) -> str:
    if n is None or n < 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    return [line, *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)]


def format_plan(summary: dict[str, Any]) -> list[str]:
    """The dry-run report: one line per run, then the totals."""
    rows = [[r["name"], str(r["steps"]), str(r["snapshots"]), str(r["n_params"]), _size(r["estimated_bytes"])]
            for r in summary["runs"]]
    out = _table(["run", "steps", "snapshots", "params", "disk (est.)"], rows)
    for r in summary["runs"]:
        if "width" in r and r["replica"] == 0:
            out.append(f"{r['name']}: model.n_params = {r['n_params_target']} -> width {r['width']} "
                       f"({r['n_params']} parameters)")
    out.append(f"{summary['n_runs']} runs into {summary['out']} on {summary['device']}; estimated disk use "
               f"{_size(summary['estimated_bytes'])} (dry run: nothing trained or written)")
    return out


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The closing table: run, status, final train/test loss and accuracy, archive size."""
    rows = [[r["name"], r["status"] or "-", _num(r.get("train_loss")), _num(r.get("test_loss")),
             _num(r.get("test_acc")), _size(r.get("bytes"))] for r in summary["runs"]]
    out = _table(["run", "status", "train_loss", "test_loss", "test_acc", "size"], rows)
    for r in summary["runs"]:
        if r.get("reason"):
            out.append(f"{r['name']}: {r['reason']}")
    out.append(f"{summary['n_runs']} runs in {summary['out']} ({summary['n_diverged']} diverged, "
               f"{summary['n_failed']} failed)")
    return out


@click.command("record")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Experiment TOML file (see docs/EXPERIMENTS.md).")
@click.option("--from-archive", "from_archive", default=None, metavar="RUN.trajkit",
              help="Re-run the config stored in an archive recorded by trajkit record (reproduces that run).")
@click.option("--out", "out", required=True, metavar="DIR",
              help="Ensemble directory (ensemble.json + one archive per run) or URL (s3://bucket/prefix/: each point "
                   "recorded locally, then pushed); rerun to resume.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set dynamics.temperature=1e-4 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the runs, steps, snapshots and disk estimate; train nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@click.option("--device", default=None, metavar="cpu|cuda",
              help="Override run.device (cpu, cuda or cuda:K).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: torch's choice; 1 is often faster for small models on a busy "
                   "machine).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run each sweep point as one task on a Dask cluster: tcp://HOST:PORT or local:N (--out must be "
                   "reachable from every worker, or a URL; needs trajkit[dask]).")
@storage_options_flag
def record_command(config: str | None, from_archive: str | None, out: str, overrides: tuple[str, ...],
                   dry_run: bool, quiet: bool, device: str | None, threads: int | None,
                   scheduler: str | None, storage_options: str | None) -> None:
    """Train and record a built-in experiment: replicas trained together, sweeps, one archive per run."""
    from trajkit.archive.storage import parse_storage_options
    from trajkit.errors import ConfigError, DeviceError
    from trajkit.experiments import config_from_archive, run_experiment

    if (config is None) == (from_archive is None):
        raise ConfigError("give exactly one of --config EXPERIMENT.toml or --from-archive RUN.trajkit")
    source: Any = config if config is not None else config_from_archive(from_archive)
    try:
        summary = run_experiment(source, out, overrides, quiet=quiet, dry_run=dry_run, device=device,
                                 threads=threads, scheduler=scheduler or "in-process",
                                 storage_options=parse_storage_options(storage_options))
    except DeviceError as e:
        raise DeviceError(f"{e} (--device cpu)") from None
    if dry_run:
        click.echo("\n".join(format_plan(summary)))
        return
    if not quiet:
        click.echo("\n".join(format_summary(summary)))
    if summary["n_failed"]:
        where = f"{out}/<stage>/ensemble.json" if summary.get("stages") else f"{out}/ensemble.json"
        raise ConfigError(f"{summary['n_failed']} of {summary['n_runs']} runs failed (reasons in {where}); rerun "
                          "the same command to retry them")


def register(cli: click.Group) -> None:
    """Attach ``trajkit record`` to the command group."""
    cli.add_command(record_command)
