"""``sonify train``: the reference CNN with sonify attached."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from .._choices import OPTIMIZERS
from .._errors import SonifyError
from ..output import check_audio_path
from ._options import (
    Duration,
    Finite,
    live_options,
    output_options,
    pick_device,
    sound_options,
    sound_settings,
    training_options,
)


@click.command()
@click.option(
    "--optimizer",
    type=click.Choice(list(OPTIMIZERS)),
    default="sgd",
    show_default=True,
    help="Torch optimizer.",
)
@click.option("--lr", type=Finite(0.0, 1e38, min_open=True), default=0.01, show_default=True, help="Learning rate.")
@click.option(
    "--momentum",
    type=Finite(0.0, 1e6),
    default=0.5,
    show_default=True,
    help="Momentum (sgd and rmsprop only).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True)
@training_options
@click.option(
    "--params",
    type=click.Choice(["weight", "all"]),
    default="weight",
    show_default=True,
    help="Norm of each layer's weight gradient (the reference) or of all its parameters.",
)
@click.option("--live", is_flag=True, help="Play the sound while training runs (training never waits for it).")
@click.option("--pace", is_flag=True, help="With --live: play every step, making training wait for the sound.")
@click.option("--no-save", is_flag=True, help="With --live: write no WAV and no norm log, only listen.")
@click.option(
    "--max-audio",
    type=Duration(),
    default="15m",
    show_default=True,
    help="Most sound the WAV holds; a longer run is condensed into it at the end (the norm log keeps every step).",
)
@click.option("--full-audio", is_flag=True, help="Keep every step in the WAV, however long the run (no --max-audio).")
@live_options
@output_options("Audio file [default: audio_out/<name from the settings>.wav]; the norm log goes beside it.")
@sound_options
@click.pass_context
def train(
    ctx: click.Context,
    optimizer: str,
    lr: float,
    momentum: float,
    batch_size: int,
    steps: int,
    seed: int,
    dataset: str,
    data_dir: Path | None,
    params: str,
    torch_device: str,
    live: bool,
    pace: bool,
    no_save: bool,
    max_audio: float,
    full_audio: bool,
    output_device: str | None,
    latency: float,
    out: Path | None,
    overwrite: bool,
    no_progress: bool,
    **sound_options: Any,
) -> None:
    """Train the reference CNN on digits and record how its gradients sound.

    With --live you hear it as it trains; the WAV and norm log are written
    either way (unless --no-save).
    """
    from ..experiment import ExperimentConfig, run_experiment

    if full_audio and ctx.get_parameter_source("max_audio") == click.core.ParameterSource.COMMANDLINE:
        raise SonifyError("--full-audio keeps every step and --max-audio bounds them; give one of them")

    if ctx.get_parameter_source("momentum") == click.core.ParameterSource.COMMANDLINE and not OPTIMIZERS[optimizer][1]:
        raise SonifyError(f"--momentum does not apply to {optimizer}; drop it or use sgd/rmsprop")
    for flag, given in (("--pace", pace), ("--no-save", no_save), ("--device", output_device is not None)):
        if given and not live:
            raise SonifyError(f"{flag} only applies to live sound; add --live")
    sound = sound_settings(**sound_options)
    config = ExperimentConfig(
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        steps=steps,
        seed=seed,
        dataset=dataset,
        params=params,
        device=pick_device(torch_device),
        data_dir=data_dir,
    )
    if out is not None:  # checked now, not after training: nothing is created for a bad path
        check_audio_path(out, overwrite=overwrite)
    terminated = _terminate_gracefully()
    result = run_experiment(
        config,
        out=out,
        sound=sound,
        audio=not no_save,
        norm_log=not no_save,
        live=live,
        output_device=output_device,
        pace=pace,
        latency=latency,
        overwrite=overwrite,
        max_audio_seconds=None if full_audio else max_audio,
        progress=not no_progress,
        notice=lambda text: click.echo(f"sonify: {text}", err=True),
    )
    son = result.sonifier
    momentum_text = f" momentum={config.momentum:g}" if config.momentum is not None else ""
    title = "sonify train: interrupted" if result.interrupted else "sonify train: done"
    extra = {
        "run": f"{optimizer} lr={lr:g}{momentum_text} batch={batch_size} seed={seed} on {config.device}",
        "data": result.dataset_description,
        "final loss": f"{result.final_loss:.4g}",
    }
    if son.live_report is not None:
        extra["live"] = son.live_report.describe()
    if son.audio_condensed is not None:
        condensed = son.audio_condensed
        extra["audio"] = (
            f"condensed to {condensed['seconds']:.0f} s ({condensed['steps_per_tone']} steps per tone); "
            f"the full sound: sonify render {son.log_path}"
        )
    for part, reason in son.failures.items():
        extra[f"lost ({part})"] = reason
    files = [] if no_save else [son.audio_path, son.log_path, son.meta_path]
    click.echo(son.stats.summary(title, files, extra, no_files="none (--no-save)"))
    if result.interrupted:
        ctx.exit(143 if terminated.is_set() else 130)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``), handled like Ctrl-C: files closed, summary printed, exit status 143."""


def _terminate_gracefully() -> threading.Event:
    """Make SIGTERM stop training as Ctrl-C does; the event tells that it came."""
    came = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        came.set()
        raise _Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    return came
