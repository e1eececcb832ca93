"""Follow a norm log that another process is still writing, and hear it live.

``sonify play --follow RUN.norms.csv`` (or :func:`follow`) plays a log as it
grows: on this machine, or on a shared or mounted folder (NFS, sshfs: the
file is polled, no change events are needed), or from standard input, so
that a run on a remote machine is heard through ssh::

    ssh gpu-box tail -n +1 -F runs/x.norms.csv | sonify play --follow -

What it copes with:

* a log that does not exist yet: it waits (``wait`` seconds at most), saying so once;
* a half-written last line: it waits for the rest, and never plays a partial row;
* a log truncated or replaced by a new run (or a new header on standard
  input): it says so and starts the new run;
* a training loop faster than the sound: the same latency policy as
  ``train --live`` (the newest step is played, every NaN/Inf alarm and every
  spike is kept, the skipped steps are counted);
* a folder of runs (``audio_out/``): the newest ``.norms.csv`` in it, and
  the next one as soon as a newer run starts writing there.

:func:`follow_events` is the reading half (also what ``sonify serve``
streams): it turns any of these sources into one sequence of events.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ._errors import SonifyError, SonifyParameterError, one_line
from .importers import DEFAULT_TAG_PATTERN, layer_of
from .normfile import STEP_COLUMNS, parse_row, split_csv_line
from .sound import SoundSettings
from .sources import SourceKind, source_kind
from .stream import DEFAULT_LATENCY, resolve_output_device

__all__ = ["FollowReport", "check_followable", "follow", "follow_events"]

#: Seconds between looks at a file that has not grown (also what a mounted folder needs: no inotify).
POLL_INTERVAL = 0.05
#: Bytes at the start of a followed file that are read again before each read: if they changed, the
#: file was rewritten in place by another run.
PREFIX_BYTES = 4096


@dataclass(frozen=True)
class FollowReport:
    """What :func:`follow` heard."""

    source: str
    runs: int
    steps: int
    played: int
    skipped: int
    underruns: int
    bad_lines: int

    def describe(self) -> str:
        """One line for the end of ``sonify play --follow``."""
        text = f"followed {self.source}: {self.steps} steps"
        if self.runs > 1:
            text += f" in {self.runs} runs"
        text += f", {self.played} played, {self.skipped} skipped to keep up (alarms and spikes kept)"
        text += f", {self.underruns} underruns"
        if self.bad_lines:
            text += f", {self.bad_lines} unreadable lines ignored"
        return text


class _Run:
    """The columns of one run's header, and how its rows are read."""

    def __init__(self, header: list[str], where: str) -> None:
        names = [name.strip().lstrip("\ufeff") for name in header]
        step_column = next((i for i, name in enumerate(names) if name.lower() in STEP_COLUMNS), None)
        if step_column is None or len(names) < 2:
            raise SonifyError(
                f"{where}: expected a norm log header with a step column ({', '.join(STEP_COLUMNS)}) and one "
                f"column per layer; found {names[:6]}"
            )
        self.step_column = step_column
        self.columns = [i for i in range(len(names)) if i != self.step_column]
        self.layer_names = tuple(names[i] for i in self.columns)
        self.width = len(names)

    def parse(self, cells: list[str]) -> tuple[int, np.ndarray, np.ndarray] | None:
        """A row, or None when it is not one (wrong width, not numbers, negative norms)."""
        if len(cells) != self.width:
            return None
        try:
            step, values, gaps = parse_row(cells, self.step_column, self.columns)
        except ValueError:
            return None
        norms, missing = np.array(values), np.array(gaps)
        if (norms[~missing] < 0).any():
            return None
        return step, norms, missing


def _is_header(cells: list[str]) -> bool:
    return any(cell.strip().lstrip("\ufeff").lower() in STEP_COLUMNS for cell in cells)


