"""Compare runs by ear and by eye.

:func:`compare` takes norm logs (recorded by a grid of training runs, or
anywhere else) and writes into one folder:

* one WAV per run (rendered from its log, with the same sound settings);
* ``listen.wav``: the runs one after another, each introduced by a
  **marker**: ``k`` short noise bursts for run ``k`` (noise is neither a
  tone nor the alarm chord, so it cannot be mistaken for a norm); with
  ``ab=True`` and exactly two runs, ``listen-ab.wav`` instead plays them at
  once, run A on the left channel and run B on the right;
* ``compare.png``: per run, every layer's norm curve on a log scale with
  NaN/Inf steps and zeros marked, beside the spectrogram of the run's audio;
* ``summary.csv`` and ``summary.md``: per run, final loss, norm range per
  layer, first NaN/Inf step, dead layers, zero cells and cells off the map,
  where its segment starts in the listening file, and its files.

Runs that diverge are part of the comparison, not errors.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyError, SonifyParameterError
from ._files import check_new_file, write_new_file
from .norms import NormLog
from .output import AudioFileWriter
from .rendering import render
from .sound import SoundSettings

__all__ = [
    "REFERENCE_GRID",
    "CompareResult",
    "RunSummary",
    "check_figure_support",
    "check_out_dir",
    "compare",
    "comparison_figure",
    "marker",
]

#: The runs of the 2019 experiment: (optimizer, lr, batch size).
REFERENCE_GRID = (("sgd", 0.01, 10), ("sgd", 0.1, 10), ("sgd", 1.0, 10), ("sgd", 1.0, 256), ("adam", 0.01, 10))

_MARKER_BURST = 0.04  # seconds of noise per burst
_MARKER_PAUSE = 0.06  # silence between bursts
_AFTER_MARKER = 0.3  # silence between the marker and the run
_BETWEEN_RUNS = 0.7  # silence after a run


@dataclass(frozen=True)
class RunSummary:
    """One row of the comparison."""

    name: str
    steps: int
    final_loss: float | None
    ranges: dict[str, tuple[float, float] | None]
    first_nonfinite_step: int | None
    nonfinite_steps: int
    start: float  # seconds into the listening file where the run's sound begins
    audio: Path
    log: Path | None
    first_spike_step: int | None = None
    spike_steps: int = 0
    first_spike_factor: float | None = None
    first_spike_layers: tuple[str, ...] = ()
    #: Layers dead at the end (zero gradient for many steps in a row), with the step each died.
    dead_since: dict[str, int] | None = None
    #: Cells whose norm is exactly zero, above the map's top, below its bottom (all layers).
    zero_cells: int = 0
    above_cells: int = 0
    below_cells: int = 0


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` wrote."""

    runs: list[RunSummary]
    listening: Path
    figure: Path | None
    table_csv: Path
    table_md: Path

    def table(self) -> str:
        """The summary as a Markdown table."""
        return self.table_md.read_text()


def marker(index: int, sample_rate: int, amplitude: float = 0.1) -> np.ndarray:
    """``index + 1`` short bursts of faded noise, then silence: the sign of run ``index``."""
    rng = np.random.default_rng(index)
    burst_samples = round(_MARKER_BURST * sample_rate)
    fade = np.sin(np.linspace(0.0, math.pi, burst_samples)) ** 2
    pieces = []
    for _ in range(index + 1):
        pieces.append((amplitude * fade * rng.uniform(-1.0, 1.0, burst_samples)).astype(np.float32))
        pieces.append(np.zeros(round(_MARKER_PAUSE * sample_rate), np.float32))
    pieces.append(np.zeros(round(_AFTER_MARKER * sample_rate), np.float32))
    return np.concatenate(pieces)


