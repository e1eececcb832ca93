"""Play samples through a sound card, live.

:class:`LiveStream` is the live counterpart of
:class:`~sonify.output.AudioFileWriter`: a sounddevice output stream fed from
a bounded ring buffer. Producers :meth:`~LiveStream.write` samples from their
own thread; PortAudio's callback only copies ready samples out of the ring
(no allocation of sample buffers, no synthesis, no lock). When the ring is
empty the callback plays silence, so a slow producer is heard as pauses,
never as garbage.

sounddevice (and the PortAudio library under it) is imported only when a
stream is opened or devices are listed, so ``import sonify`` works on
machines without a sound card.

Examples
--------
Needs a sound card, so shown rather than run as a doctest::

    import numpy as np
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    with LiveStream(44100) as speaker:  # the default output device
        speaker.write(tone.astype(np.float32))  # returns once queued; closing plays it out
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._errors import SonifyError

__all__ = ["DEFAULT_LATENCY", "LiveStream", "LiveStreamError", "output_devices", "resolve_output_device"]

#: Seconds of buffering PortAudio is asked for. Lower settings gave
#: occasional underruns on a busy 2-core VM; 0.1 s gave none.
DEFAULT_LATENCY = 0.1
#: Frames per callback; small, so the ring is refilled in time for the newest step.
BLOCKSIZE = 512
#: Silence appended before a stream is stopped: PortAudio drops the last
#: 15 to 40 ms of a stream that ends right after its last sample.
END_PADDING = 0.4

_INSTALL_PORTAUDIO = (
    "install it (Debian/Ubuntu: sudo apt-get install libportaudio2; Fedora: sudo dnf install portaudio; "
    "macOS: brew install portaudio), or leave out live playback and write a WAV file"
)
_NO_DEVICE = (
    "no audio output device found (no sound card, or no sound server running); start one (PulseAudio, "
    "PipeWire), pick another with {output_device} (see `sonify devices`), or leave out live playback and write a WAV file"
)


class LiveStreamError(SonifyError):
    """The live stream cannot be opened or stopped playing."""


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into one clear line."""
    try:
        import sounddevice
    except OSError:  # sounddevice raises OSError('PortAudio library not found')
        raise LiveStreamError(
            f"live audio needs the PortAudio library, which was not found; {_INSTALL_PORTAUDIO}"
        ) from None
    except ImportError:
        raise LiveStreamError("live audio needs the sounddevice package; pip install sounddevice") from None
    return sounddevice


def output_devices(require: bool = False) -> list[dict[str, Any]]:
    """The devices that can play sound, as sounddevice describes them.

    Parameters
    ----------
    require : bool
        Raise :class:`LiveStreamError` (with what to do) when there is none.

    Each entry is sounddevice's device dict (``index``, ``name``,
    ``max_output_channels``, ``default_samplerate``, ...) plus ``hostapi_name``
    and ``default`` (True for the default output device).

    Examples
    --------
    With the virtual PulseAudio card of the tests::

        [device["name"] for device in output_devices()]  # -> ['pulse', 'default']
    """
    sd = _sounddevice()
    default = _default_output_index(sd)
    hostapis = sd.query_hostapis()
    devices = []
    for device in sd.query_devices():
        if device["max_output_channels"] > 0:
            devices.append(
                {**device, "hostapi_name": hostapis[device["hostapi"]]["name"], "default": device["index"] == default}
            )
    if require and not devices:
        raise LiveStreamError(_NO_DEVICE)
    return devices


def _default_output_index(sd: Any) -> int:
    try:
        return int(sd.default.device[1])
    except (TypeError, IndexError, ValueError):
        return -1


