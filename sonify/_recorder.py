"""A Sonifier's background thread, and the sinks it writes each block of rows to.

The training thread only hands finished steps to a queue. The
:class:`Recorder` wakes at most once per flush interval, combines the steps
into rows, keeps the run's totals (:class:`~sonify.stats.RunStats`), finds
spikes once (with the run's :class:`~sonify.sound.Sounder`), and gives the
same :class:`Rows` to every sink through one small interface (:class:`Sink`:
``write``, ``flush``, ``close``): the norm log, the audio file, the
trackers and the live notebook player. A sink that fails (a full disk, a removed folder) stops alone; the
failure waits in :attr:`Recorder.news` for the training thread to say it,
and the other sinks go on.

The live player is not fed by this thread: its sound is due within a step,
and this thread wakes once per flush interval (half a second by default), so
the training thread hands steps to it directly (:class:`LiveFeed`, a deque
append per step).
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from . import _messages
from ._errors import SonifyError, one_line
from ._messages import Part
from ._pipelines import AudioPipeline, LivePlayer, LiveReport
from .live_notebook import NotebookFeed
from .normfile import NormLogWriter
from .norms import RunDigest, StepNorms, layer_rows
from .rendering import render
from .sound import Sounder, SoundSettings
from .stats import DEAD_STEPS, RunStats

__all__ = [
    "AudioSink",
    "LiveFeed",
    "NormLogSink",
    "NotebookSink",
    "Recorder",
    "Rows",
    "Sink",
    "TrackerSink",
    "audio_file_from_log",
    "condense_audio_file",
]


class Rows(NamedTuple):
    """A block of steps as every sink gets it."""

    steps: np.ndarray  # int64, (steps,)
    norms: np.ndarray  # float64, (steps, layers)
    missing: np.ndarray  # bool, (steps, layers)
    accents: np.ndarray  # bool, (steps, layers): the spikes, found once


class Sink(Protocol):
    """Where rows go: written as they come, flushed so a reader sees them, closed once at the end."""

    part: Part
    path: Path | None

    def write(self, rows: Rows) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NormLogSink:
    """Rows into the CSV norm log (whole lines, unbuffered: readable after each write)."""

    part = Part.NORM_LOG

    def __init__(self, writer: NormLogWriter) -> None:
        self.writer = writer
        self.path: Path | None = writer.path

    def write(self, rows: Rows) -> None:
        self.writer.append(rows.steps, rows.norms, rows.missing)

    def flush(self) -> None:
        """Nothing to do: every write is whole lines on an unbuffered file."""

    def close(self) -> None:
        self.writer.close()


class AudioSink:
    """Rows into the audio file, at most ``limit`` frames while training runs (see :attr:`cut`)."""

    part = Part.AUDIO

    def __init__(self, pipeline: AudioPipeline, limit: int | None = None) -> None:
        self.pipeline = pipeline
        self.path: Path | None = pipeline.writer.path
        self._limit = limit
        #: Whether the run outgrew the limit: the file is condensed when the run ends.
        self.cut = False

    def write(self, rows: Rows) -> None:
        norms, missing, accents = rows.norms, rows.missing, rows.accents
        if self._limit is not None:
            room = max(0, (self._limit - self.pipeline.writer.frames) // self.pipeline.sounder.step_samples)
            if room < len(norms):  # the file is full: the rest of the run is heard in its condensed form
                self.cut = True
                norms, missing, accents = norms[:room], missing[:room], accents[:room]
                if not len(norms):
                    return
        self.pipeline.feed(norms, missing, accents)

    def flush(self) -> None:
        self.pipeline.writer.flush()  # the WAV header follows the log: readable after kill -9

    def close(self) -> None:
        self.pipeline.close()


class TrackerSink:
    """Rows into the run's digest (the trackers' and notebooks' sound) and, when asked, the trackers' norm rows."""

    part = Part.TRACKERS
    path: Path | None = None

    def __init__(self, digest: RunDigest, trackers: Any = None, layer_names: Sequence[str] = ()) -> None:
        self.digest = digest
        self.trackers = trackers  # a sonify.trackers.TrackerLog, or None
        self._names = tuple(layer_names)

    def write(self, rows: Rows) -> None:
        self.digest.add(rows.steps, rows.norms, rows.missing, rows.accents)
        if self.trackers is not None:
            self.trackers.add_rows(rows.steps, rows.norms, rows.missing, self._names)

    def flush(self) -> None:
        """Nothing to do: the trackers' own thread sends what is due."""

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.finish()


