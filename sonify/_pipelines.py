"""The two places sound goes while it is made: a file and the sound card.

Both take their sound from a :class:`~sonify.sound.Sounder` (the one sound
path). :class:`AudioPipeline` (sounder and file writer) serves
:func:`sonify.render` and a :class:`~sonify.Sonifier`'s WAV; :class:`LivePlayer`
(sounder and stream, on its own thread) serves live sound
during training, ``sonify play --follow`` and the Sonifier's ``live=True``.
They are private to the package: the public entry points are ``render``,
``play`` and ``Sonifier``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._errors import one_line
from .output import AudioFileWriter
from .score import Score
from .sound import Sounder
from .stream import BLOCKSIZE, DEFAULT_LATENCY, LiveStream

__all__ = ["PACE_AHEAD", "AudioPipeline", "LivePlayer", "LiveReport", "newest_keeping_alarms"]


class AudioPipeline:
    """A run's sound into an audio file: scores from the :class:`~sonify.sound.Sounder`, samples to the writer."""

    def __init__(
        self,
        sounder: Sounder,
        path: str | os.PathLike,
        *,
        sample_format: str = "float",
        overwrite: bool = False,
    ) -> None:
        self.sounder = sounder
        self.writer = AudioFileWriter(
            path, sounder.sample_rate, channels=sounder.channels, sample_format=sample_format, overwrite=overwrite
        )

    def write(self, score: Score) -> None:
        """Synthesize a scored block and append it, in the calling thread."""
        self.writer.write(self.sounder.samples(score))

    def feed(self, norms: np.ndarray, missing: np.ndarray, accents: np.ndarray | None = None) -> None:
        """Score, synthesize and write a block of steps (spikes found here unless given)."""
        self.write(self.sounder.score(norms, missing, accents))

    def feed_blocks(
        self, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]], workers: int | None = None
    ) -> None:
        """Synthesize many blocks on a thread pool, writing them in order.

        Scoring and planning (pitches, phases) is sequential and cheap;
        filling samples runs on ``workers`` threads (NumPy releases the GIL)
        while this thread writes finished blocks, so file writing and
        synthesis overlap. A few buffers are recycled, so memory stays flat.
        """
        workers = workers or min(4, os.cpu_count() or 1)
        synth = self.sounder.synth
        spare: list[np.ndarray] = []
        pending: deque = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="sonify-synth") as pool:
            for norms, missing, accents in blocks:
                plan = synth.plan_score(self.sounder.score(norms, missing, accents))
                size = len(norms) * synth.step_samples * synth.channels
                buffer = spare.pop() if spare and spare[-1].size >= size else np.empty(size, np.float32)
                pending.append((pool.submit(synth.fill, plan, buffer), buffer))
                if len(pending) > workers:
                    spare.append(self._write_next(pending))
            while pending:
                self._write_next(pending)

    def _write_next(self, pending: deque) -> np.ndarray:
        future, buffer = pending.popleft()
        self.writer.write(future.result())
        return buffer

    def close(self) -> None:
        self.writer.close()


#: Audio that ``pace=True`` lets training run ahead of what is heard, in seconds.
PACE_AHEAD = 0.25
#: Steps handed over closer together than this (seconds) arrived in one burst.
BURST_GAP = 0.005
#: The most sound (seconds) queued for a burst: the live stream's ring holds at least this much.
MAX_BURST_WAIT = 2.0


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


