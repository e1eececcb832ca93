"""What the commands share: option types, option groups, sound settings from options, the torch device."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .._choices import DATASETS, SAMPLE_FORMATS
from .._errors import one_line
from ..mapping import PRESETS, SCALES
from ..sound import SoundSettings
from ..stream import DEFAULT_LATENCY
from ..synthesize import MODES


class Finite(click.FloatRange):
    """A finite number within a range: NaN and infinity are refused at the boundary."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx) if not isinstance(value, float) or math.isfinite(value) else value
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a number such as {self._example()}", param, ctx)
        return number

    def _example(self) -> str:
        return f"{self.min:g}" if self.min is not None else "1"


class NormRange(click.ParamType):
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


class Duration(click.ParamType):
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


class TorchDevice(click.ParamType):
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
            self.fail(f"{value!r} is not usable here ({one_line(exc)}); use auto or cpu", param, ctx)
        return str(device)


#: Python parameter names in library messages, as this command line's options.
CLI_NAMES = {
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


def sound_options(command: Callable) -> Callable:
    """Options shared by every command that makes sound."""
    options = [
        click.option(
            "--map",
            "mapping",
            type=click.Choice(list(PRESETS)),
            default="log",
            show_default=True,
            help="Norm-to-pitch mapping: log (orders of magnitude -> intervals), relative (a home pitch per layer: "
            "an octave per factor of ten from the median of its first 20 norms; hear drift) or linear "
            "(200 + 100 x norm Hz, the 2019 reference).",
        ),
        click.option(
            "--norm-range",
            type=NormRange(),
            default=None,
            help="Norms at the bottom and top of the log map's range [default: 1e-4:1e4]; auto fits the run.",
        ),
        click.option("--scale", type=click.Choice(list(SCALES)), default=None, help="Snap pitches to a musical scale."),
        click.option(
            "--tone-ms",
            type=Finite(min=1.0, max=10000.0),
            default=10.0,
            show_default=True,
            help="Length of each tone.",
        ),
        click.option(
            "--gap-ms",
            type=Finite(min=0.0, max=60000.0),
            default=None,
            help="Silence after each step [default: two tones].",
        ),
        click.option(
            "--amplitude",
            type=Finite(0.0, 0.5, min_open=True),
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
            type=Finite(0.0, 1e12),
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


def output_options(out_help: str) -> Callable:
    """``-o/--out`` and ``--no-progress``, shared by the commands that write audio."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--no-progress", is_flag=True, help="Hide the progress bar.")(command)
        command = click.option(
            "--overwrite", is_flag=True, help="Replace existing files of that name (otherwise they are an error)."
        )(command)
        out = click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help=out_help)
        return out(command)

    return decorate


def live_options(command: Callable) -> Callable:
    """``--device`` and ``--latency``, shared by the commands that play sound."""
    command = click.option(
        "--latency",
        type=Finite(0.005, 2.0),
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


def training_options(command: Callable) -> Callable:
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
            type=TorchDevice(),
            default="auto",
            show_default=True,
            help="Where to train: auto, cpu, cuda, cuda:1, ...",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def duration_options(command: Callable) -> Callable:
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
        type=Duration(),
        default=None,
        help="Fit each run into TIME (e.g. 60s, 2m, 90) by combining consecutive steps; NaN/Inf in a window still sounds.",
    )(command)


def sound_settings(
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


def pick_device(device: str) -> str:
    """The torch device to train on (``auto``: the GPU if there is one)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