class NotebookSink:
    """Rows into the live notebook player (scored here; sent from the cell's thread, see live_notebook)."""

    part = Part.NOTEBOOK
    path: Path | None = None

    def __init__(self, feed: NotebookFeed) -> None:
        self.feed = feed

    def write(self, rows: Rows) -> None:
        self.feed.add(rows.steps, rows.norms, rows.missing, rows.accents)

    def flush(self) -> None:
        """Nothing to do: the training thread sends what is ready."""

    def close(self) -> None:
        """Nothing to do: the Sonifier ends the player after the recorder (its replay is the whole run)."""


class LiveFeed:
    """The live player as the training thread feeds it: finished steps at once, pacing when asked."""

    part = Part.LIVE

    def __init__(self, player: LivePlayer, *, pace: bool = False) -> None:
        self.player = player
        self._pace = pace
        self._last_step = 0  # the last step handed over

    def write(self, items: Sequence[StepNorms], steps_recorded: int) -> str | None:
        """Hand steps over (their layer norms are combined here); with ``pace``, wait for the sound.

        Returns why live sound stopped, once it has.
        """
        self.push(items)
        failure = self.player.failure
        if failure is None and self._pace:
            self.player.wait_for_pace(steps_recorded - self._last_step)
        return failure

    def push(self, items: Sequence[StepNorms]) -> None:
        now = time.perf_counter()
        for item in items:
            self.player.push(item.step, item.norms, item.missing, now)
        if items:
            self._last_step = items[-1].step

    def close(self, drain: bool = True) -> LiveReport:
        return self.player.close(drain=drain)