def resolve_output_device(device: int | str | None = None) -> tuple[int, str]:
    """``(index, name)`` of the output device meant by ``device``.

    Parameters
    ----------
    device : int, str or None
        None for the default output device, an index, or (part of) a name,
        matched case-insensitively as sounddevice does.

    Raises
    ------
    LiveStreamError
        When PortAudio is missing, there is no output device, or ``device``
        matches none (or several) of them.
    """
    devices = output_devices(require=True)
    listing = ", ".join(f"{d['index']} {d['name']!r}" for d in devices)
    if device is None:
        chosen = [d for d in devices if d["default"]]
        if not chosen:
            raise LiveStreamError(f"there is no default output device; choose one with {{output_device}} ({listing})")
        return chosen[0]["index"], chosen[0]["name"]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        for d in devices:
            if d["index"] == index:
                return index, d["name"]
        raise LiveStreamError(f"no output device has index {index}; choose one of {listing}")
    wanted = str(device).strip().lower()
    exact = [d for d in devices if d["name"].lower() == wanted]
    partial = exact or [d for d in devices if wanted in d["name"].lower()]
    if len(partial) == 1:
        return partial[0]["index"], partial[0]["name"]
    if not partial:
        raise LiveStreamError(f"no output device matches {device!r}; choose one of {listing}")
    names = ", ".join(repr(d["name"]) for d in partial)
    raise LiveStreamError(f"output device {device!r} is ambiguous ({names}); give its index or full name")


