"""The shared types of norms: one step (:class:`StepNorms`), a run (:class:`NormLog`), a run in bounded rows (:class:`RunDigest`).

Everything above this module passes norms around in these types; nothing
here reads or writes files (see :mod:`sonify.normfile`) or makes sound.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyParameterError
from .spikes import SpikeDetector
from .stats import RunStats

__all__ = [
    "NormLog",
    "NormPresenter",
    "RunDigest",
    "StepNorms",
    "combine_segments",
    "is_running",
    "layer_rows",
    "set_presenter",
]


class NormPresenter:
    """How a log shows itself in a notebook; :mod:`sonify.notebook` provides the real one.

    The display needs the sound (four layers up), while ``NormLog`` is a type
    everything shares: the upper layer registers itself here when sonify is
    imported (``sonify/__init__`` imports it), so no module imports upwards.
    """

    def audio(self, log: NormLog, sound: Any, max_seconds: float) -> Any:
        raise NotImplementedError("import sonify (the package) to display a norm log")

    def html(self, log: NormLog) -> str:
        raise NotImplementedError("import sonify (the package) to display a norm log")


_PRESENTER: list[NormPresenter] = [NormPresenter()]


def set_presenter(presenter: NormPresenter) -> None:
    """Make ``presenter`` show every NormLog in notebooks (called by :mod:`sonify.notebook`)."""
    _PRESENTER[0] = presenter


def _presenter() -> NormPresenter:
    return _PRESENTER[0]


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
            raise SonifyParameterError(f"norms must be a (steps, layers) array; got shape {values.shape}")
        names = tuple(layer_names) if layer_names is not None else tuple(f"layer{i}" for i in range(values.shape[1]))
        if len(names) != values.shape[1]:
            raise SonifyParameterError(f"{len(names)} layer names given for {values.shape[1]} columns of norms")
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
            raise SonifyParameterError(f"cannot combine steps by {how!r}; use 'mean' or 'max'")
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
        detector = SpikeDetector(len(self.layer_names), factor, window)
        found = [
            detector.detect(self.norms[i : i + 4096], self.missing[i : i + 4096]) for i in range(0, len(self), 4096)
        ]
        if not found:
            return np.zeros(self.norms.shape, bool), np.full(self.norms.shape, np.nan)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def player(self, sound: Any = None, max_seconds: float = 60.0) -> Any:
        """The log's sound as an ``IPython.display.Audio`` player (long runs condensed to ``max_seconds``)."""
        return _presenter().audio(self, sound, max_seconds)

    def audio(self, sound: Any = None, max_seconds: float = 60.0) -> Any:
        """Deprecated: :meth:`player` (``audio`` is the Sonifier's flag for writing the audio file)."""
        warnings.warn("NormLog.audio() is now player()", DeprecationWarning, stacklevel=2)
        return self.player(sound, max_seconds)

    def _repr_html_(self) -> str:  # Jupyter shows a player
        return _presenter().html(self)

    def stats(self, spike_factor: float = 10.0, spike_window: int = 50) -> RunStats:
        """Summary figures of the whole log (steps, NaN/Inf steps, spikes, norm ranges)."""
        stats = RunStats(self.layer_names)
        stats.update(self.steps, self.norms, self.missing, *self.spikes(spike_factor, spike_window))
        return stats

    @property
    def running(self) -> bool:
        """Whether the run that writes this log had not finished when it was read (or was killed)."""
        return is_running(self.metadata)

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


class StepNorms:
    """One optimizer step's gradient norms, one per layer, as they travel from capture to the sinks.

    Capture may hand a step over before its parameters' norms are combined
    into layers: right after a training step NumPy's code is cold in the
    caches, and each small NumPy call costs several microseconds there. Such
    a step holds the per-parameter norms and where each layer's parameters
    start (``segments``); :attr:`norms` combines them on first use, and
    :func:`layer_rows` combines many steps at once (on the recorder's
    thread). Whoever reads a step sees layer norms either way.

    Unpacks as ``step, norms, missing``.
    """

    __slots__ = ("_norms", "missing", "segments", "step")

    def __init__(self, step: int, norms: Any, missing: np.ndarray, segments: np.ndarray | None = None) -> None:
        self.step = step
        self._norms = norms
        self.missing = missing  # bool per layer, True where the layer had no gradient
        #: Where each layer's parameters start in the per-parameter norms; None once combined.
        self.segments = segments

    @property
    def norms(self) -> np.ndarray:
        """float64, one per layer."""
        if self.segments is not None:
            self._norms = combine_segments(np.asarray(self._norms, dtype=np.float64), self.segments)
            self.segments = None
        return self._norms

    def __iter__(self) -> Iterator[Any]:
        return iter((self.step, self.norms, self.missing))

    def __repr__(self) -> str:
        return f"StepNorms(step={self.step}, norms={self.norms!r}, missing={self.missing!r})"


def layer_rows(items: Sequence[StepNorms]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, layer norms (steps x layers, float64) and missing flags of several steps.

    Steps still per parameter are combined here, all rows of one layout at once.
    """
    steps = np.fromiter((item.step for item in items), dtype=np.int64, count=len(items))
    missing = np.stack([item.missing for item in items])
    rows: list = [None] * len(items)
    pending: dict[int, list[int]] = {}
    for position, item in enumerate(items):
        if item.segments is None:
            rows[position] = np.asarray(item.norms, dtype=np.float64)
        else:
            pending.setdefault(id(item.segments), []).append(position)
    for positions in pending.values():
        values = np.array([items[p]._norms for p in positions], dtype=np.float64)
        segments = items[positions[0]].segments
        assert segments is not None  # grouped above by their segments
        for position, row in zip(positions, combine_segments(values, segments)):
            rows[position] = row
    return steps, np.stack(rows) if rows else np.zeros((0, missing.shape[1] if missing.ndim == 2 else 0)), missing


def combine_segments(norms: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """L2 norm of each segment of per-parameter norms (the last axis), in float64 without overflow."""
    if norms.size and norms.max() < 1e150:  # the common case; NaN, Inf and huge norms go the careful way
        return np.sqrt(np.add.reduceat(norms * norms, starts, axis=-1))
    if norms.ndim == 2:
        return np.array([combine_segments(row, starts) for row in norms]).reshape(len(norms), len(starts))
    # Huge float64 norms: scale each segment by its largest finite value first.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        finite = np.where(np.isfinite(norms), norms, 0.0)
        scale = np.maximum.reduceat(finite, starts)
        scale[scale == 0] = 1.0
        owner_scale = np.repeat(scale, np.diff(np.append(starts, len(norms))))
        scaled = norms / owner_scale
        return scale * np.sqrt(np.add.reduceat(scaled * scaled, starts))


def is_running(metadata: dict[str, Any]) -> bool:
    """A sonify log whose run has not closed it yet (still training, or killed)."""
    return bool(metadata) and "sonify" in metadata and not metadata.get("closed")
