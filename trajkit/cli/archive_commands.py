"""Archive commands: ``trajkit info``, ``validate``, ``repair``, ``import`` and ``push`` (parse, call, print)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click

from trajkit.archive.importer import import_checkpoints
from trajkit.archive.info import format_summary, run_state, summarize
from trajkit.archive.reader import open_archive
from trajkit.archive.repair import repair
from trajkit.archive.storage import parse_storage_options
from trajkit.archive.validate import validate

#: the ``--storage-options`` flag of every command that reads or writes URLs
storage_options_flag = click.option(
    "--storage-options", "storage_options", metavar="JSON", default=None,
    help="fsspec options for s3:// (or other) URLs as a JSON object, e.g. '{\"endpoint_url\": "
         "\"http://127.0.0.1:9000\"}'; default: the AWS environment variables (AWS_ENDPOINT_URL, ...).")


@click.command("info")
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--steps", "show_steps", is_flag=True,
              help="Also list every snapshot step (to choose exact waiting times, e.g. -p waiting_times=...).")
@storage_options_flag
def info_command(archive: str, as_json: bool, show_steps: bool, storage_options: str | None) -> None:
    """Summarise ARCHIVE: run, status, model, N, T, step range, schedule, metrics, size, compression."""
    arch = open_archive(archive, storage_options=parse_storage_options(storage_options))
    summary = summarize(arch)
    steps = [int(k) for k in arch.steps] if show_steps else None
    if as_json:
        click.echo(json.dumps(summary | ({"snapshot_steps": steps} if show_steps else {}), indent=2))
        return
    click.echo("\n".join(format_summary(summary)))
    if show_steps:
        click.echo(f"snapshot steps ({len(steps)}):")
        click.echo(textwrap.fill(" ".join(map(str, steps)), width=100, initial_indent="  ",
                                 subsequent_indent="  ", break_on_hyphens=False) if steps else "  none")


@click.command("validate")
@click.argument("archives", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Also exit 1 when an archive is interrupted (its writer died).")
@storage_options_flag
def validate_command(archives: tuple[str, ...], strict: bool, storage_options: str | None) -> None:
    """Check each ARCHIVE (schema, structure, committed chunks, NaN/inf); exit 1 if any has a problem.

    An interrupted archive (its writer died; committed rows are valid) gets a warning line, and fails
    only with --strict; a live one (a writer is recording) is validated as far as it is committed.
    An ARCHIVE may be a URL (s3://bucket/run.trajkit).
    """
    options = parse_storage_options(storage_options)
    failed = False
    for path in archives:
        problems = validate(path, options)
        for p in problems:
            click.echo(p.message)
        if problems:
            failed = True
            continue
        arch = open_archive(path, storage_options=options)
        state = run_state(arch)
        if state.unfinished:
            click.echo(f"trajkit: warning: {path}: {state.describe()}", err=True)
            failed = failed or (strict and state.state == "interrupted")
        click.echo(f"ok {path} ({arch.n_snapshots} snapshots x {arch.n_params} parameters)")
    if failed:
        raise click.exceptions.Exit(1)


@click.command("repair")
@click.argument("archive")
def repair_command(archive: str) -> None:
    """Truncate ARCHIVE to its last good committed snapshot and remove uncommitted files."""
    click.echo("\n".join(repair(archive).lines()))


@click.command("import")
@click.argument("checkpoint_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, help="The archive to create (NAME.trajkit; must not exist).")
@click.option("--pattern", default=None,
              help="Regex searched in file names; its group 'step' (or first group) is the step. "
                   "Default: the last integer in the file stem.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Attach run metadata, e.g. --set dynamics.temperature=1e-4 (repeatable; the value is read as "
                   "TOML), so analyses group imported runs by it.")
def import_command(checkpoint_dir: str, out: str, pattern: str | None, settings: tuple[str, ...]) -> None:
    """Import CHECKPOINT_DIR of PyTorch state_dict files (torch.load weights_only=True) as an archive."""
    from trajkit.experiments.config import parse_override

    metadata = dict(parse_override(text) for text in settings)
    path = import_checkpoints(checkpoint_dir, out, metadata=metadata, pattern=pattern)
    arch = open_archive(path)
    skipped = arch.metadata.get("import", {}).get("skipped") or []
    click.echo(f"imported {arch.n_snapshots} checkpoints (steps {int(arch.steps[0])}..{int(arch.steps[-1])}, "
               f"{arch.n_params} parameters in {len(arch.layout)} tensors) -> {Path(path)}")
    if skipped:
        click.echo(f"skipped non-floating buffers: {', '.join(skipped)}")


@click.command("push")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("destination")
@storage_options_flag
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(min=1), help="Uploads in flight at once.")
@click.option("-v", "--verbose", is_flag=True, help="Print each object as it is uploaded.")
def push_command(source: str, destination: str, storage_options: str | None, jobs: int, verbose: bool) -> None:
    """Upload the archive (or ensemble directory) SOURCE to the URL DESTINATION, verified and resumable.

    SOURCE must validate. Objects already at DESTINATION with the same MD5 are skipped (rerun an interrupted
    push); the root zarr.json of each archive, and ensemble.json, go last, so a half-uploaded archive is
    never visible. `trajkit push ens/ s3://b/ens/` puts ens/r00.trajkit at s3://b/ens/r00.trajkit;
    `trajkit push run.trajkit s3://b/runs/` puts it at s3://b/runs/run.trajkit.
    """
    from trajkit.archive.push import push

    def show(local: str, url: str) -> None:
        click.echo(f"upload: {local} -> {url}")

    report = push(source, destination, parse_storage_options(storage_options), jobs=jobs,
                  on_upload=show if verbose else None)
    click.echo("\n".join(report.lines()))


def register(cli: click.Group) -> None:
    """Attach the archive commands to the ``trajkit`` group."""
    for command in (info_command, validate_command, repair_command, import_command, push_command):
        cli.add_command(command)