def _lines_of_file(path: Path, wait: float | None, notice: Callable[[str], None]) -> Iterator[str | None]:
    """Complete lines of a growing file (None between polls); ``"\\0new"`` when it was truncated or replaced."""
    deadline = None if wait is None else time.monotonic() + wait
    if not path.exists():
        notice(f"waiting for {path} to appear (Ctrl-C to stop)")
    while not path.exists():
        if deadline is not None and time.monotonic() > deadline:
            raise SonifyError(f"{path} did not appear within {wait:g} s; check the path, or give a longer {{wait}}")
        time.sleep(0.1)
        yield None
    if path.is_dir():
        raise SonifyParameterError(f"{path} is a folder; give the .norms.csv file of the run, or - for standard input")
    while True:
        file = open(path, "rb")  # noqa: SIM115  kept open across the generator's pauses
        try:
            identity = os.fstat(file.fileno()).st_ino
            pending = prefix = b""
            while True:
                if prefix and os.pread(file.fileno(), len(prefix), 0) != prefix:
                    break  # rewritten in place (`cp new.csv x.norms.csv`), even by a longer run
                chunk = file.read(1 << 16)
                if chunk:
                    if len(prefix) < PREFIX_BYTES:
                        prefix += chunk[: PREFIX_BYTES - len(prefix)]
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", errors="replace")
                    continue
                if _was_replaced(path, file, identity):
                    break
                yield None
                time.sleep(POLL_INTERVAL)
        finally:
            file.close()
        yield "\0new"
        while not path.exists():
            time.sleep(0.1)
            yield None


def _was_replaced(path: Path, file: IO[bytes], identity: int) -> bool:
    """The path now names another file (a new run), or ours shrank (truncated and rewritten)."""
    try:
        if os.stat(path).st_ino != identity:
            return True
    except FileNotFoundError:
        return False  # removed: keep reading what we have; a new file is noticed when it appears
    return os.fstat(file.fileno()).st_size < file.tell()


