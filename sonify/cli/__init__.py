"""The ``sonify`` command: a thin layer over the library.

Errors are printed as one line (``sonify: error: ...``) with exit status 1,
warnings as ``sonify: warning: ...``; no tracebacks for bad input.
"""

from __future__ import annotations

import warnings
from typing import Any

import click

from .._errors import SonifyError
from .._version import __version__
from . import compare, devices, play, render, serve, train
from ._options import CLI_NAMES

__all__ = ["main"]


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    click.echo(f"sonify: warning: {message}", err=True)


class _Group(click.Group):
    """Every error as one line on stderr: bad options (exit 2), sonify's own errors and file errors (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # includes a bad option value (click.BadParameter)
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"sonify: error: {exc.format_message()} (see '{command} --help')", err=True)
            ctx.exit(2)
        except SonifyError as exc:
            click.echo(f"sonify: error: {exc.for_cli(CLI_NAMES)}", err=True)
            ctx.exit(1)
        except OSError as exc:  # a file error that no check could foresee (a disk that fills up)
            reason = exc.strerror or str(exc) or type(exc).__name__
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"sonify: error: {reason}{where}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sonify")
def main() -> None:
    """Hear your neural network train: gradient norms become pitches.

    \b
    Quick start:
      sonify train                       # the 2019 experiment, 200 steps -> audio_out/
      sonify train --lr 1.0 --batch-size 256   # the run that explodes
      sonify render audio_out/RUN.norms.csv -o other.wav --map linear
    """


for _command in (
    train.train,
    play.play,
    serve.serve_command,
    devices.devices,
    compare.compare_command,
    render.render_command,
):
    main.add_command(_command)