def compare(
    logs: list[NormLog],
    out_dir: str | os.PathLike,
    *,
    names: list[str] | None = None,
    sound: SoundSettings | None = None,
    duration: float | None = None,
    ab: bool = False,
    figure: bool = True,
    audio_files: list[Path | None] | None = None,
    overwrite: bool = False,
) -> CompareResult:
    """Write the listening file, figure and summary of several runs.

    Parameters
    ----------
    logs : list of NormLog
        The runs, in the order they are heard.
    out_dir : str or PathLike
        Folder for everything written (created).
    names : list of str, optional
        Run names; default: the log file names.
    sound : SoundSettings, optional
        How the runs sound (the same for all, so they compare).
    duration : float, optional
        Fit each run into this many seconds (see :func:`sonify.render`).
    ab : bool
        With exactly two runs, also write ``listen-ab.wav``: A left, B right.
    figure : bool
        Draw ``compare.png`` (needs matplotlib: ``pip install 'sonify[plot]'``).
    audio_files : list of Path or None, optional
        Existing WAVs of the runs (from training) to use instead of rendering.
    overwrite : bool
        Replace files of an earlier comparison in ``out_dir``; otherwise
        they are an error (raised before anything is written).

    Returns
    -------
    CompareResult
    """
    if not logs:
        raise SonifyError("nothing to compare: give at least one norm log or run")
    if ab and len(logs) != 2:
        raise SonifyError(f"the A/B listening file needs exactly two runs, not {len(logs)}; drop {ab}True")
    sound = sound or SoundSettings()
    if sound.stereo:
        raise SonifyError("compare writes mono runs (A/B uses the two channels); drop {stereo}True")
    if figure:
        check_figure_support()
    out_dir = Path(out_dir)
    if names is not None and len(set(names)) != len(names):
        raise SonifyParameterError(f"run names must differ, so that each run has its own file; got {names}")
    names = names or _run_names(logs)
    suffix = "" if duration is None else f"-{duration:g}s"
    targets = []
    for index, name in enumerate(names):
        existing = audio_files[index] if audio_files else None
        targets.append(Path(existing) if existing is not None and duration is None else out_dir / f"{name}{suffix}.wav")
    check_out_dir(out_dir, overwrite=overwrite)
    for path in (t for t in targets if t not in (audio_files or [])):
        check_new_file(path, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for log, target in zip(logs, targets):
        if audio_files and target in audio_files:
            rendered.append(target)
        else:
            rendered.append(render(log, target, sound=sound, duration=duration, overwrite=overwrite).path)
    starts = _listening_file(rendered, out_dir / "listen.wav", sound.sample_rate, overwrite)
    if ab:
        _ab_file(rendered, out_dir / "listen-ab.wav", sound.sample_rate, overwrite)
    runs = [
        _summarise(log, name, start, audio, sound) for log, name, start, audio in zip(logs, names, starts, rendered)
    ]
    table_csv, table_md = _tables(runs, out_dir, overwrite)  # before the figure: the tables never depend on matplotlib
    picture = _figure(logs, names, rendered, out_dir / "compare.png", overwrite) if figure else None
    return CompareResult(runs, out_dir / ("listen-ab.wav" if ab else "listen.wav"), picture, table_csv, table_md)


def _run_names(logs: list[NormLog]) -> list[str]:
    """A distinct name per run: the log's file name, with its folders where two runs share one.

    ``A/run.norms.csv`` and ``B/run.norms.csv`` become ``A-run`` and ``B-run``
    (so neither run's WAV replaces the other's); any name still shared gets ``-2``, ``-3``...
    """

    def name(log: NormLog, index: int, folders: int) -> str:
        if log.path is None:
            return f"run{index + 1}"
        parts = [*log.path.resolve().parent.parts[1:][-folders:], log.path.name] if folders else [log.path.name]
        return "-".join(parts).removesuffix(".norms.csv").removesuffix(".csv")

    names = [name(log, index, 0) for index, log in enumerate(logs)]
    for folders in (1, 2, 3):
        shared = {n for n in names if names.count(n) > 1}
        if not shared:
            return names
        names = [name(log, i, folders) if n in shared else n for i, (log, n) in enumerate(zip(logs, names))]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return unique


#: The files a comparison writes into its folder besides the runs' own.
OWN_FILES = ("listen.wav", "listen-ab.wav", "summary.csv", "summary.md", "compare.png")


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse a folder that holds an earlier comparison (unless ``overwrite``), before anything is written."""
    for name in OWN_FILES:
        check_new_file(Path(out_dir) / name, overwrite=overwrite)


def check_figure_support() -> None:
    """Raise the one-line error for a missing matplotlib now, before any run is trained or written."""
    from ._optional import require

    require("matplotlib", extra="plot", purpose="the comparison figure (skip it with {figure}False)")


def _listening_file(paths: list[Path], out: Path, sample_rate: int, overwrite: bool = False) -> list[float]:
    """Concatenate the runs with their markers, block by block; returns where each run starts (s)."""
    import soundfile

    starts = []
    with AudioFileWriter(out, sample_rate, overwrite=overwrite) as writer:
        for index, path in enumerate(paths):
            writer.write(marker(index, sample_rate))
            starts.append(writer.duration)
            with soundfile.SoundFile(path) as run:
                if run.samplerate != sample_rate or run.channels != 1:
                    raise SonifyError(f"{path}: expected mono audio at {sample_rate} Hz to compare")
                for block in run.blocks(blocksize=1 << 16, dtype="float32"):
                    writer.write(block)
            writer.write(np.zeros(round(_BETWEEN_RUNS * sample_rate), np.float32))
    return starts


def _ab_file(paths: list[Path], out: Path, sample_rate: int, overwrite: bool = False) -> None:
    import soundfile

    with (
        soundfile.SoundFile(paths[0]) as a,
        soundfile.SoundFile(paths[1]) as b,
        AudioFileWriter(out, sample_rate, channels=2, overwrite=overwrite) as writer,
    ):
        while True:
            left, right = a.read(1 << 16, dtype="float32"), b.read(1 << 16, dtype="float32")
            if not len(left) and not len(right):
                break
            block = np.zeros((max(len(left), len(right)), 2), np.float32)
            block[: len(left), 0], block[: len(right), 1] = left, right
            writer.write(block)


def _summarise(log: NormLog, name: str, start: float, audio: Path, sound: SoundSettings) -> RunSummary:
    stats = sound.stats(log)
    loss = log.metadata.get("final_loss")
    return RunSummary(
        name=name,
        steps=len(log),
        final_loss=float(loss) if isinstance(loss, (int, float)) else None,
        ranges=stats.ranges(),
        first_nonfinite_step=stats.first_nonfinite_step,
        nonfinite_steps=stats.nonfinite_steps,
        start=start,
        audio=audio,
        log=log.path,
        first_spike_step=stats.first_spike_step,
        spike_steps=stats.spike_steps,
        first_spike_factor=stats.first_spike_factor,
        first_spike_layers=stats.first_spike_layers,
        dead_since=dict(stats.dead_since),
        zero_cells=int(stats.zero_counts.sum()),
        above_cells=int(stats.above_counts.sum()),
        below_cells=int(stats.below_counts.sum()),
    )


def _tables(runs: list[RunSummary], out_dir: Path, overwrite: bool) -> tuple[Path, Path]:
    layers = list(dict.fromkeys(layer for run in runs for layer in run.ranges))
    header = ["run", "steps", "final loss", "first spike step (layers, x median)", "spike steps"]
    header += ["first NaN/Inf step", "NaN/Inf steps", "dead layers (since step)", "zero cells"]
    header += ["cells above / below the map", "starts at (s)"]
    header += [f"{layer} norm range" for layer in layers] + ["audio", "log"]
    rows = []
    for run in runs:
        cells = [
            run.name,
            str(run.steps),
            "" if run.final_loss is None else f"{run.final_loss:.4g}",
            ""
            if run.first_spike_step is None
            else f"{run.first_spike_step} ({' '.join(run.first_spike_layers)}, {run.first_spike_factor or 0:.3g}x)",
            str(run.spike_steps),
            "" if run.first_nonfinite_step is None else str(run.first_nonfinite_step),
            str(run.nonfinite_steps),
            " ".join(f"{name} ({step})" for name, step in (run.dead_since or {}).items()),
            str(run.zero_cells),
            f"{run.above_cells} / {run.below_cells}",
            f"{run.start:.2f}",
        ]
        for layer in layers:
            span = run.ranges.get(layer)
            cells.append(f"{span[0]:.3g} .. {span[1]:.3g}" if span else "")
        rows.append([*cells, str(run.audio), str(run.log or "")])
    table_csv = out_dir / "summary.csv"
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    write_new_file(table_csv, buffer.getvalue().encode(), overwrite=overwrite)
    table_md = out_dir / "summary.md"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    write_new_file(table_md, ("\n".join(lines) + "\n").encode(), overwrite=overwrite)
    return table_csv, table_md


def _figure(logs: list[NormLog], names: list[str], audio: list[Path], out: Path, overwrite: bool) -> Path:
    import matplotlib.pyplot as plt

    fig = comparison_figure(logs, names, audio)
    image = io.BytesIO()
    fig.savefig(image, dpi=100, format="png")
    write_new_file(out, image.getvalue(), overwrite=overwrite)
    plt.close(fig)
    return out


def comparison_figure(logs: list[NormLog], names: list[str], audio: list[Path]) -> Any:
    """The comparison as a matplotlib figure: per run, norm curves (log scale) and a spectrogram.

    Row ``i`` holds run ``i``: on the left every layer's norm per step, with
    red lines at NaN/Inf steps and a tick along the bottom, in the layer's
    colour, at each step where its norm is exactly zero (a log scale has no
    place for zero: without the tick a dead layer would just vanish); on
    the right the spectrogram of its audio.
    """
    from ._optional import require

    matplotlib = require("matplotlib", extra="plot", purpose="the comparison figure")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile

    fig, axes = plt.subplots(len(logs), 2, figsize=(13, 2.6 * len(logs) + 0.6), squeeze=False)
    for row, (log, name, path) in enumerate(zip(logs, names, audio)):
        curves, spectrum = axes[row]
        finite = np.where(np.isfinite(log.norms) & (log.norms > 0), log.norms, np.nan)
        zero = (log.norms == 0) & ~log.missing
        for column, layer in enumerate(log.layer_names):
            (line,) = curves.plot(log.steps, finite[:, column], label=layer, linewidth=1)
            if zero[:, column].any():  # zeros: ticks along the bottom, one row per layer
                height = 0.03 + 0.035 * column
                at = log.steps[zero[:, column]]
                curves.scatter(at, np.full(len(at), height), transform=curves.get_xaxis_transform(),
                               marker="|", s=30, color=line.get_color(), linewidths=1, zorder=3)  # fmt: skip
        if zero.any():
            curves.scatter([], [], marker="|", color="gray", label="zero (dead)")
            # The ticks do not count towards the x limits (their y is the axes'): the whole run does.
            span = max(1, int(log.steps[-1] - log.steps[0]))
            curves.set_xlim(log.steps[0] - 0.05 * span, log.steps[-1] + 0.05 * span)
        spikes = log.spikes()[0]
        spiking = np.argwhere(spikes)
        if len(spiking):
            curves.scatter(
                log.steps[spiking[:, 0]], log.norms[spikes], marker="^", color="orange", s=18, zorder=3, label="spike"
            )
        bad = log.steps[log.nonfinite.any(axis=1)]
        if len(bad):
            curves.vlines(bad, 0, 1, transform=curves.get_xaxis_transform(), colors="red", alpha=0.25, linewidth=1)
            curves.plot([], [], color="red", alpha=0.5, label="NaN/Inf")
        curves.set_yscale("log")
        curves.set_title(name, fontsize=9, loc="left")
        curves.set_xlabel("step")
        curves.set_ylabel("gradient norm")
        curves.legend(fontsize=7, loc="upper left", ncol=2)
        samples, rate = soundfile.read(path, dtype="float32")
        spectrum.specgram(samples, NFFT=1024, Fs=rate, noverlap=512, cmap="magma")
        spectrum.set_ylim(0, 8000)
        spectrum.set_xlabel("time (s)")
        spectrum.set_ylabel("frequency (Hz)")
        spectrum.set_title(f"{name}: spectrogram", fontsize=9, loc="left")
    fig.tight_layout()
    return fig
