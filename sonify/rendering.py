"""From a recorded run to an audio or MIDI file, block by block; and a run's sound in memory.

:func:`render` turns any source of norms (see :mod:`sonify.sources`) into a
WAV, FLAC or MIDI file without torch; :func:`condensed_audio` gives the whole
run's sound, condensed, to notebooks and trackers. Both take the one sound
path (:class:`~sonify.sound.Sounder`).

For example, the same run with the reference experiment's linear map::

    sonify.render("audio_out/run.norms.csv", "audio_out/run-linear.wav",
                  sound=sonify.SoundSettings(mapping="linear"))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyParameterError
from ._files import check_new_file
from ._pipelines import AudioPipeline
from ._progress import progress_bar
from .midi import MIDI_SUFFIXES
from .norms import NormLog
from .output import check_audio_path
from .sound import Sounder, SoundSettings
from .sources import as_norm_log

__all__ = ["RenderResult", "check_render_path", "condensed_audio", "render"]

#: Steps synthesized per block: ~1 minute of audio for 4 layers, ~10 MB.
BLOCK_STEPS = 1024


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render` wrote."""

    path: Path
    steps: int
    duration: float
    nonfinite_steps: int
    #: Rows actually sounded when ``duration`` combined steps (None when every step sounds).
    windows: int | None = None


def render(
    source: NormLog | str | os.PathLike | np.ndarray | Sequence[Sequence[float]],
    out: str | os.PathLike,
    *,
    sound: SoundSettings | None = None,
    progress: bool = False,
    drop_incomplete: bool = False,
    duration: float | None = None,
    combine: str = "mean",
    overwrite: bool = False,
) -> RenderResult:
    """Render recorded gradient norms to an audio file.

    Parameters
    ----------
    source : NormLog, path or array
        A norm log (or its path), or a (steps, layers) array of norms.
    out : str or PathLike
        ``.wav`` or ``.flac`` file to write, or ``.mid`` for a MIDI file
        (see :mod:`sonify.midi`; needs ``pip install 'sonify[midi]'``).
    sound : SoundSettings, optional
        Mapping, timing and format; the defaults otherwise.
    progress : bool
        Show a progress bar (steps/s) on stderr.
    drop_incomplete : bool
        Passed to :func:`~sonify.load_norms` for a cut-off last line.
    duration : float, optional
        Seconds the audio may last at most: a longer run has its consecutive
        steps combined (see :meth:`NormLog.condense`) into as many windows as
        fit; NaN/Inf anywhere in a window still sounds the alarm. Only the
        combined rows are synthesized, so memory does not grow with the run.
    combine : str
        ``"mean"`` or ``"max"`` of each window's norms.
    overwrite : bool
        Replace an existing ``out``; otherwise an existing file is an error
        (raised before anything is read or written).

    Returns
    -------
    RenderResult

    Examples
    --------
    >>> import numpy as np, sonify, tempfile
    >>> out = tempfile.mkdtemp() + "/doc.wav"
    >>> result = sonify.render(np.array([[0.5, 2.0], [np.nan, 1.0]]), out)
    >>> result.steps, result.nonfinite_steps
    (2, 1)
    """
    sound = sound or SoundSettings()
    midi = check_render_path(out, overwrite=overwrite)
    if combine not in ("mean", "max"):
        raise SonifyParameterError(f"combine={combine!r} is not understood; use 'mean' or 'max'")
    log = as_norm_log(source, drop_incomplete=drop_incomplete)
    total_steps, nonfinite_steps = len(log), int(log.nonfinite.any(axis=1).sum())
    windows = None
    if duration is not None:
        if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
            raise SonifyParameterError(
                f"duration {duration:g} s is not positive; give the length of audio wanted, e.g. 60"
            )
        windows = max(1, int(duration / sound.step_duration(len(log.layer_names))))
        if windows < len(log):
            # Spikes are found at full resolution (unless the log has its own); a window with one keeps the accent.
            if log.accents is None:
                log = replace(log, accents=log.spikes(sound.spike_factor, sound.spike_window)[0])
            log = log.condense(windows, combine)
        else:
            windows = None
    sounder = sound.sounder(len(log.layer_names), sound.pitch_map(log.norms))
    if midi:
        return RenderResult(
            Path(out), total_steps, _render_midi(log, out, sounder, overwrite), nonfinite_steps, windows
        )
    pipeline = AudioPipeline(sounder, out, sample_format=sound.sample_format, overwrite=overwrite)
    bar = progress_bar(len(log), "render", enabled=progress)
    try:
        pipeline.feed_blocks(_blocks(log, bar))
    finally:
        bar.close()
        pipeline.close()
    return RenderResult(Path(out), total_steps, pipeline.writer.duration, nonfinite_steps, windows)


def condensed_audio(
    source: NormLog | str | os.PathLike | np.ndarray, sound: SoundSettings | None = None, max_seconds: float = 60.0
) -> tuple[np.ndarray, int]:
    """The sound of a whole run in memory, at most ``max_seconds`` long, and its sample rate.

    A longer run has its consecutive steps combined (see
    :meth:`NormLog.condense`); spikes are found at full resolution first, so a
    window with a spike keeps the accent, and a window with NaN/Inf keeps the
    alarm. This is what notebooks and experiment trackers get.

    Examples
    --------
    >>> import numpy as np
    >>> samples, rate = condensed_audio(np.ones((100_000, 4)), max_seconds=5)
    >>> len(samples) / rate <= 5, rate
    (True, 44100)
    """
    sound = sound or SoundSettings()
    log = as_norm_log(source)
    windows = max(1, int(max_seconds / sound.step_duration(len(log.layer_names))))
    if log.accents is None:  # spikes found at full resolution, kept by the windows
        log = replace(log, accents=log.spikes(sound.spike_factor, sound.spike_window)[0])
    if len(log) > windows:
        log = log.condense(windows)
    sounder = sound.sounder(len(log.layer_names), sound.pitch_map(log.norms))
    return sounder.sound(log.norms, log.missing, log.accents), sounder.sample_rate


def check_render_path(out: str | os.PathLike, *, overwrite: bool = False) -> bool:
    """Check that :func:`render` may write ``out`` (audio or MIDI), before anything is read; True for MIDI."""
    if Path(out).suffix.lower() in MIDI_SUFFIXES:
        check_new_file(Path(out), overwrite=overwrite)
        return True
    check_audio_path(out, overwrite=overwrite)
    return False


def _render_midi(log: NormLog, out: str | os.PathLike, sounder: Sounder, overwrite: bool) -> float:
    """The same pitches, rests, alarms and accents as the audio, as MIDI notes (see :mod:`sonify.midi`)."""
    from .midi import write_midi

    return write_midi(
        out, sounder.score(log.norms, log.missing, log.accents), layer_names=log.layer_names, overwrite=overwrite
    )


def _blocks(log: NormLog, bar: Any) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    for start in range(0, len(log), BLOCK_STEPS):
        stop = min(start + BLOCK_STEPS, len(log))
        accents = None if log.accents is None else log.accents[start:stop]
        yield log.norms[start:stop], log.missing[start:stop], accents
        bar.update(stop - start)
