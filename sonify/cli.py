"""The ``sonify`` command: a thin layer over the library.

Errors are printed as one line (``sonify: error: ...``) with exit status 1,
warnings as ``sonify: warning: ...``; no tracebacks for bad input.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._choices import DATASETS, OPTIMIZERS
from ._errors import SonifyError
from ._version import __version__
from .mapping import PRESETS, SCALES
from .normfile import log_paths
from .output import SAMPLE_FORMATS, check_audio_path
from .rendering import check_render_path, render
from .sound import SoundSettings
from .sources import load_norms
from .stats import RunStats
from .stream import DEFAULT_LATENCY
from .synthesize import MODES


class _Finite(click.FloatRange):
    """A finite number within a range: NaN and infinity are refused at the boundary."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx) if not isinstance(value, float) or math.isfinite(value) else value
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a number such as {self._example()}", param, ctx)
        return number

    def _example(self) -> str:
        return f"{self.min:g}" if self.min is not None else "1"


class _NormRange(click.ParamType):
    """``LOW:HIGH`` (two positive finite norms, LOW < HIGH) or ``auto``."""

    name = "LOW:HIGH|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value == "auto" or isinstance(value, tuple):
            return value
        try:
            low, high = (float(part) for part in str(value).split(":"))
        except ValueError:
            self.fail(f"{value!r} is not understood; give LOW:HIGH (e.g. 1e-3:10) or auto", param, ctx)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            self.fail(f"{value!r}: give two finite norms with 0 < LOW < HIGH (e.g. 1e-3:10)", param, ctx)
        return low, high


class _Duration(click.ParamType):
    """Seconds from ``90``, ``60s``, ``2m``, ``1.5h`` or ``1m30s``."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, float):
            return value
        parts = re.fullmatch(
            r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(value)
        )
        if not str(value).strip() or parts is None or not any(parts.groups()):
            self.fail(f"{value!r} is not understood; give e.g. 60s, 2m, 1m30s or a number of seconds", param, ctx)
        hours, minutes, seconds = (float(x) if x else 0.0 for x in parts.groups())
        total = 3600 * hours + 60 * minutes + seconds
        if not (math.isfinite(total) and total > 0):
            self.fail(f"{value!r} is not a positive length of time; give e.g. 60s", param, ctx)
        return total


class _TorchDevice(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``...: a device that can hold the model's tensors."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value == "auto":
            return value  # resolved when training starts (importing torch only then)
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            self.fail(f"{value!r} is not a torch device; use auto, cpu, cuda or cuda:N", param, ctx)
        if device.type in ("meta", "lazy"):
            self.fail(f"{value!r} holds no data, so nothing can be trained there; use auto, cpu or cuda", param, ctx)
        try:
            torch.empty(1, device=device).add_(1).cpu()
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.fail(f"{value!r} is not usable here ({reason}); use auto or cpu", param, ctx)
        return str(device)


#: Python parameter names in library messages, as this command line's options.
_CLI_NAMES = {
    "out": "-o/--out",
    "overwrite": "--overwrite",
    "drop_incomplete": "--drop-incomplete",
    "output_device": "--device",
    "torch_device": "--torch-device",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "momentum": "--momentum",
    "seed": "--seed",
    "steps": "--steps",
    "ab": "--ab",
    "stereo": "--stereo",
    "figure": "--no-figure",
    "dataset": "--dataset ",
    "mapping": "--map ",
    "norm_range": "--norm-range ",
    "wait": "--wait",
    "tags": "--tags ",
}


def _sound_options(command: Callable) -> Callable:
    """Options shared by every command that makes sound."""
    options = [
        click.option(
            "--map",
            "mapping",
            type=click.Choice(list(PRESETS)),
            default="log",
            show_default=True,
            help="Norm-to-pitch mapping: log (orders of magnitude -> intervals) or linear (200 + 100 x norm Hz, the 2019 reference).",
        ),
        click.option(
            "--norm-range",
            type=_NormRange(),
            default=None,
            help="Norms at the bottom and top of the log map's range [default: 1e-4:1e4]; auto fits the run.",
        ),
        click.option("--scale", type=click.Choice(list(SCALES)), default=None, help="Snap pitches to a musical scale."),
        click.option(
            "--tone-ms",
            type=_Finite(min=1.0, max=10000.0),
            default=10.0,
            show_default=True,
            help="Length of each tone.",
        ),
        click.option(
            "--gap-ms",
            type=_Finite(min=0.0, max=60000.0),
            default=None,
            help="Silence after each step [default: two tones].",
        ),
        click.option(
            "--amplitude",
            type=_Finite(0.0, 0.5, min_open=True),
            default=0.1,
            show_default=True,
            help="Peak amplitude of a tone.",
        ),
        click.option(
            "--sample-rate",
            type=click.IntRange(8000, 768000),
            default=44100,
            show_default=True,
            help="Samples per second.",
        ),
        click.option(
            "--mode",
            type=click.Choice(list(MODES)),
            default="sequence",
            show_default=True,
            help="sequence: one tone per layer in turn (the reference); chord: all layers at once.",
        ),
        click.option("--stereo", is_flag=True, help="Spread the layers from left to right across the stereo field."),
        click.option(
            "--loudness",
            type=click.Choice(["iso226", "flat"]),
            default="iso226",
            show_default=True,
            help="iso226: every pitch equally loud (ISO 226:2023 contour at 60 phon); flat: one amplitude for all.",
        ),
        click.option(
            "--spike-factor",
            type=_Finite(0.0, 1e12),
            default=10.0,
            show_default=True,
            help="A norm this many times its layer's running median sounds accented (a spike); 0 turns it off.",
        ),
        click.option(
            "--spike-window",
            type=click.IntRange(10, 100_000),
            default=50,
            show_default=True,
            help="Steps of each layer's history that the running median looks back over.",
        ),
        click.option(
            "--format",
            "sample_format",
            type=click.Choice(list(SAMPLE_FORMATS)),
            default="float",
            show_default=True,
            help="Sample format: 32-bit float WAV, or 16/24-bit PCM.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _output_options(out_help: str) -> Callable:
    """``-o/--out`` and ``--no-progress``, shared by the commands that write audio."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--no-progress", is_flag=True, help="Hide the progress bar.")(command)
        command = click.option(
            "--overwrite", is_flag=True, help="Replace existing files of that name (otherwise they are an error)."
        )(command)
        out = click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help=out_help)
        return out(command)

    return decorate


