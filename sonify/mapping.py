"""Map gradient norms to pitches.

A pitch map turns an array of norms into an array of frequencies in Hz. Two
presets exist:

``log`` (default)
    Orders of magnitude become musical intervals: by default a norm of 1e-4
    sounds at 440 Hz, 1 at 1245 Hz and 1e4 at 3520 Hz (each factor of ten is
    4.5 semitones, so a change of 10% moves the pitch by 19 cents). Norms
    outside the range are clamped to its ends, so tiny and huge norms stay
    audible and ordered. The range lies where the ear tells short tones'
    pitches apart best (about 500 Hz to 4 kHz, where real runs' norms of
    1e-3 .. 1e3 land), and its bottom gives a 10 ms tone 4.4 cycles: every
    tone has a pitch, none is heard as a click.
``linear``
    The 2019 reference experiment: ``200 + 100 * norm`` Hz. Kept for
    comparison; it rises out of the audible range quickly.

Whatever the map says, the synthesizer never plays at or above 0.45 times
the sample rate. Non-finite norms are not mapped to a pitch at all: they
sound as an alarm (see :mod:`sonify.synthesize`).

Examples
--------
>>> import numpy as np
>>> from sonify.mapping import get_map
>>> get_map("linear")(np.array([0.0, 1.5]))
array([200., 350.])
>>> get_map("log")(np.array([1e-4, 1.0, 1e4])).round(1)
array([ 440. , 1244.5, 3520. ])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ._errors import SonifyParameterError

__all__ = [
    "PRESETS",
    "SCALES",
    "LinearMap",
    "LogMap",
    "PitchMap",
    "get_map",
    "quantize",
]

#: Pitch classes (semitones above the tonic) of the scales a map can snap to.
SCALES: dict[str, tuple[int, ...]] = {
    "chromatic": tuple(range(12)),
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}

_A4 = 440.0


def quantize(freqs: np.ndarray, scale: str, tonic: float = _A4) -> np.ndarray:
    """Snap frequencies to the nearest note of a musical scale.

    Parameters
    ----------
    freqs : ndarray
        Frequencies in Hz (positive; non-finite values pass through).
    scale : str
        One of :data:`SCALES`.
    tonic : float
        Frequency of the scale's first degree (any octave), 440 Hz by default.

    Examples
    --------
    >>> quantize(np.array([450.0, 470.0]), "chromatic").round(2)
    array([440.  , 466.16])
    """
    if scale not in SCALES:
        raise SonifyParameterError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    degrees = np.array(SCALES[scale] + (12,), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        semitones = 12.0 * np.log2(freqs / tonic)
    octave = np.floor(semitones / 12.0)
    within = semitones - 12.0 * octave
    nearest = degrees[np.abs(within[..., None] - degrees).argmin(axis=-1)]
    snapped = tonic * 2.0 ** (octave + nearest / 12.0)
    return np.where(np.isfinite(snapped), snapped, freqs)


@dataclass(frozen=True)
class PitchMap:
    """Base class of norm-to-pitch maps.

    Subclasses implement :meth:`_freqs`; calling the map adds the optional
    scale quantization. Maps are immutable; :meth:`fit` returns a new one.

    Attributes
    ----------
    scale : str or None
        Snap pitches to this scale (see :data:`SCALES`); None plays them as is.
    """

    scale: str | None = None

    def __call__(self, norms: np.ndarray) -> np.ndarray:
        """Frequencies in Hz for ``norms`` (NaN where a norm is not finite)."""
        norms = np.asarray(norms, dtype=float)
        with np.errstate(invalid="ignore", over="ignore"):
            freqs = self._freqs(norms)
        freqs = np.where(np.isfinite(norms), freqs, np.nan)
        return quantize(freqs, self.scale) if self.scale else freqs

    def _freqs(self, norms: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, norms: np.ndarray) -> PitchMap:
        """A copy of this map adapted to the range of ``norms`` (identity here)."""
        return self

    def inverse(self, freqs: np.ndarray) -> np.ndarray:
        """The norms that sound at ``freqs`` (before quantization and clamping)."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        """The map's settings, for the run's metadata."""
        return {"preset": self.preset, **{k: v for k, v in self.__dict__.items()}}

    def describe(self) -> dict:
        """Deprecated: :meth:`as_dict` (``describe`` now always means one line of text)."""
        warnings.warn("PitchMap.describe() is now as_dict()", DeprecationWarning, stacklevel=2)
        return self.as_dict()

    preset = "custom"


@dataclass(frozen=True)
class LinearMap(PitchMap):
    """The reference experiment's map, ``offset + slope * norm`` Hz.

    Examples
    --------
    >>> LinearMap()(np.array([2.0]))
    array([400.])
    """

    offset: float = 200.0
    slope: float = 100.0
    preset = "linear"

    def _freqs(self, norms: np.ndarray) -> np.ndarray:
        return self.offset + self.slope * norms

    def inverse(self, freqs: np.ndarray) -> np.ndarray:
        return (np.asarray(freqs, dtype=float) - self.offset) / self.slope


@dataclass(frozen=True)
class LogMap(PitchMap):
    """Logarithmic map: equal norm ratios give equal musical intervals.

    Parameters
    ----------
    norm_range : (float, float)
        Norms mapped to the ends of ``freq_range``; norms outside are clamped.
        A norm of exactly zero sounds at the bottom of the range.
    freq_range : (float, float)
        Lowest and highest frequency in Hz.

    Examples
    --------
    >>> m = LogMap(norm_range=(0.01, 100.0), freq_range=(200.0, 3200.0))
    >>> m(np.array([0.0, 0.01, 1.0, 1e9])).round()
    array([ 200.,  200.,  800., 3200.])
    """

    norm_range: tuple[float, float] = (1e-4, 1e4)
    freq_range: tuple[float, float] = (440.0, 3520.0)
    preset = "log"

    def __post_init__(self) -> None:
        lo, hi = self.norm_range
        if not (0 < lo < hi and math.isfinite(hi)):
            raise SonifyParameterError(
                f"norm range {lo:g}..{hi:g} is invalid; give two positive finite bounds, low < high"
            )
        flo, fhi = self.freq_range
        if not (0 < flo < fhi):
            raise SonifyParameterError(f"frequency range {flo:g}..{fhi:g} Hz is invalid; use 0 < low < high")

    def _freqs(self, norms: np.ndarray) -> np.ndarray:
        lo, hi = self.norm_range
        flo, fhi = self.freq_range
        position = (np.log(np.clip(norms, lo, hi)) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return flo * (fhi / flo) ** position

    def inverse(self, freqs: np.ndarray) -> np.ndarray:
        lo, hi = self.norm_range
        flo, fhi = self.freq_range
        position = np.log(np.asarray(freqs, dtype=float) / flo) / math.log(fhi / flo)
        return lo * (hi / lo) ** position

    def fit(self, norms: np.ndarray) -> LogMap:
        """Stretch the norm range over the finite, positive norms of a run.

        A run whose norms span less than a factor of ten is widened to one
        decade around its geometric centre, so that noise in a flat run is
        not blown up to the whole pitch range.
        """
        values = np.asarray(norms, dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size == 0:
            return self
        lo, hi = float(values.min()), float(values.max())
        if hi / lo < 10.0:
            centre = math.sqrt(lo * hi)
            lo, hi = centre / math.sqrt(10.0), centre * math.sqrt(10.0)
        return replace(self, norm_range=(lo, hi))


#: The named maps, as accepted by ``get_map`` and the CLI's ``--map``.
PRESETS: dict[str, type[PitchMap]] = {"log": LogMap, "linear": LinearMap}


def get_map(
    preset: str | PitchMap = "log",
    *,
    norm_range: Sequence[float] | None = None,
    scale: str | None = None,
) -> PitchMap:
    """Build a pitch map from a preset name and options.

    Parameters
    ----------
    preset : str or PitchMap
        ``"log"`` or ``"linear"``, or a ready map (returned with the options applied).
    norm_range : (float, float), optional
        Fixed norm bounds for the ``log`` map.
    scale : str, optional
        Snap pitches to a scale from :data:`SCALES`.

    Examples
    --------
    >>> get_map("log", norm_range=(1e-3, 10), scale="major").norm_range
    (0.001, 10)
    """
    if isinstance(preset, PitchMap):
        pitch_map = preset
    elif preset in PRESETS:
        pitch_map = PRESETS[preset]()
    else:
        raise SonifyParameterError(f"unknown mapping {preset!r}; choose one of {', '.join(PRESETS)}")
    if norm_range is not None:
        if not isinstance(pitch_map, LogMap):
            raise SonifyParameterError("a norm range applies to the 'log' mapping only; drop it or use {mapping}log")
        low, high = norm_range
        pitch_map = replace(pitch_map, norm_range=(low, high))
    if scale is not None:
        quantize(np.array([_A4]), scale)  # validates the name
        pitch_map = replace(pitch_map, scale=scale)
    return pitch_map
