"""The norm log: the run's gradient norms on disk, the source of truth.

A norm log is two files side by side:

``<name>.norms.csv``
    A header ``step,<layer 1>,<layer 2>,...`` and one row per optimizer step
    (steps count from 1). A cell holds the L2 norm of the layer's gradient,
    ``nan``/``inf`` when it was not finite, and is **empty** when the layer
    had no gradient at that step (frozen or unused). Rows are appended in
    whole lines and flushed at least once a second, so a killed run keeps
    every row up to the last flush.
``<name>.norms.json``
    The run's metadata: layer names, settings, versions, and at the end a
    summary. Optional: the CSV alone is a complete log.

Both read without sonify::

    import csv, numpy as np
    rows = list(csv.DictReader(open("run.norms.csv")))
    norms = np.genfromtxt("run.norms.csv", delimiter=",", names=True)

(numpy reads empty cells as NaN; ``load_norms`` keeps them apart from real NaN.)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._errors import SonifyError, SonifyIOError, SonifyParameterError
from ._files import check_new_file, create_exclusive, os_error_reason

__all__ = [
    "NormLog",
    "NormLogWriter",
    "RunDigest",
    "RunStats",
    "StepNorms",
    "as_norm_log",
    "format_norms",
    "load_norms",
    "log_paths",
]

_LOG_SUFFIX = ".norms.csv"
_META_SUFFIX = ".norms.json"


def log_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    """CSV and JSON paths of the norm log that belongs to ``base``.

    ``base`` may be the audio file (``run.wav``), the log (``run.norms.csv``)
    or the bare stem (``run``).

    Examples
    --------
    >>> [p.name for p in log_paths("audio_out/run.wav")]
    ['run.norms.csv', 'run.norms.json']
    """
    path = Path(base)
    name = path.name
    for suffix in (_LOG_SUFFIX, _META_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem if path.suffix.lower() in (".wav", ".flac", ".csv", ".json") else name
    return path.with_name(name + _LOG_SUFFIX), path.with_name(name + _META_SUFFIX)


class RunStats:
    """Running totals of a run's norms: what the end-of-run summary reports.

    Updated block by block, so it costs nothing to keep during training.

    Examples
    --------
    >>> stats = RunStats(["a", "b"])
    >>> stats.update(np.array([1, 2]), np.array([[0.5, np.nan], [2.0, 1.0]]), np.zeros((2, 2), bool))
    >>> stats.steps, stats.nonfinite_steps, stats.first_nonfinite_step, stats.ranges()["a"]
    (2, 1, 1, (0.5, 2.0))
    """

    def __init__(self, layer_names: Sequence[str]) -> None:
        self.layer_names = tuple(layer_names)
        count = len(self.layer_names)
        self.steps = 0
        self.last_step: int | None = None
        self.nonfinite_steps = 0
        self.first_nonfinite_step: int | None = None
        self.first_nonfinite_layers: tuple[str, ...] = ()
        self.missing_counts = np.zeros(count, dtype=np.int64)
        self.spike_steps = 0
        self.first_spike_step: int | None = None
        self.first_spike_layers: tuple[str, ...] = ()
        self.first_spike_factor: float | None = None
        self._low = np.full(count, np.inf)
        self._high = np.full(count, -np.inf)

    def update(
        self,
        steps: np.ndarray,
        norms: np.ndarray,
        missing: np.ndarray,
        spikes: np.ndarray | None = None,
        ratios: np.ndarray | None = None,
    ) -> None:
        """Add a block of rows (with their spikes and ratios to the running median, if known)."""
        if len(steps) == 0:
            return
        if spikes is not None:
            spiking = np.flatnonzero(spikes.any(axis=1))
            if spiking.size and self.first_spike_step is None:
                first = spiking[0]
                self.first_spike_step = int(steps[first])
                self.first_spike_layers = tuple(n for n, s in zip(self.layer_names, spikes[first]) if s)
                if ratios is not None:
                    self.first_spike_factor = float(np.nanmax(np.where(spikes[first], ratios[first], np.nan)))
            self.spike_steps += int(spiking.size)
        finite = np.isfinite(norms)
        bad_rows = np.flatnonzero((~finite & ~missing).any(axis=1))
        if bad_rows.size and self.first_nonfinite_step is None:
            first = bad_rows[0]
            self.first_nonfinite_step = int(steps[first])
            bad = ~finite[first] & ~missing[first]
            self.first_nonfinite_layers = tuple(n for n, b in zip(self.layer_names, bad) if b)
        self.nonfinite_steps += int(bad_rows.size)
        self.missing_counts += missing.sum(axis=0)
        self._low = np.fmin(self._low, np.where(finite, norms, np.inf).min(axis=0))
        self._high = np.fmax(self._high, np.where(finite, norms, -np.inf).max(axis=0))
        self.steps += len(steps)
        self.last_step = int(steps[-1])

    def ranges(self) -> dict[str, tuple[float, float] | None]:
        """(min, max) of each layer's finite norms; None for a layer that had none."""
        return {
            name: (float(lo), float(hi)) if lo <= hi else None
            for name, lo, hi in zip(self.layer_names, self._low, self._high)
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "steps": self.steps,
            "last_step": self.last_step,
            "nonfinite_steps": self.nonfinite_steps,
            "first_nonfinite_step": self.first_nonfinite_step,
            "first_nonfinite_layers": list(self.first_nonfinite_layers),
            "spike_steps": self.spike_steps,
            "first_spike_step": self.first_spike_step,
            "first_spike_layers": list(self.first_spike_layers),
            "first_spike_factor": self.first_spike_factor,
            "steps_without_gradient": dict(zip(self.layer_names, self.missing_counts.tolist())),
            "norm_ranges": {k: list(v) if v else None for k, v in self.ranges().items()},
        }


