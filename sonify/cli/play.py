"""``sonify play``: a recorded run, or one still being written (``--follow``), through the sound card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._errors import SonifyError
from ..sound import SoundSettings
from ._options import Finite, live_options, sound_options, sound_settings


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--follow", is_flag=True, help="Follow a log that is still being written (- for standard input).")
@click.option(
    "--wait",
    type=Finite(0.0, 1e9),
    default=None,
    help="With --follow: seconds to wait for the log to appear [default: for ever].",
)
@click.option(
    "--tags",
    metavar="REGEX",
    default=None,
    help="TensorBoard scalars that hold gradient norms (first group: the layer) [default: grad_norm/..., "
    "Lightning's grad_2.0_norm/..., the Trainer's grad_norm].",
)
@live_options
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@sound_options
@click.pass_context
def play(
    ctx: click.Context,
    source: Path,
    follow: bool,
    wait: float | None,
    tags: str | None,
    output_device: str | None,
    latency: float,
    no_progress: bool,
    **sound_options: Any,
) -> None:
    """Play a recorded run: SOURCE is a norm log (.norms.csv) or an audio file.

    A norm log is synthesized on the fly with the sound options below; an
    audio file is played as it is. Ctrl-C stops it.

    \b
    With --follow, SOURCE is a norm log that another process is still writing
    (or - for standard input), heard as it grows until Ctrl-C:
      ssh gpu-box tail -n +1 -F runs/x.norms.csv | sonify play --follow -
    """
    from ..playback import play as play_source

    sound = sound_settings(**sound_options)
    if wait is not None and not follow:
        raise SonifyError("--wait only applies to --follow; add --follow")
    if follow:
        _follow(ctx, source, sound, output_device, latency, wait, tags)
        return
    try:
        result = play_source(
            source, output_device=output_device, sound=sound, progress=not no_progress, latency=latency
        )
    except KeyboardInterrupt:
        click.echo("sonify play: stopped", err=True)
        ctx.exit(130)
    click.echo(
        f"sonify play: played {result.duration:.1f} s of {result.source} on {result.device!r}, {result.underruns} underruns"
    )


def _follow(
    ctx: click.Context,
    source: Path,
    sound: SoundSettings,
    output_device: str | None,
    latency: float,
    wait: float | None,
    tags: str | None,
) -> None:
    from ..follow import follow
    from ..importers import DEFAULT_TAG_PATTERN, check_tag_pattern

    def notice(text: str) -> None:
        click.echo(f"sonify: {text}", err=True)

    try:
        report = follow(
            source,
            output_device=output_device,
            sound=sound,
            latency=latency,
            wait=wait,
            tags=check_tag_pattern(tags or DEFAULT_TAG_PATTERN),
            notice=notice,
        )
    except KeyboardInterrupt as interrupt:  # the usual way to stop following a file
        interrupted = getattr(interrupt, "report", None)
        if interrupted is None:
            ctx.exit(130)
        report = interrupted
    click.echo(f"sonify play: {report.describe()}")
