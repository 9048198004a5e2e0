"""The ``trajkit`` command line: a thin layer that parses, calls the library and prints.

Each concern's commands live in their own module and are attached to the :data:`cli` group here.
User errors (:class:`trajkit.errors.TrajkitError`) print one line and exit 1; anything else is an
internal error (exit 3). ``--debug`` (or ``TRAJKIT_DEBUG=1``) shows the traceback instead. Every
Python warning raised while a command runs is printed as one ``trajkit: warning: <message>`` line
(:func:`show_warning`); warnings of third-party libraries that say nothing about the user's data
(:data:`THIRD_PARTY_NOISE`) are not shown.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

import click

from trajkit import __version__
from trajkit.errors import TrajkitError

#: (message regex, category, module regex) of warnings hidden on the command line: deprecations inside
#: third-party libraries, which the user cannot act on, and zarr's note on a crashed writer's leftovers
#: (FORMAT.md tells readers to ignore them)
THIRD_PARTY_NOISE: tuple[tuple[str, type[Warning], str], ...] = (
    (r".*not recognized as a component of a Zarr hierarchy", UserWarning, ""),
    *((r"", category, r"(torch|numba|llvmlite|zarr|numcodecs|matplotlib|sklearn|scipy|music21|pluggy)\b")
      for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning)),
)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: the message alone, on one line, as ``trajkit: warning: ...``."""
    click.echo(f"trajkit: warning: {' '.join(str(message).split())}", err=True)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, every warning prints as one trajkit line and :data:`THIRD_PARTY_NOISE` is hidden;
    the caller's warning filters and ``showwarning`` come back afterwards."""
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        for message, category, module in THIRD_PARTY_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


class TrajkitGroup(click.Group):
    """A click group that turns trajkit errors into one line and an exit code, and warnings into one line."""

    def invoke(self, ctx: click.Context):
        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except TrajkitError as e:
            if _debug(ctx):
                raise
            click.echo(f"trajkit: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("trajkit: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:
            if _debug(ctx):
                raise
            click.echo(f"trajkit: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
                       "traceback and report it)", err=True)
            ctx.exit(3)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("TRAJKIT_DEBUG") == "1"


@click.group(cls=TrajkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trajkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Record neural-network training trajectories and analyse them like glasses."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    from trajkit.cli import archive_commands

    archive_commands.register(cli)
    for module in ("record_command", "analysis_commands", "report_command"):
        try:
            mod = __import__(f"trajkit.cli.{module}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"trajkit.cli.{module}":
                raise
            continue
        mod.register(cli)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="trajkit"))
