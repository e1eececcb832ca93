"""``sonify serve``: a run, followed as it grows, played and drawn by a web page (see :mod:`sonify.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._errors import SonifyParameterError
from ._options import CLI_NAMES, Finite, sound_options, sound_settings


@click.command("serve")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=6007, show_default=True, help="0 picks a free port.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; another than 127.0.0.1 is reachable from other machines (prefer an ssh tunnel).",
)
@click.option(
    "--wait",
    type=Finite(0.0, 1e9),
    default=None,
    help="Seconds to wait for the log to appear [default: for ever].",
)
@click.option("--tags", metavar="REGEX", default=None, help="TensorBoard scalars that hold gradient norms.")
@sound_options
@click.pass_context
def serve_command(
    ctx: click.Context, source: Path, port: int, host: str, wait: float | None, tags: str | None, **sound_options: Any
) -> None:
    """Serve a run to the browser: a page that plays it and draws it while it trains.

    SOURCE is what play --follow takes: a .norms.csv being written, a folder
    of runs, a TensorBoard run folder, or - for standard input. Prints the
    page's URL (with its token); Ctrl-C stops.

    \b
    On the training machine:  sonify serve runs/x.norms.csv
    On the laptop:            ssh -L 6007:localhost:6007 gpu-box
                              then open the printed URL and press Listen.
    """
    from ..importers import DEFAULT_TAG_PATTERN, check_tag_pattern
    from ..serve import Server

    def notice(text: str) -> None:
        click.echo(f"sonify: {text}", err=True)

    try:
        server = Server(
            str(source),
            host=host,
            port=port,
            sound=sound_settings(**sound_options),
            wait=wait,
            tags=check_tag_pattern(tags or DEFAULT_TAG_PATTERN),
            notice=notice,
        )
    except SonifyParameterError as exc:  # a bad value: exit 2, as click's own
        click.echo(f"sonify: error: {exc.for_cli(CLI_NAMES)}", err=True)
        ctx.exit(2)
    click.echo(f"sonify serve: {server.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"sonify serve: stopped after {server.steps} steps", err=True)
    finally:
        server.close()
