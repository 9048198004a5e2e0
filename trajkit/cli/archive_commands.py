"""Archive commands: ``trajkit info``, ``validate``, ``repair`` and ``import`` (parse, call, print)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click

from trajkit.archive.importer import import_checkpoints
from trajkit.archive.info import format_summary, run_state, summarize
from trajkit.archive.reader import open_archive
from trajkit.archive.repair import repair
from trajkit.archive.validate import validate


@click.command("info")
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--steps", "show_steps", is_flag=True,
              help="Also list every snapshot step (to choose exact waiting times, e.g. -p waiting_times=...).")
def info_command(archive: str, as_json: bool, show_steps: bool) -> None:
    """Summarise ARCHIVE: run, status, model, N, T, step range, schedule, metrics, size, compression."""
    summary = summarize(archive)
    steps = [int(k) for k in open_archive(archive).steps] if show_steps else None
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
def validate_command(archives: tuple[str, ...], strict: bool) -> None:
    """Check each ARCHIVE (schema, structure, committed chunks, NaN/inf); exit 1 if any has a problem.

    An interrupted archive (its writer died; committed rows are valid) gets a warning line, and fails
    only with --strict; a live one (a writer is recording) is validated as far as it is committed.
    """
    failed = False
    for path in archives:
        problems = validate(path)
        for p in problems:
            click.echo(p.message)
        if problems:
            failed = True
            continue
        arch = open_archive(path)
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


def register(cli: click.Group) -> None:
    """Attach the archive commands to the ``trajkit`` group."""
    for command in (info_command, validate_command, repair_command, import_command):
        cli.add_command(command)
