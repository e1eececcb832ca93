"""From norms to the speakers: live playback during training, and replay.

Live playback follows the training as closely as the sound allows. One step
sounds for ``layers x tone + gap`` (60 ms for the reference CNN), while a
training loop can make hundreds of steps per second, so not every step can be
heard live. The **latency policy**:

* Each time the sound card is about to run out of sound, the newest step that
  arrived is played. Steps that arrived in between are *skipped* live (they
  are counted), except that an alarm is never skipped: a layer that was NaN or
  Inf in any skipped step sounds the alarm in the step that is played.
* So the delay from ``optimizer.step()`` to its tone stays about one callback
  block plus the sound card's latency, however fast training runs.
* When training is slower than the sound, each step plays as soon as it
  arrives, with silence in between.
* ``pace=True`` plays every step instead and makes training wait for the
  sound (for short runs that you want to hear in full).

The WAV file and the norm log always keep every step.

:func:`play` replays a norm log (synthesized on the fly) or an audio file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import SonifyError, renamed_keyword
from ._pipelines import LiveReport
from ._progress import progress_bar
from .norms import NormLog
from .sound import SoundSettings
from .sources import SourceKind, as_norm_log, source_kind
from .stream import DEFAULT_LATENCY, LiveStream, LiveStreamError

__all__ = ["LiveReport", "PlayResult", "play"]


@dataclass(frozen=True)
class PlayResult:
    """What :func:`play` played."""

    source: Path
    duration: float
    underruns: int
    device: str


#: Seconds of audio handed to the stream at a time by :func:`play`.
_PLAY_CHUNK = 0.25


def play(
    source: str | os.PathLike | NormLog,
    *,
    output_device: int | str | None = None,
    sound: SoundSettings | None = None,
    progress: bool = False,
    latency: float = DEFAULT_LATENCY,
    device: int | str | None = None,
) -> PlayResult:
    """Play a recorded run through the sound card and return when it ends.

    Parameters
    ----------
    source : path or NormLog
        A norm log (a CSV of norms or TensorBoard logs, synthesized on the fly with ``sound``) or
        an audio file that soundfile reads (WAV, FLAC, ...), streamed as is.
    output_device : int or str, optional
        The sound card; the default device if None (see ``sonify devices``).
        (``device=`` still works, with a deprecation warning.)
    sound : SoundSettings, optional
        Mapping and timing for a norm log (ignored for audio files).
    progress : bool
        Show a progress bar in seconds of audio.
    latency : float
        Seconds of buffering asked of PortAudio.

    Returns
    -------
    PlayResult

    Raises
    ------
    SonifyError
        For an unreadable file, a missing PortAudio or output device. A
        ``KeyboardInterrupt`` stops the sound at once and is re-raised.

    Examples
    --------
    Needs a sound card, so shown rather than run as a doctest::

        sonify.play("audio_out/run.norms.csv", output_device="pulse")
    """
    device = renamed_keyword("device", device, "output_device", output_device)
    if isinstance(source, NormLog) or source_kind(source, audio=True) is not SourceKind.AUDIO:
        log = as_norm_log(source)
        sound = sound or SoundSettings()
        sounder = sound.sounder(len(log.layer_names), sound.pitch_map(log.norms))
        steps_per_chunk = max(1, round(_PLAY_CHUNK / sounder.step_duration))
        accents = log.accents if log.accents is not None else log.spikes(sound.spike_factor, sound.spike_window)[0]
        chunks = (
            sounder.sound(
                log.norms[i : i + steps_per_chunk],
                log.missing[i : i + steps_per_chunk],
                accents[i : i + steps_per_chunk],
            )
            for i in range(0, len(log), steps_per_chunk)
        )
        return _stream_chunks(
            log.path or Path("<norms>"),
            chunks,
            len(log) * sounder.step_duration,
            sounder.sample_rate,
            sounder.channels,
            device,
            progress,
            latency,
        )
    path = Path(source)
    soundfile = _open_audio(path)
    with soundfile:
        chunks = soundfile.blocks(blocksize=round(_PLAY_CHUNK * soundfile.samplerate), dtype="float32", always_2d=True)
        duration = soundfile.frames / soundfile.samplerate
        return _stream_chunks(
            path, chunks, duration, soundfile.samplerate, soundfile.channels, device, progress, latency
        )


def _open_audio(path: Path) -> Any:
    import soundfile

    if not path.is_file():
        raise SonifyError(f"cannot play {path}: no such file; give a .norms.csv log or an audio file")
    try:
        return soundfile.SoundFile(path)
    except (OSError, RuntimeError) as exc:
        raise SonifyError(
            f"cannot play {path}: not a norm log (.norms.csv) nor a readable audio file ({exc})"
        ) from None


def _stream_chunks(
    path: Path,
    chunks: Any,
    duration: float,
    sample_rate: int,
    channels: int,
    device: int | str | None,
    progress: bool,
    latency: float,
) -> PlayResult:
    stream = LiveStream(sample_rate, device=device, channels=channels, latency=latency)
    bar = progress_bar(round(duration, 2), "play", enabled=progress, unit="s")
    finished = False
    try:
        for chunk in chunks:
            stream.write(chunk)
            bar.update(round(len(chunk) / sample_rate, 2))
        finished = stream.drain()
        if not finished:
            raise LiveStreamError(f"live playback stopped: {stream.failure}")
    finally:
        bar.close()
        stream.close(drain=finished)
    return PlayResult(path, duration, stream.underruns, stream.device_name)
