"""``sonify render``: a recorded run to an audio or MIDI file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..normfile import log_paths
from ..rendering import check_render_path, render
from ..sources import SourceKind, load_norms, source_kind
from ._options import duration_options, output_options, sound_options, sound_settings


@click.command(name="render")
@click.argument("log", type=click.Path(path_type=Path))
@output_options("Audio file (.wav or .flac) or MIDI file (.mid) [default: the log's name with .wav].")
@click.option("--drop-incomplete", is_flag=True, help="Ignore a cut-off last line in the log.")
@duration_options
@sound_options
def render_command(
    log: Path,
    out: Path | None,
    overwrite: bool,
    drop_incomplete: bool,
    duration: float | None,
    combine: str,
    no_progress: bool,
    **sound_options: Any,
) -> None:
    """Render a recorded norm log (LOG: a .norms.csv, or TensorBoard logs) to audio, without training."""
    sound = sound_settings(**sound_options)
    out = out or _default_render_path(log)
    check_render_path(out, overwrite=overwrite)  # before reading a possibly long log
    norm_log = load_norms(log, drop_incomplete=drop_incomplete)
    result = render(
        norm_log, out, sound=sound, progress=not no_progress, duration=duration, combine=combine, overwrite=overwrite
    )
    click.echo(
        sound.stats(norm_log).summary(
            "sonify render: done",
            [result.path],
            {
                "log": str(norm_log.path or log)
                + (
                    " (still being written, or its run was killed: every complete step so far)"
                    if norm_log.running
                    else ""
                ),
                "audio": f"{result.duration:.1f} s, {sound.mapping} map"
                + (
                    f", {result.steps} steps combined into {result.windows} windows ({combine})"
                    if result.windows
                    else ""
                ),
            },
        )
    )


def _default_render_path(source: Path) -> Path:
    """``run.norms.csv`` -> ``run.wav``; a TensorBoard folder ``runs/x`` -> ``runs/x.wav``; its event file -> ``x.wav`` in it."""
    if source_kind(source) is SourceKind.TENSORBOARD:
        if source.is_dir():
            return source.parent / f"{source.resolve().name}.wav"
        return source.parent / f"{source.resolve().parent.name}.wav"
    csv_path = log_paths(source)[0]
    return csv_path.with_name(csv_path.name.removesuffix(".norms.csv") + ".wav")