class LiveStream:
    """A sound-card output fed through a bounded ring buffer.

    Parameters
    ----------
    sample_rate : int
    device : int or str, optional
        Output device (see :func:`resolve_output_device`); the default device if None.
    channels : int
    latency : float
        Seconds of buffering asked of PortAudio (see :data:`DEFAULT_LATENCY`).
    buffer_seconds : float
        Capacity of the ring buffer: the most audio :meth:`write` can queue.
        At least twice ``latency`` plus 50 ms, because PortAudio takes a
        whole latency's worth at once when the stream starts.

    Attributes
    ----------
    underruns : int
        Callbacks that PortAudio flagged as output underflow (the sound card
        ran dry because a callback came too late).
    failure : str or None
        Why the stream stopped playing, once it has (see :meth:`check`).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        device: int | str | None = None,
        channels: int = 1,
        latency: float = DEFAULT_LATENCY,
        buffer_seconds: float = 2.0,
    ) -> None:
        sd = _sounddevice()
        self.device_index, self.device_name = resolve_output_device(device)
        self.sample_rate = int(sample_rate)
        self.channels = channels
        self.capacity = round(max(buffer_seconds, 2 * latency + 0.05) * sample_rate)
        self._ring = np.zeros((self.capacity, channels), dtype=np.float32)
        # Only the producer moves _written and only the callback moves _read;
        # each is one int assignment, so neither side needs a lock.
        self._written = 0
        self._read = 0
        self.underruns = 0
        self.failure: str | None = None
        self._stopping = False
        self._progress = (0, time.monotonic())  # (read position, when it last moved)
        self._checked = time.monotonic()  # when check() last looked
        self._drained_at = -1  # write position at the end of the last drain
        try:
            self._stream = sd.OutputStream(
                samplerate=self.sample_rate,
                blocksize=BLOCKSIZE,
                device=self.device_index,
                channels=channels,
                dtype="float32",
                latency=latency,
                callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise LiveStreamError(
                f"cannot play on output device {self.device_index} {self.device_name!r}: {exc}; "
                "check it with `sonify devices` or choose another with {output_device}"
            ) from None
        self.latency = float(self._stream.latency)

    # -- PortAudio's thread ----------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.output_underflow:
            self.underruns += 1
        read = self._read
        ready = min(self._written - read, frames)
        start = read % self.capacity
        first = min(ready, self.capacity - start)
        outdata[:first] = self._ring[start : start + first]
        if ready > first:
            outdata[first:ready] = self._ring[: ready - first]
        if ready < frames:
            outdata[ready:] = 0.0
        self._read = read + ready

    def _finished(self) -> None:
        if not self._stopping and self.failure is None:
            self.failure = "the output device stopped playing (unplugged, or the sound server went away)"

    # -- producer side ---------------------------------------------------
    @property
    def backlog(self) -> int:
        """Frames written but not yet handed to the sound card."""
        return self._written - self._read

    @property
    def played(self) -> int:
        """Frames handed to the sound card so far."""
        return self._read

    @property
    def written(self) -> int:
        """Frames written so far (the stream position the next write starts at)."""
        return self._written

    def room(self) -> int:
        """Frames that can be written now without waiting."""
        return self.capacity - self.backlog

    def check(self) -> str | None:
        """Why the stream stopped playing, or None while it plays.

        Notices a stream that PortAudio stopped (device gone) and one whose
        callbacks stopped coming although samples are waiting (stalled).
        """
        if self.failure is None and not self._stopping:
            now = time.monotonic()
            position, since = self._progress
            unobserved = now - self._checked > 1.0
            self._checked = now
            if self._read != position or not self.backlog or unobserved:
                # Nothing waiting is not a stall: a run that pauses (evaluation, a checkpoint) is silence,
                # so the clock of a stall starts only when samples wait and the card does not take them,
                # and only while it is watched: a process that was suspended (SIGSTOP, a laptop asleep)
                # stopped the card's callbacks too, and they resume with it.
                self._progress = (self._read, now)
            elif not self._stream.active:
                self.failure = "the output device stopped playing (unplugged, or the sound server went away)"
            elif self.backlog and now - since > max(2.0, 10 * self.latency):
                self.failure = f"the output device stopped taking samples for {now - since:.1f} s"
        return self.failure

    def write(self, samples: np.ndarray, *, block: bool = True) -> int:
        """Queue samples for playback.

        Parameters
        ----------
        samples : ndarray of float32, shape (frames,) or (frames, channels)
        block : bool
            Wait for room until everything is queued. Otherwise queue what
            fits now and return.

        Returns
        -------
        int
            Frames queued.

        Raises
        ------
        LiveStreamError
            When waiting on a stream that stopped playing.
        """
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[:, None]
        if samples.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got samples of shape {samples.shape}")
        done = 0
        while done < len(samples):
            count = min(self.room(), len(samples) - done)
            if count:
                start = self._written % self.capacity
                first = min(count, self.capacity - start)
                self._ring[start : start + first] = samples[done : done + first]
                self._ring[: count - first] = samples[done + first : done + count]
                self._written += count
                done += count
            elif not block:
                break
            else:
                if self.check():
                    raise LiveStreamError(f"live playback stopped: {self.failure}")
                time.sleep(0.005)
        return done

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been played (plus padding).

        Returns False if the stream failed or ``timeout`` passed first.
        """
        pad = np.zeros((round(END_PADDING * self.sample_rate), self.channels), np.float32)
        deadline = None if timeout is None else time.monotonic() + timeout
        written = self.write(pad, block=False)
        while self.backlog or written < len(pad):
            if self.check() or (deadline is not None and time.monotonic() > deadline):
                return False
            written += self.write(pad[written:], block=False)
            time.sleep(0.01)
        self._drained_at = self._written
        return True

    def close(self, drain: bool = True) -> None:
        """Stop the stream, after playing what is queued if ``drain`` (idempotent)."""
        if self._stopping:
            return
        if drain and self.failure is None and self._written != self._drained_at:
            self.drain(timeout=self.backlog / self.sample_rate + END_PADDING + 2.0)
        self._stopping = True
        try:
            if drain and self.failure is None:
                self._stream.stop()
            else:
                self._stream.abort()
            self._stream.close()
        except Exception:
            pass

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        self.close(drain=exc_type is None)

    def __repr__(self) -> str:
        return f"<LiveStream on {self.device_index} {self.device_name!r}: {self.sample_rate} Hz, backlog {self.backlog} frames>"