def _lines_of_stream(stream: IO[str] | Callable[[], IO[str]]) -> Iterator[str | None]:
    """Lines of a pipe, read on a thread so the caller can still be interrupted; None while waiting.

    ``stream`` may be a function that opens it: opening a FIFO waits for its
    writer, and that wait belongs on the reading thread too.
    """
    lines: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        try:
            with stream() if callable(stream) else contextlib.nullcontext(stream) as opened:
                for line in opened:
                    lines.put(line)
        except (OSError, ValueError) as exc:
            lines.put(exc)
        lines.put(None)

    threading.Thread(target=read, name="sonify-stdin", daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            yield None
            continue
        if line is None:
            return
        if isinstance(line, Exception):
            raise SonifyError(f"cannot read the followed input: {type(line).__name__}: {line}")
        if line.endswith("\n"):
            yield line[:-1]
        # A last line without newline at the end of the stream is a partial row: never played.


def _csv_events(lines: Iterator[str | None], label: str, counts: dict) -> Generator[tuple | None, None, None]:
    """("run", layer names) / ("row", step, norms, missing) / ("new", why) / None (nothing yet), from CSV lines."""
    run: _Run | None = None
    last_step = None
    for line in lines:
        if line is None:
            yield None
            continue
        if line == "\0new":
            run, last_step = None, None
            yield ("new", f"{label} was truncated or replaced: a new run; starting over")
            continue
        if not line.strip():
            continue
        try:
            cells = split_csv_line(line)
        except ValueError:
            counts["bad"] += 1  # garbage (a field over the csv limit): skipped like any unreadable line
            continue
        if run is None or (_is_header(cells) and run.parse(cells) is None):
            if run is not None:
                yield ("new", f"a new header in {label}: a new run; starting over")
            run, last_step = _Run(cells, label), None
            yield ("run", run.layer_names)
            continue
        row = run.parse(cells)
        if row is None or (last_step is not None and row[0] <= last_step):
            counts["bad"] += 1  # a torn or garbled line (a copy tool's), never a partial row played
            continue
        last_step = row[0]
        yield ("row", *row)


def _tensorboard_events(path: Path, tags: str, wait: float | None, notice: Callable) -> Iterator[tuple | None]:
    """The same events from a TensorBoard run folder or event file that is still being written.

    Each poll reads only what was added (:class:`~sonify.importers.ScalarTail`);
    only steps not yet played are held. A layer whose first value comes later
    (a backbone unfrozen after some epochs, a parameter that only now has a
    gradient) joins the sound (``("layers", names, why)``); a step that goes
    back to or before one already heard for a layer is a new run in the same
    folder (``("new", why)``).
    """
    from .importers import ScalarTail

    pattern = re.compile(tags)
    deadline = None if wait is None else time.monotonic() + wait
    if not path.exists():
        notice(f"waiting for {path} to appear (Ctrl-C to stop)")
    while not path.exists():  # a run folder that training has not made yet
        if deadline is not None and time.monotonic() > deadline:
            raise SonifyError(f"{path} did not appear within {wait:g} s; check the path, or give a longer {{wait}}")
        time.sleep(0.1)
        yield None
    if source_kind(path) is SourceKind.CSV:  # what appeared is a log after all
        yield from _csv_events(_lines_of_file(path, wait, notice), str(path), {"bad": 0})
        return
    tail = ScalarTail(path)
    rows = _ScalarRows(pattern, path)
    notice(f"waiting for TensorBoard scalars matching {tags!r} in {path} (Ctrl-C to stop)")
    while True:
        try:
            for tag, step, value in tail.read():
                yield from rows.add(tag, step, value)
                if len(rows.pending) > MAX_PENDING_STEPS:  # a long run's first look: rows go on as they come
                    yield from rows.complete()
        except OSError as exc:
            raise SonifyError(f"{path}: cannot read TensorBoard events ({one_line(exc)})") from None
        if rows.layers:
            yield from rows.complete()
        elif deadline is not None and time.monotonic() > deadline:
            seen = ", ".join(sorted(rows.names_of)[:8]) or "none yet"
            raise SonifyError(
                f"{path}: no scalar tag matching {tags!r} within {wait:g} s (scalars: {seen}); "
                "give the tags of your gradient norms with {tags}"
            )
        rows.touched.clear()
        yield None
        time.sleep(0.25)


def _newest_log(folder: Path) -> Path | None:
    """The norm log in ``folder`` that a run wrote to last."""
    logs = []
    for path in folder.glob("*.norms.csv"):
        with contextlib.suppress(OSError):  # removed meanwhile
            logs.append((path.stat().st_mtime, path.name, path))
    return max(logs)[2] if logs else None


#: Seconds between looks at a folder of runs for a newer log.
RUNS_POLL_INTERVAL = 1.0


def _runs_events(folder: Path, wait: float | None, notice: Callable, counts: dict) -> Iterator[tuple | None]:
    """The events of the newest log in a folder of runs, then of each newer one that appears.

    Also ``("runs", names, current)``: every log in the folder, and the one being followed.
    """
    current = None
    while True:
        newest = _newest_log(folder)
        if newest is None:  # the logs were removed: wait for the next run
            yield None
            time.sleep(RUNS_POLL_INTERVAL)
            continue
        if current is not None:
            yield ("new", f"a new run in {folder}: {newest.name}; starting over")
        current = newest
        yield ("runs", sorted(path.name for path in folder.glob("*.norms.csv")), current.name)
        events = _csv_events(_lines_of_file(current, wait, notice), str(current), counts)
        looked = time.monotonic()
        for event in events:
            yield event
            if event is None and time.monotonic() - looked > RUNS_POLL_INTERVAL:
                looked = time.monotonic()
                newer = _newest_log(folder)
                if newer is not None and newer != current and newer.stat().st_mtime > current.stat().st_mtime:
                    events.close()
                    break


def check_followable(source: str | os.PathLike, tags: str = DEFAULT_TAG_PATTERN) -> None:
    """Raise a one-line :class:`SonifyParameterError` when ``source`` exists and cannot be a growing run.

    An audio file; a file whose first line is not a norm log header; a
    TensorBoard run whose scalars exist but none match ``tags``. What does
    not exist yet is waited for.
    """
    kind = source_kind(source, audio=True)
    path = Path(source)
    if kind is SourceKind.AUDIO:
        raise SonifyParameterError(
            f"{source} is an audio file; give a norm log (.norms.csv), a folder of runs, a TensorBoard run or -"
        )
    if kind is SourceKind.CSV and path.is_file():
        with open(path, encoding="utf-8", errors="replace") as file:
            first = file.readline()
        if first.endswith("\n"):
            try:
                _Run(split_csv_line(first.rstrip("\n")), str(path))
            except (SonifyError, ValueError) as exc:
                raise SonifyParameterError(f"{path} is not a norm log: {one_line(exc)}") from None
    if kind is SourceKind.TENSORBOARD and path.exists():
        from .importers import ScalarTail, check_tag_pattern

        pattern = re.compile(check_tag_pattern(tags))
        try:
            found = {tag for tag, _, _ in ScalarTail(path).read()}
        except OSError as exc:
            raise SonifyError(f"{path}: cannot read TensorBoard events ({one_line(exc)})") from None
        if found and not any(pattern.search(tag) for tag in found):
            seen = ", ".join(sorted(found)[:8])
            raise SonifyParameterError(
                f"{path}: no scalar tag matches {tags!r} (scalars: {seen}); give the tags of your gradient norms "
                "with {tags}"
            )


def follow_events(
    source: str | os.PathLike,
    *,
    wait: float | None = None,
    tags: str = DEFAULT_TAG_PATTERN,
    notice: Callable[[str], None] = print,
    stdin: IO[str] | None = None,
    counts: dict | None = None,
) -> Iterator[tuple | None]:
    """The events of a source that is still being written, in order.

    ``("run", layer names)`` when a run starts; ``("row", step, norms,
    missing)`` per step; ``("layers", names, why)`` when a TensorBoard layer
    joins; ``("new", why)`` when the source starts over with a new run;
    ``("runs", names, current)`` for a folder of runs; None when nothing is
    new (poll again). ``counts["bad"]`` counts unreadable lines.
    """
    counts = {"bad": 0} if counts is None else counts
    label = "standard input" if str(source) == "-" else str(source)
    path = Path(source)
    kind = source_kind(source)
    if kind is SourceKind.STDIN:
        return _csv_events(_lines_of_stream(stdin or sys.stdin), label, counts)
    if kind is SourceKind.PIPE:  # a FIFO, `<(ssh box tail -f ...)`
        opener = functools.partial(open, path, encoding="utf-8", errors="replace")  # opened (and closed) by the reader
        return _csv_events(_lines_of_stream(opener), label, counts)
    if kind is SourceKind.RUNS:
        return _runs_events(path, wait, notice, counts)
    if kind is SourceKind.TENSORBOARD:  # also a run folder that training has not made yet
        return _tensorboard_events(path, tags, wait, notice)
    return _csv_events(_lines_of_file(path, wait, notice), label, counts)


#: Steps a TensorBoard follower holds before it hands complete ones on in the middle of a look.
MAX_PENDING_STEPS = 256


class _ScalarRows:
    """Scalars of a TensorBoard run in, the follower's events out: rows, a new run, a layer that joins.

    Only steps not yet handed on are held. A step is complete once a later
    step has begun, or once every layer has a value and none came in the last
    poll (``touched``). A layer whose first value comes later joins the sound;
    a step that goes back to or before one already seen for a layer is a new
    run in the same folder.
    """

    def __init__(self, pattern: re.Pattern, path: Path) -> None:
        self.pattern, self.path = pattern, path
        self.names_of: dict[str, str | None] = {}  # tag -> layer (None: not a norm)
        self.pending: dict[int, dict[str, float]] = {}
        self.layers: set[str] = set()
        self.heard: tuple[str, ...] = ()  # the layers the player has
        self.last: dict[str, int] = {}  # newest step of each layer
        self.played: int | None = None  # newest step handed on
        self.touched: set[int] = set()  # steps that got a value in this poll

    def add(self, tag: str, step: int, value: float) -> Iterator[tuple]:
        if tag not in self.names_of:
            found = self.pattern.search(tag)
            self.names_of[tag] = layer_of(found, tag) if found else None
        name = self.names_of[tag]
        if name is None:
            return
        if name in self.last and step <= self.last[name]:  # steps went back: a new run in the same folder
            yield from self._rows(everything=True)
            yield (
                "new",
                f"{self.path}: {name} went back from step {self.last[name]} to {step}: a new run; starting over",
            )
            self.pending, self.layers, self.heard, self.last, self.played = {}, set(), (), {}, None
            self.touched.clear()
        self.last[name] = step
        if self.played is not None and step <= self.played:
            return  # a value for a step already heard (its layer came late): the next steps have it
        self.layers.add(name)
        self.pending.setdefault(step, {})[name] = value
        self.touched.add(step)

    def complete(self) -> Iterator[tuple]:
        """The complete steps' rows, in order, after the player is told of the layers they have."""
        if not self.pending or not self._complete(min(self.pending), max(self.pending)):
            return
        everyone = tuple(sorted(self.layers))
        if self.heard != everyone:
            new = sorted(self.layers - set(self.heard))
            first = min(step for step, values in self.pending.items() if set(new) & set(values))
            if self.heard:  # the steps before the new layer's first are heard with the voices they had
                yield from self._rows(before=first)
                yield ("layers", everyone, f"{', '.join(new)} heard from step {first} on")
            else:
                yield ("run", everyone)
            self.heard = everyone
        yield from self._rows()

    def _complete(self, step: int, newest: int) -> bool:
        return step < newest or (len(self.pending[step]) >= len(self.layers) and step not in self.touched)

    def _rows(self, everything: bool = False, before: int | None = None) -> Iterator[tuple]:
        newest = max(self.pending) if self.pending else 0
        for step in sorted(self.pending):
            if (before is not None and step >= before) or not (everything or self._complete(step, newest)):
                break
            values = self.pending.pop(step)
            if self.heard:
                self.played = step
                norms = np.array([values.get(name, math.nan) for name in self.heard])
                missing = np.array([name not in values for name in self.heard])
                yield ("row", step, norms, missing)


def follow(
    source: str | os.PathLike,
    *,
    output_device: int | str | None = None,
    sound: SoundSettings | None = None,
    latency: float = DEFAULT_LATENCY,
    wait: float | None = None,
    tags: str = DEFAULT_TAG_PATTERN,
    notice: Callable[[str], None] = print,
    stdin: IO[str] | None = None,
) -> FollowReport:
    """Play a norm log live while another process writes it; returns when the input ends.

    Parameters
    ----------
    source : path or "-"
        The ``.norms.csv`` being written, ``"-"`` for standard input, or a
        TensorBoard run folder (or event file) whose scalars hold per-layer
        gradient norms (see :data:`sonify.importers.DEFAULT_TAG_PATTERN`).
    output_device, latency
        The sound card and its buffering, as for :func:`sonify.play`.
    sound : SoundSettings, optional
        Fixed bounds only: ``norm_range="auto"`` needs the whole run.
    wait : float, optional
        Seconds to wait for the file (or the first matching TensorBoard
        scalar) to appear; None waits for ever.
    tags : str
        For TensorBoard: the regular expression of the scalar tags to hear.
    notice : callable
        Receives one-line notices (waiting, a new run).

    Returns
    -------
    FollowReport
        When standard input ends. A file is followed until Ctrl-C
        (``KeyboardInterrupt``, re-raised with the report attached as ``report``).
    """
    from ._pipelines import LivePlayer

    sound = sound or SoundSettings()
    if isinstance(sound.norm_range, str):
        raise SonifyParameterError(
            "a followed run is heard as it grows, so norm_range='auto' (the whole run) is not possible; "
            "give fixed bounds LOW:HIGH or leave it out"
        )
    if wait is not None and not (math.isfinite(wait) and wait >= 0):
        raise SonifyParameterError(f"wait={wait!r} is invalid; give seconds >= 0")
    label = "standard input" if str(source) == "-" else str(source)
    totals = {"runs": 0, "steps": 0, "played": 0, "skipped": 0, "underruns": 0, "bad": 0}
    resolve_output_device(output_device)  # no sound card is said now, not when the first row arrives
    events = follow_events(source, wait=wait, tags=tags, notice=notice, stdin=stdin, counts=totals)
    pitch_map = sound.pitch_map()
    player = None

    def finish(drain: bool) -> None:
        nonlocal player
        if player is not None:
            report = player.close(drain=drain)
            totals["played"] += report.played
            totals["skipped"] += report.skipped
            totals["underruns"] += report.underruns
            player = None

    def report() -> FollowReport:
        return FollowReport(
            label,
            totals["runs"],
            totals["steps"],
            totals["played"],
            totals["skipped"],
            totals["underruns"],
            totals["bad"],
        )

    try:
        for event in events:
            if event is None:
                if player is not None and player.failure is not None:
                    raise SonifyError(f"live playback stopped: {player.failure}")
            elif event[0] == "runs":
                continue
            elif event[0] == "new":
                notice(event[1])
                finish(drain=True)
            elif event[0] in ("run", "layers"):
                finish(drain=True)
                player = LivePlayer(sound.sounder(len(event[1]), pitch_map), device=output_device, latency=latency)
                if event[0] == "run":
                    totals["runs"] += 1
                else:
                    notice(event[2])
            else:
                _, step, norms, missing = event
                totals["steps"] += 1
                assert player is not None, "rows come after their header"
                player.push(step, norms, missing, time.perf_counter())
    except KeyboardInterrupt as interrupt:
        finish(drain=False)
        interrupt.report = report()  # type: ignore[attr-defined]  # the CLI prints what was heard
        raise
    except BaseException:
        finish(drain=False)
        raise
    finish(drain=True)
    if totals["runs"] == 0:
        raise SonifyError(f"{label} ended before a norm log header arrived; it is not a norm log")
    return report()