class LivePlayer:
    """Steps in, sound out: the live pitch map, synthesizer and stream, on their own thread.

    The training thread only calls :meth:`push` (a deque append and an event).
    """

    def __init__(
        self,
        sounder: Sounder,
        *,
        device: int | str | None = None,
        pace: bool = False,
        latency: float = DEFAULT_LATENCY,
    ) -> None:
        self.sounder = sounder
        self.synth = sounder.synth
        self.stream = LiveStream(
            sounder.sample_rate,
            device=device,
            channels=sounder.channels,
            latency=latency,
            buffer_seconds=max(MAX_BURST_WAIT, 4 * sounder.step_duration),
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
        # Rows often arrive in bursts (a log flushed every 0.5 s, a follower polling a file): the time
        # between bursts is how much sound may be queued without falling behind (see _steps_to_play).
        self._last_push = -math.inf
        self._burst_interval: float | None = None
        self._thread = threading.Thread(target=self._run, name="sonify-live", daemon=True)
        self._thread.start()

    @property
    def failure(self) -> str | None:
        return self.stream.failure

    def push(self, step: int, norms: np.ndarray, missing: np.ndarray, when: float) -> None:
        """Hand over one step (called from the training thread)."""
        now = time.monotonic()
        quiet = now - self._last_push
        if quiet > BURST_GAP and self._last_push > -math.inf:
            # The first step of a new arrival: the quiet time before it is how long the next burst may
            # take to come. A steady stream of steps has none to speak of, however long it runs (the
            # first arrival, a log's backlog, teaches nothing).
            gap = min(quiet, MAX_BURST_WAIT)
            self._burst_interval = gap if self._burst_interval is None else 0.5 * (self._burst_interval + gap)
        self._last_push = now
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
            self.stream.failure = f"live sound failed ({one_line(exc)})"

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

    def _steps_to_play(self, waiting: int) -> int:
        """How many of the newest waiting steps can be heard in order without falling behind.

        A burst is played whole when its sound ends before the next burst is
        due (the time between bursts, learned in :meth:`push`); only the
        excess is skipped. Steps that arrive one at a time, faster than the
        sound, leave room for one: the newest.
        """
        if self.pace:
            return 1
        room = (self._burst_interval or 0.0) * self.synth.sample_rate - self.stream.backlog
        return int(min(waiting, max(1, room // self.synth.step_samples)))

    def _play_next(self) -> None:
        waiting = [self._pending.popleft() for _ in range(1 if self.pace else len(self._pending))]
        keep = self._steps_to_play(len(waiting))
        self.skipped += len(waiting) - keep
        # Every step goes through the spike detector (its history), and a spike is never skipped either:
        # the first step played carries the alarms and accents of the steps skipped before it.
        spikes = self.sounder.detect(np.stack([item[1] for item in waiting]), np.stack([item[2] for item in waiting]))[
            0
        ]
        skipped = len(waiting) - keep
        if skipped:  # a relative map's homes learn from every step, heard or not
            self.sounder.pass_over(
                np.stack([item[1] for item in waiting[:skipped]]), np.stack([item[2] for item in waiting[:skipped]])
            )
        first = newest_keeping_alarms(waiting[: skipped + 1])
        played = [first, *waiting[skipped + 1 :]]
        norms = np.stack([item[1] for item in played])
        missing = np.stack([item[2] for item in played])
        accents = np.concatenate([spikes[: skipped + 1].any(axis=0, keepdims=True), spikes[skipped + 1 :]])
        steps = np.array([item[0] for item in played])
        samples = self.sounder.samples(self.sounder.score(norms, missing, accents, steps))
        if self.timeline is not None:
            start = self.stream.written
            self.timeline += [(start + i * self.synth.step_samples, item[0], item[3]) for i, item in enumerate(played)]
        self.stream.write(samples, block=False)
        self.played += keep

    def close(self, drain: bool = True) -> LiveReport:
        """Play what is due (everything when pacing), stop the stream and report."""
        self._closing = True
        self._idle = True
        self._abort = not drain
        self._wake.set()
        self._thread.join()
        self.stream.close(drain=drain)
        return LiveReport(self.stream.device_name, self.played, self.skipped, self.stream.underruns, self.failure)


def newest_keeping_alarms(batch: list[tuple[int, np.ndarray, np.ndarray, float]]) -> tuple:
    """The newest of several waiting steps, with the alarm of any layer that was NaN/Inf in the others."""
    step, norms, missing, when = batch[-1]
    alarm = np.zeros(len(norms), bool)
    for _, older_norms, older_missing, _ in batch[:-1]:
        alarm |= ~np.isfinite(older_norms) & ~older_missing
    if alarm.any():
        norms = np.where(alarm, np.nan, norms)
        missing = missing & ~alarm
    return step, norms, missing, when
