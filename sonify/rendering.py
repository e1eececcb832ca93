"""From norms to an audio file: map -> synthesize -> output, block by block.

:class:`SoundSettings` holds every choice about the sound; :func:`render`
turns a recorded norm log into a WAV or FLAC file without torch.

For example, the same run with the reference experiment's linear map::

    sonify.render("audio_out/run.norms.csv", "audio_out/run-linear.wav",
                  sound=sonify.SoundSettings(mapping="linear"))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyError, SonifyParameterError
from ._files import check_new_file
from ._pipelines import AudioPipeline
from ._progress import progress_bar
from .mapping import PitchMap, get_map
from .midi import MIDI_SUFFIXES
from .norms import NormLog
from .output import check_audio_path
from .sources import as_norm_log
from .spikes import SPIKE_FACTOR, SPIKE_WINDOW, SpikeDetector
from .synthesize import Synthesizer

__all__ = ["RenderResult", "SoundSettings", "check_render_path", "condensed_audio", "render"]

#: Steps synthesized per block: ~1 minute of audio for 4 layers, ~10 MB.
BLOCK_STEPS = 1024


@dataclass(frozen=True)
class SoundSettings:
    """How norms sound.

    Attributes
    ----------
    mapping : str or PitchMap
        ``"log"`` (default) or ``"linear"`` (the 2019 reference), or a map.
    norm_range : (float, float) or "auto", optional
        Norms at the bottom and top of the ``log`` map's pitch range;
        ``"auto"`` fits them to the run (only when the whole run is known,
        i.e. when rendering a log).
    scale : str, optional
        Snap pitches to ``"chromatic"``, ``"major"``, ``"minor"`` or ``"pentatonic"``.
    sample_rate : int
    tone_duration : float
        Seconds per tone (one tone per layer per step).
    gap : float, optional
        Seconds of silence after each step (two tone lengths by default).
    amplitude : float
        Peak amplitude of a tone.
    fade : float
        Seconds of raised-cosine fade at each tone edge.
    sample_format : str
        ``"float"`` (32-bit float WAV), ``"pcm16"`` or ``"pcm24"``.
    mode : str
        ``"sequence"`` (one tone per layer in turn, the reference) or
        ``"chord"`` (all layers at once, each at its own pitch).
    stereo : bool
        Spread the layers from left to right across the stereo field.
    spike_factor : float
        A norm at least this many times its layer's running median is a
        spike and sounds accented (brighter, sharper attack); 0 turns it off.
    spike_window : int
        Steps of each layer's history the running median looks back over.
    loudness : str
        ``"iso226"``: every pitch equally loud (ISO 226:2023 at 60 phon);
        ``"flat"``: the same amplitude for every pitch.
    """

    mapping: str | PitchMap = "log"
    norm_range: tuple[float, float] | str | None = None
    scale: str | None = None
    sample_rate: int = 44100
    tone_duration: float = 0.01
    gap: float | None = None
    amplitude: float = 0.1
    fade: float = 0.002
    sample_format: str = "float"
    mode: str = "sequence"
    stereo: bool = False
    spike_factor: float = SPIKE_FACTOR
    spike_window: int = SPIKE_WINDOW
    loudness: str = "iso226"

    def spike_detector(self, n_voices: int) -> SpikeDetector:
        """A detector of spikes with these settings (checks them)."""
        return SpikeDetector(n_voices, self.spike_factor, self.spike_window)

    def pitch_map(self, norms: np.ndarray | None = None) -> PitchMap:
        """The pitch map, fitted to ``norms`` when ``norm_range="auto"``."""
        auto = isinstance(self.norm_range, str)
        if auto and self.norm_range != "auto":
            raise SonifyError(f"norm range {self.norm_range!r} is invalid; give 'auto' or two numbers LOW:HIGH")
        pitch_map = get_map(self.mapping, norm_range=None if auto else self.norm_range, scale=self.scale)
        if auto:
            if norms is None:
                raise SonifyError(
                    "norm range 'auto' needs the whole run; use fixed bounds while recording "
                    "and render the log with {norm_range}auto afterwards"
                )
            pitch_map = pitch_map.fit(norms)
        return pitch_map

    def synthesizer(self, n_voices: int) -> Synthesizer:
        """A synthesizer with these settings."""
        return Synthesizer(
            n_voices,
            sample_rate=self.sample_rate,
            tone_duration=self.tone_duration,
            gap=self.gap,
            amplitude=self.amplitude,
            fade=self.fade,
            mode=self.mode,
            stereo=self.stereo,
            loudness=self.loudness,
            pitch_band=self._pitch_band(),
        )

    def _pitch_band(self) -> tuple[float, float]:
        """Lowest and highest pitch the map can play (maps rise with the norm)."""
        pitch_map = get_map(self.mapping, scale=self.scale)
        low, high = pitch_map(np.array([0.0, 1e300]))
        return float(low), float(high)

    def describe(self, pitch_map: PitchMap | None = None) -> dict[str, Any]:
        """JSON-friendly settings (with the map actually used)."""
        settings = asdict(self)
        settings["mapping"] = (pitch_map or self.pitch_map(np.ones(1))).describe()
        return settings


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
        windows = max(1, int(duration / sound.synthesizer(len(log.layer_names)).step_duration))
        if windows < len(log):
            # Spikes are found at full resolution (unless the log has its own); a window with one keeps the accent.
            if log.accents is None:
                log = replace(log, accents=log.spikes(sound.spike_factor, sound.spike_window)[0])
            log = log.condense(windows, combine)
        else:
            windows = None
    if midi:
        return RenderResult(Path(out), total_steps, _render_midi(log, out, sound, overwrite), nonfinite_steps, windows)
    pipeline = AudioPipeline(sound, len(log.layer_names), out, sound.pitch_map(log.norms), overwrite=overwrite)
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
    synth = sound.synthesizer(len(log.layer_names))
    windows = max(1, int(max_seconds / synth.step_duration))
    if log.accents is None:  # spikes found at full resolution, kept by the windows
        log = replace(log, accents=log.spikes(sound.spike_factor, sound.spike_window)[0])
    if len(log) > windows:
        log = log.condense(windows)
    samples = synth.synthesize(sound.pitch_map(log.norms)(log.norms), log.missing, log.accents)
    return samples, synth.sample_rate


def check_render_path(out: str | os.PathLike, *, overwrite: bool = False) -> bool:
    """Check that :func:`render` may write ``out`` (audio or MIDI), before anything is read; True for MIDI."""
    if Path(out).suffix.lower() in MIDI_SUFFIXES:
        check_new_file(Path(out), overwrite=overwrite)
        return True
    check_audio_path(out, overwrite=overwrite)
    return False


def _render_midi(log: NormLog, out: str | os.PathLike, sound: SoundSettings, overwrite: bool) -> float:
    """The same pitches, rests, alarms and accents as the audio, as MIDI notes (see :mod:`sonify.midi`)."""
    from .midi import write_midi

    synth = sound.synthesizer(len(log.layer_names))
    accents = log.accents if log.accents is not None else log.spikes(sound.spike_factor, sound.spike_window)[0]
    freqs = synth.clamp(sound.pitch_map(log.norms)(log.norms))
    return write_midi(
        out,
        freqs,
        log.missing,
        accents & ~log.missing,
        tone_duration=synth.tone_samples / synth.sample_rate,
        gap=synth.gap_samples / synth.sample_rate,
        chord=sound.mode == "chord",
        layer_names=log.layer_names,
        overwrite=overwrite,
    )


def _blocks(log: NormLog, bar: Any) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    for start in range(0, len(log), BLOCK_STEPS):
        stop = min(start + BLOCK_STEPS, len(log))
        accents = None if log.accents is None else log.accents[start:stop]
        yield log.norms[start:stop], log.missing[start:stop], accents
        bar.update(stop - start)