class Recorder:
    """The background thread: finished steps in, the totals kept, every sink given the same rows."""

    _CLOSE = object()

    def __init__(
        self,
        stats: RunStats,
        sounder: Sounder,
        sinks: Sequence[Sink],
        flush_interval: float,
        *,
        paths: dict[str, Path | None] | None = None,
    ) -> None:
        self.stats = stats
        self._sounder = sounder  # spikes for the totals; the same accents sound in the audio file
        self._sinks: list[Sink] = list(sinks)
        #: What stopped early, by part, and why.
        self.failures: dict[str, str] = {}
        self._paths: dict[str, Path | None] = {str(sink.part): sink.path for sink in sinks} | (paths or {})
        self._news: deque[str] = deque()
        self._interval = flush_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonify-recorder", daemon=True)
        self._thread.start()

    @property
    def news(self) -> bool:
        """Whether there is something to report."""
        return bool(self._news)

    def take_news(self) -> list[str]:
        news = []
        while self._news:
            news.append(self._news.popleft())
        return news

    def put(self, item: StepNorms) -> None:
        self._queue.put(item)

    def fail(self, part: str, reason: str, *, step: int | None = None) -> None:
        """Stop ``part`` and queue one warning about it (only the first failure of a part counts)."""
        self.fail_many({part: reason}, step=step)

    def fail_many(self, reasons: dict[str, str], *, step: int | None = None) -> None:
        """Stop several parts that failed together (a full disk), with one warning for them all.

        ``step``: the step being written or read when they failed; None at close.
        """
        reasons = {str(part): reason for part, reason in reasons.items() if str(part) not in self.failures}
        if not reasons:
            return
        self.failures.update(reasons)
        self._sinks = [sink for sink in self._sinks if sink.part not in reasons]
        going = [sink.part for sink in self._sinks if sink.part is not Part.TRACKERS]
        self._news.append(_messages.parts_stopped(list(reasons), self._paths, list(reasons.values()), step, going))

    def close(self) -> None:
        """Write what is queued and stop the thread (idempotent). The sinks are closed by their owner."""
        if not self._closing.is_set():
            self._closing.set()
            self._queue.put(self._CLOSE)
        self._thread.join()

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()  # idle until a step arrives: no polling
            if first is not self._CLOSE:
                # Let steps gather for one interval: one wake-up per interval, not per step.
                self._closing.wait(self._interval)
            items = [first]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = any(item is self._CLOSE for item in items)
            rows = [item for item in items if item is not self._CLOSE]
            if rows:
                self._write(rows)

    def _write(self, items: list[Any]) -> None:
        steps, norms, missing = layer_rows(items)
        stats = self.stats
        first_bad, first_spike = stats.first_nonfinite_step, stats.first_spike_step
        new_missing = (stats.missing_counts == 0) & missing.any(axis=0)
        spikes, ratios = self._sounder.detect(norms, missing)
        stats.update(steps, norms, missing, spikes, ratios)
        stats.count_off_scale(self._sounder.off_scale(norms, missing))
        rows = Rows(steps, norms, missing, spikes)
        failed = {}
        for sink in list(self._sinks):
            try:
                sink.write(rows)
                sink.flush()
            except Exception as exc:  # disk full, folder removed...: this sink stops, training goes on
                failed[str(sink.part)] = one_line(exc)
        self.fail_many(failed, step=int(steps[0]))
        if first_spike is None and stats.first_spike_step is not None:
            factor = stats.first_spike_factor if stats.first_spike_factor is not None else float("nan")
            self._news.append(_messages.first_spike(stats.first_spike_step, stats.first_spike_layers, factor))
        if first_bad is None and stats.first_nonfinite_step is not None:
            self._news.append(_messages.first_nonfinite(stats.first_nonfinite_step, stats.first_nonfinite_layers))
        for name in (n for n, new in zip(stats.layer_names, new_missing) if new):
            self._news.append(_messages.no_gradient(name))
        for name, step in stats.newly_dead():
            self._news.append(_messages.dead_layer(name, step, DEAD_STEPS))


def condense_audio_file(
    path: Path, digest: RunDigest, sound: SoundSettings, seconds: float, log_path: Path
) -> dict[str, Any]:
    """Replace an audio file cut at ``seconds`` by the whole run (its digest) condensed into that length.

    Written beside it under a hidden name, then moved over it: a reader (or a
    failure half-way) sees the old file or the new one, never half of one.
    Returns what was condensed (for the run's summary).
    """
    # The condensed file is at most as long as the one it replaces: never take the last of a disk
    # that the run's checkpoints share for it (keep the file cut at the bound instead).
    needed = 2 * path.stat().st_size
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise SonifyError(_messages.not_condensed(free / 1e6, needed / 1e6, seconds, log_path))
    partial = path.with_name(f".{path.stem}.condensing{path.suffix}")
    try:
        result = render(digest.log(), partial, sound=sound, duration=seconds, overwrite=True)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {
        "steps": digest.steps_seen,
        # Each digest row holds `window` steps; render combined up to ceil(rows / windows) rows per tone.
        "steps_per_tone": digest.window * (math.ceil(result.steps / result.windows) if result.windows else 1),
        "seconds": round(result.duration, 3),
    }


def audio_file_from_log(
    log_path: Path, audio_path: Path, sound: SoundSettings, seconds: float | None, *, overwrite: bool
) -> dict[str, Any] | None:
    """The audio file of a ``norm_range="auto"`` run: the whole norm log, with the range fitted to it.

    Returns what was condensed when the run is longer than ``seconds``, else None.
    """
    result = render(log_path, audio_path, sound=sound, duration=seconds, overwrite=overwrite, drop_incomplete=True)
    if result.windows is None:
        return None
    return {
        "steps": result.steps,
        "steps_per_tone": math.ceil(result.steps / result.windows),
        "seconds": round(result.duration, 3),
    }
