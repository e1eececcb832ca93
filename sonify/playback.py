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
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyError
from ._progress import progress_bar
from .mapping import PitchMap
from .record import NormLog, as_norm_log
from .rendering import SoundSettings
from .stream import BLOCKSIZE, DEFAULT_LATENCY, LiveStream, LiveStreamError

__all__ = ["LiveReport", "PlayResult", "play"]

#: Audio that ``pace=True`` lets training run ahead of what is heard, in seconds.
PACE_AHEAD = 0.25


@dataclass(frozen=True)
class LiveReport:
    """What live playback did during a run."""

    device: str
    played: int
    skipped: int
    underruns: int
    failure: str | None

    def describe(self) -> str:
        """One line for a run summary."""
        text = f"{self.played} steps played on {self.device!r}"
        if self.skipped:
            text += f", {self.skipped} skipped to keep up with training (all are in the WAV and log)"
        text += f", {self.underruns} underruns"
        if self.failure:
            text += f"; stopped early: {self.failure}"
        return text


class _LivePlayer:
    """Steps in, sound out: the live pitch map, synthesizer and stream, on their own thread.

    The training thread only calls :meth:`push` (a deque append and an event).
    """

    def __init__(
        self,
        sound: SoundSettings,
        n_voices: int,
        pitch_map: PitchMap,
        *,
        device: int | str | None = None,
        pace: bool = False,
        latency: float = DEFAULT_LATENCY,
    ) -> None:
        self.pitch_map = pitch_map
        self.synth = sound.synthesizer(n_voices)
        self.spikes = sound.spike_detector(n_voices)
        self.stream = LiveStream(
            sound.sample_rate,
            device=device,
            channels=self.synth.channels,
            latency=latency,
            buffer_seconds=max(2.0, 4 * self.synth.step_duration),
        )
        self.pace = pace
        self.played = 0
        self.skipped = 0
        #: (stream frame where the step's sound starts, step, time it was pushed), when timing is on.
        self.timeline: list[tuple[int, int, float]] | None = None
        self._pending: deque = deque()
        self._wake = threading.Event()
        self._closing = False
        self._abort = False
        self._idle = False
        # Refill when less than this is queued: one callback block keeps the
        # card fed while the newest step waits as little as possible.
        self._low_water = BLOCKSIZE
        self._thread = threading.Thread(target=self._run, name="sonify-live", daemon=True)
        self._thread.start()

    @property
    def failure(self) -> str | None:
        return self.stream.failure

    def push(self, step: int, norms: np.ndarray, missing: np.ndarray, when: float) -> None:
        """Hand over one step (called from the training thread)."""
        self._pending.append((step, norms, missing, when))
        if self._idle:  # only wake a player that waits for steps, not one waiting for the card to drain
            self._wake.set()

    def unplayed_seconds(self, steps_behind: int = 0) -> float:
        """Sound not yet played: queued in the stream, pending, and ``steps_behind`` more steps."""
        frames = self.stream.backlog + (len(self._pending) + steps_behind) * self.synth.step_samples
        return frames / self.synth.sample_rate

    def wait_for_pace(self, steps_behind: int) -> None:
        """Block until at most :data:`PACE_AHEAD` seconds of sound are ahead of the listener."""
        ahead = max(PACE_AHEAD, 2 * self.synth.step_duration)
        while self.unplayed_seconds(steps_behind) > ahead and self.stream.check() is None:
            time.sleep(0.005)

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # a bug here must not hang a paced training loop: report it as a failure
            self.stream.failure = f"live sound failed ({type(exc).__name__}: {exc})"

    def _serve(self) -> None:
        rate = self.synth.sample_rate
        while True:
            if self._abort or self.stream.check():
                self._pending.clear()
                if self._closing:
                    return
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            excess = self.stream.backlog - self._low_water
            if excess > 0:
                self._wake.wait(excess / rate)
                self._wake.clear()
                continue
            self._idle = True
            if not self._pending:
                if self._closing:
                    return
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            self._idle = False
            self._play_next()

    def _play_next(self) -> None:
        batch = [self._pending.popleft()] if self.pace else [self._pending.popleft() for _ in range(len(self._pending))]
        self.skipped += len(batch) - 1
        # Every step goes through the spike detector (its history), and a spike is never skipped either.
        spikes = self.spikes(np.stack([item[1] for item in batch]), np.stack([item[2] for item in batch]))
        step, norms, missing, when = _newest_keeping_alarms(batch)
        accent = spikes.any(axis=0) & ~missing & np.isfinite(norms)
        samples = self.synth.synthesize(self.pitch_map(norms[None, :]), missing[None, :], accent[None, :])
        if self.timeline is not None:
            self.timeline.append((self.stream.written, step, when))
        self.stream.write(samples, block=False)
        self.played += 1

    def close(self, drain: bool = True) -> LiveReport:
        """Play what is due (everything when pacing), stop the stream and report."""
        self._closing = True
        self._idle = True
        self._abort = not drain
        self._wake.set()
        self._thread.join()
        self.stream.close(drain=drain)
        return LiveReport(self.stream.device_name, self.played, self.skipped, self.stream.underruns, self.failure)


def _newest_keeping_alarms(batch: list[tuple[int, np.ndarray, np.ndarray, float]]) -> tuple:
    """The newest of several waiting steps, with the alarm of any layer that was NaN/Inf in the others."""
    step, norms, missing, when = batch[-1]
    alarm = np.zeros(len(norms), bool)
    for _, older_norms, older_missing, _ in batch[:-1]:
        alarm |= ~np.isfinite(older_norms) & ~older_missing
    if alarm.any():
        norms = np.where(alarm, np.nan, norms)
        missing = missing & ~alarm
    return step, norms, missing, when


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
    from .sonifier import _renamed

    device = _renamed("device", device, "output_device", output_device)
    is_log = isinstance(source, NormLog) or str(source).endswith(".csv")
    if is_log or Path(source).is_dir() or "tfevents" in Path(source).name:  # TensorBoard logs too
        log = as_norm_log(source)
        sound = sound or SoundSettings()
        synth = sound.synthesizer(len(log.layer_names))
        pitch_map = sound.pitch_map(log.norms)
        steps_per_chunk = max(1, round(_PLAY_CHUNK / synth.step_duration))
        accents = log.accents if log.accents is not None else log.spikes(sound.spike_factor, sound.spike_window)[0]
        chunks = (
            synth.synthesize(
                pitch_map(log.norms[i : i + steps_per_chunk]),
                log.missing[i : i + steps_per_chunk],
                accents[i : i + steps_per_chunk],
            )
            for i in range(0, len(log), steps_per_chunk)
        )
        return _stream_chunks(
            log.path or Path("<norms>"),
            chunks,
            len(log) * synth.step_duration,
            sound.sample_rate,
            synth.channels,
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
