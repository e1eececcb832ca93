"""Spikes: norms far above their layer's own recent behaviour, the warning that comes before a NaN.

A spike sounds accented (see :mod:`sonify.synthesize`) and the run summary
counts them. The detector keeps its history between calls, so any block size
gives the same answer.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ._errors import SonifyParameterError

__all__ = ["SPIKE_FACTOR", "SPIKE_WINDOW", "SpikeDetector"]


#: A norm at least this many times its layer's running median sounds accented (0: off).
SPIKE_FACTOR = 10.0
#: Steps of a layer's own history that the running median looks back over.
SPIKE_WINDOW = 50
#: Finite earlier norms a layer needs before a spike can be told from its start.
_MIN_HISTORY = 10


class SpikeDetector:
    """Find norms far above their own recent behaviour: the spikes that come before a NaN.

    A norm is a **spike** when it is at least ``factor`` times the median of
    the same layer's previous ``window`` finite norms (at least 10 of them).
    NaN/Inf norms are alarms, not spikes, and stay out of the history, as do
    layers without gradient. The detector keeps its history between calls,
    so blocks of any size (a recorder's flush, a live step, a file's block)
    give the same answer as the whole run at once.

    Parameters
    ----------
    n_layers : int
    factor : float
        ``0`` turns detection off.
    window : int

    Examples
    --------
    >>> detector = SpikeDetector(1)
    >>> norms = np.array([[1.0]] * 20 + [[12.0], [1.5]])
    >>> np.flatnonzero(detector(norms)[:, 0]).tolist()
    [20]
    """

    def __init__(self, n_layers: int, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> None:
        if not (math.isfinite(factor) and (factor == 0 or factor > 1)):
            raise SonifyParameterError(
                f"spike factor {factor!r} is invalid; give a number above 1, or 0 to turn it off"
            )
        if not (isinstance(window, int) and window >= _MIN_HISTORY):
            raise SonifyParameterError(f"spike window {window!r} is invalid; give a whole number of steps >= 10")
        self.factor, self.window = float(factor), window
        self._history = np.full((window, n_layers), np.nan)

    def __call__(self, norms: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
        """True where a row of ``norms`` (shape (steps, layers)) spikes; the rows join the history."""
        return self.detect(norms, missing)[0]

    def detect(self, norms: np.ndarray, missing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The spikes, and their ratios to the running median (NaN where a norm cannot be a spike)."""
        norms = np.asarray(norms, dtype=float)
        usable = np.isfinite(norms) & (True if missing is None else ~np.asarray(missing, bool))
        if self.factor == 0 or len(norms) == 0:
            return np.zeros(norms.shape, bool), np.full(norms.shape, np.nan)
        joined = np.concatenate([self._history, np.where(usable, norms, np.nan)])
        # Row i of the block looks back over the `window` rows before it.
        before = np.lib.stride_tricks.sliding_window_view(joined[:-1], self.window, axis=0)[: len(norms)]
        finite = np.isfinite(joined[:-1]).astype(np.int64)
        totals = np.concatenate([np.zeros((1, finite.shape[1]), np.int64), np.cumsum(finite, axis=0)])
        counts = (totals[self.window :] - totals[: -self.window])[: len(norms)]  # finite values in each window
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN history has no median
            # The median is at least the smallest value: only norms above factor x that can spike, and
            # only their windows need the (costly) median. In a calm run that is almost none.
            lowest = _sliding_fmin(joined[:-1], self.window)[: len(norms)]
            candidates = usable & (counts >= _MIN_HISTORY) & (norms >= self.factor * lowest)
            median = np.full(norms.shape, np.nan)
            chosen = np.nonzero(candidates)
            if chosen[0].size:
                windows = before[chosen]
                median[chosen] = np.median(windows, axis=-1)
                patchy = np.isnan(windows).any(axis=-1)  # a gap in the history: the slower NaN-aware median
                if patchy.any():
                    median[tuple(index[patchy] for index in chosen)] = np.nanmedian(windows[patchy], axis=-1)
        self._history = joined[-self.window :]
        with np.errstate(invalid="ignore", divide="ignore"):
            known = candidates & (median > 0)
            ratios = np.where(known, norms / np.where(known, median, 1.0), np.nan)
            return known & (ratios >= self.factor), ratios


def _sliding_fmin(values: np.ndarray, window: int) -> np.ndarray:
    """Smallest non-NaN value of each run of ``window`` rows (row i: rows i .. i+window-1), column by column.

    Doubling spans (1, 2, 4, ...) take about log2(window) passes over contiguous rows, instead of one
    strided pass per window.
    """
    span, table = 1, values
    while 2 * span <= window:
        table = np.fmin(table[:-span], table[span:])
        span *= 2
    return np.fmin(table[: len(values) - window + 1], table[window - span : window - span + len(values) - window + 1])