@dataclass
class NormLog:
    """Gradient norms of a run, as arrays.

    Attributes
    ----------
    norms : ndarray of float64, shape (steps, layers)
        L2 norm per step and layer; NaN both where a norm was NaN and where a
        layer had no gradient (tell them apart with ``missing``).
    missing : ndarray of bool, same shape
        True where the layer had no gradient at that step.
    steps : ndarray of int64
        Optimizer step of each row (from 1).
    layer_names : tuple of str
    metadata : dict
        Contents of the JSON sidecar (empty when there is none).
    path : Path or None
        The CSV the log was read from.
    """

    norms: np.ndarray
    missing: np.ndarray
    steps: np.ndarray
    layer_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: Where a tone is accented (a spike), when fixed in advance (a condensed log keeps its windows'
    #: spikes); None: found from the norms as they are played.
    accents: np.ndarray | None = None

    @classmethod
    def from_array(cls, norms: Any, layer_names: Sequence[str] | None = None, metadata: dict | None = None) -> NormLog:
        """A log from a (steps, layers) array; NaN/Inf count as non-finite norms.

        Examples
        --------
        >>> NormLog.from_array([[0.1, 2.0], [float("nan"), 1.0]]).layer_names
        ('layer0', 'layer1')
        """
        values = np.asarray(norms, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise SonifyError(f"norms must be a (steps, layers) array; got shape {values.shape}")
        names = tuple(layer_names) if layer_names is not None else tuple(f"layer{i}" for i in range(values.shape[1]))
        if len(names) != values.shape[1]:
            raise SonifyError(f"{len(names)} layer names given for {values.shape[1]} columns of norms")
        return cls(
            norms=values,
            missing=np.zeros(values.shape, dtype=bool),
            steps=np.arange(1, len(values) + 1, dtype=np.int64),
            layer_names=names,
            metadata=dict(metadata or {}),
        )

    @property
    def nonfinite(self) -> np.ndarray:
        """True where a recorded norm was NaN or infinite."""
        return ~np.isfinite(self.norms) & ~self.missing

    def condense(self, windows: int, how: str = "mean") -> NormLog:
        """The log with consecutive steps combined into ``windows`` rows (a long run made short).

        Parameters
        ----------
        windows : int
            Rows wanted; a log that is not longer is returned unchanged.
        how : str
            ``"mean"`` or ``"max"`` of each layer's finite norms in a window.

        A layer that was NaN/Inf at any step of a window is NaN/Inf in the
        combined row (so the alarm is never lost); a layer without gradient
        at every step of a window stays missing. Each row takes the step
        number of its window's last step.

        Examples
        --------
        >>> log = NormLog.from_array([[1.0], [3.0], [float("inf")], [2.0]])
        >>> log.condense(2).norms[:, 0].tolist(), log.condense(2).steps.tolist()
        ([2.0, inf], [2, 4])
        """
        if how not in ("mean", "max"):
            raise SonifyError(f"cannot combine steps by {how!r}; use 'mean' or 'max'")
        if windows >= len(self) or windows < 1:
            return self
        starts = np.linspace(0, len(self), windows + 1).astype(np.int64)[:-1]
        finite = np.isfinite(self.norms)
        counts = np.add.reduceat(finite, starts, axis=0)
        if how == "mean":
            totals = np.add.reduceat(np.where(finite, self.norms, 0.0), starts, axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                combined = totals / counts
        else:
            combined = np.maximum.reduceat(np.where(finite, self.norms, -np.inf), starts, axis=0)
            combined[counts == 0] = np.nan
        alarms = np.add.reduceat(self.nonfinite, starts, axis=0) > 0
        # An infinite norm stays infinite, anything else non-finite becomes NaN: both sound the alarm.
        worst = np.where(np.add.reduceat(np.isposinf(self.norms), starts, axis=0) > 0, np.inf, np.nan)
        combined = np.where(alarms, worst, combined)
        missing = np.add.reduceat(~self.missing, starts, axis=0) == 0
        ends = np.append(starts[1:], len(self)) - 1
        accents = None if self.accents is None else np.add.reduceat(self.accents, starts, axis=0) > 0
        return replace(self, norms=combined, missing=missing, steps=self.steps[ends], accents=accents)

    def spikes(self, factor: float = 10.0, window: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Where norms spike (see :class:`sonify.mapping.SpikeDetector`), and their ratios to the running median.

        Examples
        --------
        >>> log = NormLog.from_array([[1.0]] * 30 + [[50.0]])
        >>> spikes, ratios = log.spikes()
        >>> int(spikes.sum()), float(ratios[-1, 0])
        (1, 50.0)
        """
        from .mapping import SpikeDetector

        detector = SpikeDetector(len(self.layer_names), factor, window)
        found = [
            detector.detect(self.norms[i : i + 4096], self.missing[i : i + 4096]) for i in range(0, len(self), 4096)
        ]
        if not found:
            return np.zeros(self.norms.shape, bool), np.full(self.norms.shape, np.nan)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def audio(self, sound: Any = None, max_seconds: float = 60.0) -> Any:
        """The log's sound as an ``IPython.display.Audio`` (long runs condensed to ``max_seconds``)."""
        from .notebook import audio

        return audio(self, sound, max_seconds)

    def _repr_html_(self) -> str:  # Jupyter shows a player
        from .notebook import log_html

        return log_html(self)

    def stats(self, spike_factor: float = 10.0, spike_window: int = 50) -> RunStats:
        """Summary figures of the whole log (steps, NaN/Inf steps, spikes, norm ranges)."""
        stats = RunStats(self.layer_names)
        stats.update(self.steps, self.norms, self.missing, *self.spikes(spike_factor, spike_window))
        return stats

    @property
    def running(self) -> bool:
        """Whether the run that writes this log had not finished when it was read (or was killed)."""
        return _is_running(self.metadata)

    def __len__(self) -> int:
        return len(self.steps)


class RunDigest:
    """A whole run in a bounded number of rows, kept up to date as steps arrive.

    Consecutive steps share a row (a window); when the rows are full, pairs
    of neighbouring rows merge and every window doubles, so memory stays at
    ``2 * rows`` rows however long the run, and the digest always covers the
    whole run. Rows combine as :meth:`NormLog.condense` does (the mean of the
    finite norms; NaN/Inf at any step keeps the alarm; a spike keeps the
    accent; a layer missing throughout stays missing). Sound made from it
    (trackers, the bounded WAV of a long run) never re-reads the norm log.

    ``add`` and ``log`` may be called from different threads.

    Examples
    --------
    >>> digest = RunDigest(["a"], rows=2)
    >>> digest.add(np.arange(1, 11), np.arange(1.0, 11.0)[:, None], np.zeros((10, 1), bool))
    >>> digest.log().norms[:, 0].tolist(), digest.log().steps.tolist()
    ([2.5, 6.5, 9.5], [4, 8, 10])
    """

    def __init__(self, layer_names: Sequence[str], rows: int) -> None:
        if rows < 1:
            raise SonifyParameterError(f"a run digest needs at least one row, not {rows}")
        import threading

        self.layer_names = tuple(layer_names)
        self.capacity = 2 * rows
        shape = (self.capacity, len(self.layer_names))
        self._sums, self._counts = np.zeros(shape), np.zeros(shape, np.int64)
        self._alarms, self._infinite = np.zeros(shape, bool), np.zeros(shape, bool)
        self._present, self._accents = np.zeros(shape, bool), np.zeros(shape, bool)
        self._steps = np.zeros(self.capacity, np.int64)
        self.window = 1  # steps per row
        self.steps_seen = 0
        self._full = 0  # complete rows; row ``_full`` holds ``_fill`` steps so far
        self._fill = 0
        self._lock = threading.Lock()

    def add(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, accents: np.ndarray | None = None) -> None:
        """Take a block of steps (in order)."""
        accents = np.zeros(norms.shape, bool) if accents is None else accents
        with self._lock:
            done = 0
            while done < len(steps):
                room = (self.capacity - self._full) * self.window - self._fill
                take = min(len(steps) - done, room)
                part = slice(done, done + take)
                self._accumulate(steps[part], norms[part], missing[part], accents[part])
                done += take
                if self._full == self.capacity:
                    self._merge_pairs()
            self.steps_seen += len(steps)

    def _accumulate(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, accents: np.ndarray) -> None:
        offsets = self._fill + np.arange(len(steps))
        rows = self._full + offsets // self.window
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        at = rows[starts]
        finite = np.isfinite(norms) & ~missing
        self._sums[at] += np.add.reduceat(np.where(finite, norms, 0.0), starts, axis=0)
        self._counts[at] += np.add.reduceat(finite, starts, axis=0)
        self._alarms[at] |= np.logical_or.reduceat(~np.isfinite(norms) & ~missing, starts, axis=0)
        self._infinite[at] |= np.logical_or.reduceat(np.isposinf(norms) & ~missing, starts, axis=0)
        self._present[at] |= np.logical_or.reduceat(~missing, starts, axis=0)
        self._accents[at] |= np.logical_or.reduceat(accents, starts, axis=0)
        self._steps[at] = steps[np.r_[starts[1:], len(steps)] - 1]
        total = self._fill + len(steps)
        self._full += total // self.window
        self._fill = total % self.window

    def _merge_pairs(self) -> None:
        half = self.capacity // 2
        for array, combine in (
            (self._sums, np.add),
            (self._counts, np.add),
            (self._alarms, np.logical_or),
            (self._infinite, np.logical_or),
            (self._present, np.logical_or),
            (self._accents, np.logical_or),
        ):
            array[:half] = combine(array[0::2], array[1::2])
            array[half:] = 0
        self._steps[:half] = self._steps[1::2]
        self._full, self.window = half, 2 * self.window

    @property
    def last_step(self) -> int:
        """The newest step taken (0 before any)."""
        used = self._full + (1 if self._fill else 0)
        return int(self._steps[used - 1]) if used else 0

    def log(self) -> NormLog:
        """The run so far as a :class:`NormLog` of at most ``2 * rows`` rows (with their accents)."""
        with self._lock:
            used = self._full + (1 if self._fill else 0)
            sums, counts = self._sums[:used].copy(), self._counts[:used].copy()
            alarms, infinite = self._alarms[:used].copy(), self._infinite[:used].copy()
            present, accents, steps = (
                self._present[:used].copy(),
                self._accents[:used].copy(),
                self._steps[:used].copy(),
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            norms = sums / counts
        norms = np.where(alarms, np.where(infinite, np.inf, np.nan), norms)
        return NormLog(norms, ~present, steps, self.layer_names, accents=accents & present)


class StepNorms(NamedTuple):
    """One optimizer step's gradient norms, as they travel from capture to the sinks."""

    step: int
    norms: np.ndarray  # float64, one per layer
    missing: np.ndarray  # bool, True where the layer had no gradient


class NormLogWriter:
    """Append rows of norms to a norm log.

    Rows are written as whole lines by one ``write`` call per batch on an
    unbuffered file, so the file never ends in half a row, even when the
    process is killed.

    The writer only ever touches files it created: the CSV is created
    exclusively (an existing file is an error unless ``overwrite``), and the
    JSON sidecar is replaced only while the file at its path is still the one
    this writer wrote (a later run that took the name is left alone).

    Parameters
    ----------
    path : str or PathLike
        The CSV path (``log_paths`` gives the conventional one).
    layer_names : sequence of str
    metadata : dict, optional
        Written to the JSON sidecar at once; :meth:`close` adds a summary.
    overwrite : bool
        Replace existing files of that name.

    Raises
    ------
    SonifyParameterError
        When the files exist (and not ``overwrite``).
    SonifyIOError
        When they cannot be created or written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layer_names: Sequence[str],
        metadata: dict | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.meta_path = log_paths(path)[1]
        self.layer_names = tuple(layer_names)
        self.metadata = {"layers": list(self.layer_names), **(metadata or {})}
        self.rows = 0
        self._size = 0  # bytes of whole rows in the CSV
        self._meta_identity: tuple[int, int] | None = None
        check_new_file(self.meta_path, overwrite=overwrite)
        self._fd: int | None = create_exclusive(self.path, overwrite=overwrite)
        try:
            self._write(_format_rows([("step", *self.layer_names)]))
            self.write_metadata()
        except OSError:
            self.close()
            raise

    def append(self, steps: Iterable[int], norms: np.ndarray, missing: np.ndarray) -> None:
        """Append one row per step (``norms`` and ``missing`` shaped (rows, layers))."""
        rows = [
            f"{step},{','.join(row)}\n" for step, row in zip(np.asarray(steps).tolist(), format_norms(norms, missing))
        ]
        if rows:
            self._write("".join(rows))
            self.rows += len(rows)

    def write_metadata(self, **extra: Any) -> None:
        """Rewrite the JSON sidecar atomically with ``extra`` merged in.

        Raises
        ------
        SonifyIOError
            When it cannot be written, or when the file at its path is no
            longer the one this writer created (then nothing is written).
        """
        self.metadata.update(extra)
        if self._meta_identity is not None and _identity(self.meta_path) != self._meta_identity:
            if _identity(self.meta_path) is None:
                gone = "its folder was deleted" if not self.meta_path.parent.exists() else "it was deleted"
                raise SonifyIOError(f"cannot update {self.meta_path}: {gone} during the run")
            raise SonifyIOError(f"{self.meta_path} was replaced by another program; sonify leaves it alone")
        temporary = self.meta_path.with_name(f".{self.meta_path.name}.{os.getpid()}.tmp")
        try:
            fd = create_exclusive(temporary, overwrite=True)
            with os.fdopen(fd, "w") as file:
                file.write(json.dumps(self.metadata, indent=2, default=str) + "\n")
            os.replace(temporary, self.meta_path)
            self._meta_identity = _identity(self.meta_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise SonifyIOError(f"cannot write {self.meta_path}: {os_error_reason(exc)}") from None

    def close(self) -> None:
        """Close the CSV (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, text: str) -> None:
        data = text.encode()
        start = self._size
        try:
            while data:  # os.write may write less than asked (signals, full disk)
                written = os.write(self._fd, data)
                data = data[written:]
                self._size += written
        except OSError as exc:
            with contextlib.suppress(OSError):  # never leave half a row behind
                os.ftruncate(self._fd, start)
                self._size = start
            raise SonifyIOError(f"cannot write the norm log {self.path}: {os_error_reason(exc)}") from None


def format_norms(norms: np.ndarray, missing: np.ndarray) -> list[list[str]]:
    """CSV cells of a block of norms: the shortest text that reads back to the same value.

    A value that is exactly a float32 (what capture computes, normally) is
    written as the shortest float32 text (``0.10008452``); a larger or more
    precise float64 keeps all its digits, so a norm never overflows to
    ``inf`` on its way to disk. Missing values are empty cells.

    Examples
    --------
    >>> format_norms(np.array([[0.1, 1e300, np.nan]]), np.array([[False, False, False]]))
    [['0.1', '1e+300', 'nan']]
    """
    values = np.asarray(norms, dtype=np.float64)
    with np.errstate(over="ignore"):
        single = values.astype(np.float32)
    exact = (single.astype(np.float64) == values) | ~np.isfinite(values)
    cells = np.where(exact, single.astype(str), values.astype(str))
    cells[np.asarray(missing, dtype=bool)] = ""
    return cells.tolist()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _format_rows(rows: list[tuple]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def load_norms(path: str | os.PathLike, *, drop_incomplete: bool = False) -> NormLog:
    """Read a norm log written by sonify, or any CSV of norms recorded elsewhere.

    The CSV needs a header with a step column (``step``, ``steps``,
    ``global_step``, ``iteration`` or ``iter``, in any position, any case)
    and one column per layer; an empty cell means the layer had no gradient.
    A TensorBoard run directory or event file is read with
    :func:`sonify.importers.load_tensorboard`.

    Parameters
    ----------
    path : str or PathLike
        The ``.norms.csv`` file, or the WAV / stem it belongs to.
    drop_incomplete : bool
        Ignore a last line that stops short (a file cut off by hand or by a
        full disk) instead of raising.

    Returns
    -------
    NormLog

    Raises
    ------
    SonifyError
        When the file is missing, unreadable or malformed; the message names
        the file and line.

    Examples
    --------
    A log of the reference experiment::

        log = load_norms("audio_out/run.norms.csv")
        log.norms.shape      # (200, 4)
        log.layer_names      # ('conv1', 'conv2', 'fc1', 'fc2')
    """
    if Path(path).is_dir() or "tfevents" in Path(path).name:
        from .importers import load_tensorboard

        return load_tensorboard(path)
    csv_path, meta_path = _resolve_log(Path(path))
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # a BOM (Excel's UTF-8 CSV) is not part of the header
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not a text file"
        raise SonifyError(f"cannot read norm log {csv_path}: {reason}") from None
    if "\0" in text:
        raise SonifyError(f"{csv_path}: the file holds binary data (NUL bytes); it is not a norm log")
    lines = text.splitlines()
    if not lines:
        raise SonifyError(f"{csv_path}: the file is empty; it is not a norm log")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(split_csv_line(line))
        except ValueError as exc:
            raise SonifyError(f"{csv_path}:{number}: {exc}; repair or remove that line") from None
    header = [name.strip() for name in records[0]]
    step_column = next((i for i, name in enumerate(header) if name.lower() in STEP_COLUMNS), None)
    if step_column is None or len(header) < 2:
        raise SonifyError(
            f"{csv_path}:1: expected a header with a step column ({', '.join(STEP_COLUMNS)}) and one column per "
            f"layer; found {header[:6]}"
        )
    names = tuple(name for i, name in enumerate(header) if i != step_column)
    layer_columns = [i for i in range(len(header)) if i != step_column]
    if len(set(names)) != len(names) or not all(names):
        raise SonifyError(f"{csv_path}:1: layer names in the header must be unique and non-empty")
    body = records[1:]
    metadata = _read_metadata(meta_path)
    if body and not text.endswith("\n") and _is_running(metadata):
        body = body[:-1]  # a run still being written: its last line may be cut short, even if it parses
    elif body and not text.endswith("\n") and len(body[-1]) != len(header):
        if not drop_incomplete:
            raise SonifyError(
                f"{csv_path}:{len(lines)}: last line is incomplete ({len(body[-1])} of {len(header)} fields); "
                "pass {drop_incomplete}True to ignore it"
            )
        body = body[:-1]
    steps = np.empty(len(body), dtype=np.int64)
    norms = np.empty((len(body), len(names)))
    missing = np.zeros(norms.shape, dtype=bool)
    for index, record in enumerate(body):
        line = index + 2
        if len(record) != len(header):
            raise SonifyError(
                f"{csv_path}:{line}: expected {len(header)} fields (step + {len(names)} layers), found {len(record)}"
            )
        try:
            steps[index], norms[index], missing[index] = parse_row(record, step_column, layer_columns)
        except ValueError as exc:
            raise SonifyError(f"{csv_path}:{line}: {exc} in {_shorten(record)}") from None
        if index and steps[index] <= steps[index - 1]:
            raise SonifyError(f"{csv_path}:{line}: step {steps[index]} does not follow step {steps[index - 1]}")
    if (norms[~missing] < 0).any():
        raise SonifyError(f"{csv_path}: negative norms found; a norm log holds L2 norms, which are >= 0")
    return NormLog(norms, missing, steps, names, metadata, csv_path)


def split_csv_line(line: str) -> list[str]:
    """The cells of one line of a CSV norm log. Raises ValueError for a line the csv module refuses.

    A norm log has one row per line, so a stray ``"`` never joins lines
    together, and a field over the csv module's limit (128 KiB) is a bad line,
    not a crash.

    Examples
    --------
    >>> split_csv_line('3,0.5,"1e-3"')
    ['3', '0.5', '1e-3']
    """
    line = line.removesuffix("\r")  # a CRLF file read line by line
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise ValueError(f"not a CSV row ({exc})") from None


def parse_row(cells: Sequence[str], step_column: int, layer_columns: Sequence[int]) -> tuple[int, list, list]:
    """One CSV row of a norm log: (step, norms, missing). Raises ValueError saying what is wrong.

    Examples
    --------
    >>> parse_row(["3", "0.5", ""], 0, [1, 2])
    (3, [0.5, nan], [False, True])
    """
    try:
        step = float(cells[step_column])
        if not (step == int(step) and 0 <= step < 2**53):
            raise ValueError(f"step {cells[step_column]!r} is not a whole number from 0 to 2**53")
        values = [cells[column].strip() for column in layer_columns]
        norms = [float(value) if value else math.nan for value in values]
    except (ValueError, OverflowError) as exc:
        if str(exc).startswith("step "):
            raise
        raise ValueError("not a number") from None
    return int(step), norms, [not value for value in values]


def as_norm_log(source: Any, *, drop_incomplete: bool = False) -> NormLog:
    """Any source of norms as a :class:`NormLog`: the one door into rendering and playing.

    Parameters
    ----------
    source : NormLog, path or array
        A ``NormLog``; a path to a norm log (CSV, or the WAV / stem it belongs
        to), a TensorBoard run folder or event file; or a (steps, layers)
        array of norms.
    drop_incomplete : bool
        For a CSV: ignore a cut-off last line.

    Examples
    --------
    >>> as_norm_log([[0.5, 2.0], [1.0, float("nan")]]).norms.shape
    (2, 2)
    """
    if isinstance(source, NormLog):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_norms(source, drop_incomplete=drop_incomplete)
    try:
        return NormLog.from_array(source)
    except (TypeError, ValueError):
        raise SonifyParameterError(
            f"cannot read norms from a {type(source).__name__}; give a NormLog, a path or a (steps, layers) array"
        ) from None


def _shorten(record: list[str], limit: int = 80) -> str:
    text = repr(record)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Header names recognised as the step column of a CSV of norms.
STEP_COLUMNS = ("step", "steps", "global_step", "iteration", "iter")


def _resolve_log(path: Path) -> tuple[Path, Path]:
    if path.suffix.lower() == ".csv":
        csv_path, meta_path = path, log_paths(path)[1]
    else:
        csv_path, meta_path = log_paths(path)
    if not csv_path.exists() and not path.exists():
        raise SonifyError(f"norm log {path} does not exist; give the .norms.csv written by a run")
    if not csv_path.exists():
        raise SonifyError(f"{path} has no norm log beside it ({csv_path.name}); give the .norms.csv file")
    return csv_path, meta_path


def _is_running(metadata: dict[str, Any]) -> bool:
    """A sonify log whose run has not closed it yet (still training, or killed)."""
    return bool(metadata) and "sonify" in metadata and not metadata.get("closed")


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    if not meta_path.exists():
        return {}
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise SonifyError(f"cannot read run metadata {meta_path}: {exc}; fix or delete the file") from None
    if not isinstance(metadata, dict):
        raise SonifyError(f"{meta_path}: expected a JSON object; fix or delete the file")
    return metadata