def _live_options(command: Callable) -> Callable:
    """``--device`` and ``--latency``, shared by the commands that play sound."""
    command = click.option(
        "--latency",
        type=_Finite(0.005, 2.0),
        default=DEFAULT_LATENCY,
        show_default=True,
        help="Seconds of buffering asked of the sound card (raise it if the summary reports underruns).",
    )(command)
    return click.option(
        "--device",
        "output_device",
        metavar="NAME|INDEX",
        default=None,
        help="Output device for live sound [default: the system's default]; see `sonify devices`.",
    )(command)


def _training_options(command: Callable) -> Callable:
    """What every command that trains the reference CNN accepts (``train``, ``compare``)."""
    options = [
        click.option(
            "--steps",
            type=click.IntRange(1, 10**9),
            default=200,
            show_default=True,
            help="Optimizer steps per run.",
        ),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True),
        click.option(
            "--dataset",
            type=click.Choice(list(DATASETS)),
            default="auto",
            show_default=True,
            help="auto: MNIST if it loads or downloads, else scikit-learn's digits.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where MNIST is stored [default: $SONIFY_DATA or ~/.cache/sonify].",
        ),
        click.option(
            "--torch-device",
            type=_TorchDevice(),
            default="auto",
            show_default=True,
            help="Where to train: auto, cpu, cuda, cuda:1, ...",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _duration_options(command: Callable) -> Callable:
    """``--duration`` and ``--combine``: fitting long runs into a given time."""
    command = click.option(
        "--combine",
        type=click.Choice(["mean", "max"]),
        default="mean",
        show_default=True,
        help="How --duration combines the norms of a window.",
    )(command)
    return click.option(
        "--duration",
        type=_Duration(),
        default=None,
        help="Fit each run into TIME (e.g. 60s, 2m, 90) by combining consecutive steps; NaN/Inf in a window still sounds.",
    )(command)


def _sound_settings(
    mapping: str,
    norm_range: tuple[float, float] | str | None,
    scale: str | None,
    tone_ms: float,
    gap_ms: float | None,
    amplitude: float,
    sample_rate: int,
    sample_format: str,
    mode: str,
    stereo: bool,
    spike_factor: float,
    spike_window: int,
    loudness: str,
) -> SoundSettings:
    if 0 < spike_factor <= 1:
        raise click.BadParameter(
            f"{spike_factor:g} would call every norm a spike; give a factor above 1, or 0 to turn spikes off",
            param_hint="'--spike-factor'",
        )
    return SoundSettings(
        mapping=mapping,
        norm_range=norm_range,
        scale=scale,
        sample_rate=sample_rate,
        tone_duration=tone_ms / 1000.0,
        gap=None if gap_ms is None else gap_ms / 1000.0,
        amplitude=amplitude,
        sample_format=sample_format,
        mode=mode,
        stereo=stereo,
        spike_factor=spike_factor,
        spike_window=spike_window,
        loudness=loudness,
    )


def _format_summary(stats: RunStats, files: list[Path], title: str, extra: dict[str, str] | None = None) -> str:
    lines = [title, f"  steps: {stats.steps}"]
    for key, value in (extra or {}).items():
        lines.append(f"  {key}: {value}")
    if stats.first_spike_step is None:
        lines.append("  spikes: none")
    else:
        factor = f", {stats.first_spike_factor:.3g}x its running median" if stats.first_spike_factor else ""
        lines.append(
            f"  spikes: {stats.spike_steps} steps, first at step {stats.first_spike_step} "
            f"({', '.join(stats.first_spike_layers)}{factor}); they sound accented"
        )
    if stats.first_nonfinite_step is None:
        lines.append("  NaN/Inf: none")
    else:
        lines.append(
            f"  NaN/Inf: {stats.nonfinite_steps} steps, first at step {stats.first_nonfinite_step} "
            f"({', '.join(stats.first_nonfinite_layers)}); they sound as the alarm"
        )
    width = max(len(name) for name in stats.layer_names)
    lines.append("  gradient norm range per layer:")
    for name, span in stats.ranges().items():
        text = f"{span[0]:.4g} .. {span[1]:.4g}" if span else "no finite norm"
        gaps = stats.missing_counts[stats.layer_names.index(name)]
        lines.append(f"    {name:<{width}}  {text}" + (f"  (no gradient at {gaps} steps: rests)" if gaps else ""))
    lines.append("  files:" if files else "  files: none (--no-save)")
    lines.extend(f"    {path}" for path in files)
    return "\n".join(lines)


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
            click.echo(f"sonify: error: {exc.for_cli(_CLI_NAMES)}", err=True)
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


@main.command()
@click.option(
    "--optimizer",
    type=click.Choice(list(OPTIMIZERS)),
    default="sgd",
    show_default=True,
    help="Torch optimizer.",
)
@click.option("--lr", type=_Finite(0.0, 1e38, min_open=True), default=0.01, show_default=True, help="Learning rate.")
@click.option(
    "--momentum",
    type=_Finite(0.0, 1e6),
    default=0.5,
    show_default=True,
    help="Momentum (sgd and rmsprop only).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True)
@_training_options
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
    type=_Duration(),
    default="15m",
    show_default=True,
    help="Most sound the WAV holds; a longer run is condensed into it at the end (the norm log keeps every step).",
)
@click.option("--full-audio", is_flag=True, help="Keep every step in the WAV, however long the run (no --max-audio).")
@_live_options
@_output_options("Audio file [default: audio_out/<name from the settings>.wav]; the norm log goes beside it.")
@_sound_options
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
    from .experiment import ExperimentConfig, run_experiment

    if full_audio and ctx.get_parameter_source("max_audio") == click.core.ParameterSource.COMMANDLINE:
        raise SonifyError("--full-audio keeps every step and --max-audio bounds them; give one of them")

    if ctx.get_parameter_source("momentum") == click.core.ParameterSource.COMMANDLINE and not OPTIMIZERS[optimizer][1]:
        raise SonifyError(f"--momentum does not apply to {optimizer}; drop it or use sgd/rmsprop")
    for flag, given in (("--pace", pace), ("--no-save", no_save), ("--device", output_device is not None)):
        if given and not live:
            raise SonifyError(f"{flag} only applies to live sound; add --live")
    sound = _sound_settings(**sound_options)
    config = ExperimentConfig(
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        steps=steps,
        seed=seed,
        dataset=dataset,
        params=params,
        device=_pick_device(torch_device),
        data_dir=data_dir,
    )
    auto_range = sound.norm_range == "auto" and not no_save
    if out is not None:  # checked now, not after training: nothing is created for a bad path
        check_audio_path(out, overwrite=overwrite)
    # A fitted range needs the whole run: record the log, then render once at the end.
    recording_sound = SoundSettings(**{**sound.__dict__, "norm_range": None}) if auto_range else sound
    terminated = _terminate_gracefully()
    result = run_experiment(
        config,
        out=out,
        sound=recording_sound,
        audio=not auto_range and not no_save,
        log=not no_save,
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
    if auto_range and "norm log" not in son.failures:
        render(son.log_path, son.audio_path, sound=sound, overwrite=overwrite, drop_incomplete=True)
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
    click.echo(_format_summary(son.stats, files, title, extra))
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


def _pick_device(device: str) -> str:
    """The torch device to train on (``auto``: the GPU if there is one)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--follow", is_flag=True, help="Follow a log that is still being written (- for standard input).")
@click.option(
    "--wait",
    type=_Finite(0.0, 1e9),
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
@_live_options
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_sound_options
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
    from .playback import play as play_source

    sound = _sound_settings(**sound_options)
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
    from .follow import follow
    from .importers import DEFAULT_TAG_PATTERN, check_tag_pattern

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


@main.command()
def devices() -> None:
    """List the audio output devices; * marks the default.

    Use the index or (part of) the name with --device.
    """
    from .stream import output_devices

    for device in output_devices(require=True):
        mark = "*" if device["default"] else " "
        click.echo(
            f"{mark} {device['index']} {device['name']}, {device['hostapi_name']} "
            f"({device['max_output_channels']} out, {device['default_samplerate']:g} Hz)"
        )


@main.command(name="compare")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--optimizer", "optimizers", multiple=True, type=click.Choice(list(OPTIMIZERS)), help="Repeat for several."
)
@click.option(
    "--lr", "lrs", multiple=True, type=_Finite(0.0, 1e38, min_open=True), help="Learning rate; repeat for several."
)
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1), help="Repeat for several.")
@_training_options
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for everything [default: audio_out/compare-<date>-<time>].",
)
@_duration_options
@click.option("--ab", is_flag=True, help="With exactly two runs: listen-ab.wav, run A left and run B right.")
@click.option("--no-figure", is_flag=True, help="Skip compare.png (which needs matplotlib).")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier comparison in the folder.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_sound_options
def compare_command(
    logs: tuple[Path, ...],
    optimizers: tuple[str, ...],
    lrs: tuple[float, ...],
    batch_sizes: tuple[int, ...],
    steps: int,
    seed: int,
    dataset: str,
    data_dir: Path | None,
    torch_device: str,
    out_dir: Path | None,
    duration: float | None,
    combine: str,
    ab: bool,
    no_figure: bool,
    overwrite: bool,
    no_progress: bool,
    **sound_options: Any,
) -> None:
    """Compare runs by ear and by eye: a grid of training runs, or LOGS recorded before.

    \b
    Without LOGS it trains the grid of --optimizer x --lr x --batch-size
    (default: the five runs of the 2019 experiment) and writes, in one folder,
    each run's WAV and log, listen.wav (the runs in turn, run k introduced by
    k short noise bursts), compare.png (norm curves and spectrograms) and
    summary.csv / summary.md.
    """
    import datetime as dt

    from .comparison import REFERENCE_GRID, check_figure_support, check_out_dir, compare

    sound = _sound_settings(**sound_options)
    # Checked now, not after training every run.
    if not no_figure:
        check_figure_support()
    out_dir = out_dir or Path("audio_out") / f"compare-{dt.datetime.now():%Y%m%d-%H%M%S}"
    check_out_dir(out_dir, overwrite=overwrite)
    if logs and (optimizers or lrs or batch_sizes):
        raise SonifyError("give norm logs to compare, or grid options (--optimizer/--lr/--batch-size), not both")
    if logs:
        runs, audio_files = [load_norms(path) for path in logs], None  # type: ignore[assignment]
        for run in runs:
            if run.running:
                click.echo(
                    f"sonify: {run.path} is still being written (or its run was killed): its {len(run)} "
                    "complete steps so far are compared",
                    err=True,
                )
    else:
        grid = (
            [(o, lr, b) for o in optimizers or ["sgd"] for lr in lrs or [0.01] for b in batch_sizes or [10]]
            if optimizers or lrs or batch_sizes
            else list(REFERENCE_GRID)
        )
        runs, audio_files = _train_grid(grid, steps, seed, dataset, data_dir, torch_device, sound, out_dir, no_progress)
    result = compare(
        runs,
        out_dir,
        sound=sound,
        duration=duration,
        ab=ab,
        figure=not no_figure,
        audio_files=audio_files,
        overwrite=overwrite,
    )
    click.echo(result.table())
    click.echo("files:")
    for path in [result.listening, result.figure, result.table_csv, result.table_md]:
        if path is not None:
            click.echo(f"  {path}")


def _train_grid(
    grid: list[tuple[str, float, int]],
    steps: int,
    seed: int,
    dataset: str,
    data_dir: Path | None,
    torch_device: str,
    sound: SoundSettings,
    out_dir: Path,
    no_progress: bool,
) -> tuple[list, list[Path | None]]:
    from ._progress import progress_bar
    from .experiment import ExperimentConfig, run_experiment

    device = _pick_device(torch_device)
    recording = SoundSettings(**{**sound.__dict__, "norm_range": None}) if sound.norm_range == "auto" else sound
    logs: list = []
    audio_files: list[Path | None] = []
    bar = progress_bar(len(grid) * steps, "compare", enabled=not no_progress)
    try:
        for optimizer, lr, batch_size in grid:
            config = ExperimentConfig(
                optimizer=optimizer,
                lr=lr,
                batch_size=batch_size,
                steps=steps,
                seed=seed,
                dataset=dataset,
                device=device,
                data_dir=data_dir,
            )
            bar.set_postfix_str(f"{optimizer} lr={lr:g} bs={batch_size}")
            result = run_experiment(
                config,
                out=None,
                out_dir=out_dir,
                sound=recording,
                audio=recording is sound,
                progress=False,
                notice=lambda text: click.echo(f"sonify: {text}", err=True),
                on_step=lambda: bar.update(1),
            )
            if result.interrupted:
                raise KeyboardInterrupt
            logs.append(load_norms(result.sonifier.log_path))
            audio_files.append(result.sonifier.audio_path if recording is sound else None)
    finally:
        bar.close()
    return logs, audio_files


@main.command(name="render")
@click.argument("log", type=click.Path(path_type=Path))
@_output_options("Audio file (.wav or .flac) or MIDI file (.mid) [default: the log's name with .wav].")
@click.option("--drop-incomplete", is_flag=True, help="Ignore a cut-off last line in the log.")
@_duration_options
@_sound_options
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
    sound = _sound_settings(**sound_options)
    out = out or _default_render_path(log)
    check_render_path(out, overwrite=overwrite)  # before reading a possibly long log
    norm_log = load_norms(log, drop_incomplete=drop_incomplete)
    result = render(
        norm_log, out, sound=sound, progress=not no_progress, duration=duration, combine=combine, overwrite=overwrite
    )
    click.echo(
        _format_summary(
            norm_log.stats(sound.spike_factor, sound.spike_window),
            [result.path],
            "sonify render: done",
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
    if source.is_dir():
        return source.parent / f"{source.resolve().name}.wav"
    if "tfevents" in source.name:
        return source.parent / f"{source.resolve().parent.name}.wav"
    csv_path = log_paths(source)[0]
    return csv_path.with_name(csv_path.name.removesuffix(".norms.csv") + ".wav")


if __name__ == "__main__":  # pragma: no cover
    main()
