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
``relative``
    A home pitch per layer: each layer's norms are heard relative to its own
    reference, the median of its first 20 finite, non-zero norms, at an
    octave per factor of ten. A healthy run stays near home; drift, growth
    and collapse move away from it (a layer that grows 3x rises 5.7
    semitones). See :class:`RelativeMap`.

A map also says where it clamps (:meth:`PitchMap.off_scale`): a norm above
the top of its range or below its bottom sounds at the clamped pitch but with
a glide (see :mod:`sonify.synthesize`), so 1e5 and 1e35 are never heard as
an in-range 1e4. A norm of exactly zero is not a pitch at all.

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
    "Homes",
    "LinearMap",
    "LogMap",
    "PitchMap",
    "RelativeMap",
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
    #: Whether pitches are heard from each layer's own reference (its home), which the caller learns
    #: from the run with :meth:`homes` and passes as ``reference``.
    relative = False

    def __call__(self, norms: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Frequencies in Hz for ``norms`` (NaN where a norm is not finite).

        ``reference``: each layer's home norm, broadcast against ``norms``
        (only for maps that are :attr:`relative`).
        """
        norms = np.asarray(norms, dtype=float)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            freqs = self._freqs(norms, reference)
        freqs = np.where(np.isfinite(norms), freqs, np.nan)
        return quantize(freqs, self.scale) if self.scale else freqs

    def _freqs(self, norms: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def off_scale(self, norms: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Where the map clamps: +1 above its top, -1 below its bottom, 0 within (int8, like ``norms``).

        Non-finite norms are 0 here (they are not mapped at all). Maps without
        a range (``linear``) clamp nowhere; the synthesizer's playable band
        still does.
        """
        return np.zeros(np.shape(norms), np.int8)

    def homes(self, n_voices: int) -> Homes | None:
        """What learns each layer's reference from a run (None: this map needs none)."""
        return None

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

    def _freqs(self, norms: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
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

    def _freqs(self, norms: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        lo, hi = self.norm_range
        flo, fhi = self.freq_range
        position = (np.log(np.clip(norms, lo, hi)) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return flo * (fhi / flo) ** position

    def off_scale(self, norms: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        norms = np.asarray(norms, dtype=float)
        lo, hi = self.norm_range
        with np.errstate(invalid="ignore"):
            return ((norms > hi) & np.isfinite(norms)).astype(np.int8) - (norms < lo).astype(np.int8)

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


@dataclass(frozen=True)
class RelativeMap(PitchMap):
    """A home pitch per layer: each norm is heard as its ratio to the layer's own reference.

    The reference (home) of a layer is the median of its first
    ``reference_steps`` finite, non-zero norms; until there are that many, the
    median of those seen so far (so the first step sounds at home). It then
    stays fixed for the rest of the run. A running median would be simpler,
    but it follows a slow drift and so cancels exactly what this map is for:
    with a fixed home, a layer that creeps up 3x over an epoch ends 5.7
    semitones above home, however slowly it got there. The median, not the
    mean, keeps a spike in the first steps from moving home.

    Every layer's home sounds at ``home_freq``; a factor of ten is
    ``semitones_per_decade`` (an octave), up to ``span`` semitones either
    side of home; beyond that the norm is off the scale (the clamped pitch,
    with a glide). With the defaults the pitch band is the ``log`` map's,
    440 .. 3520 Hz, and a layer is off the scale at 31.6x or 1/31.6 of home.

    Best heard with ``mode="sequence"`` (the default): in ``"chord"`` mode
    the healthy layers of a run all sit near the same home pitch.

    Examples
    --------
    >>> m = RelativeMap()
    >>> m(np.array([[1.0, 30.0], [10.0, 3.0]]), reference=np.array([1.0, 3.0])).round(1)
    array([[1244.5, 2489. ],
           [2489. , 1244.5]])
    """

    semitones_per_decade: float = 12.0
    home_freq: float = 1244.5
    span: float = 18.0
    reference_steps: int = 20
    preset = "relative"
    relative = True

    def __post_init__(self) -> None:
        if not (self.semitones_per_decade > 0 and math.isfinite(self.semitones_per_decade)):
            raise SonifyParameterError(
                f"{self.semitones_per_decade:g} semitones per decade is invalid; give a positive number"
            )
        if not (self.home_freq > 0 and self.span > 0):
            raise SonifyParameterError(
                f"home pitch {self.home_freq:g} Hz, span {self.span:g} semitones is invalid; give positive numbers"
            )
        if not (isinstance(self.reference_steps, int) and self.reference_steps >= 1):
            raise SonifyParameterError(
                f"reference_steps={self.reference_steps!r} is invalid; give a whole number of steps, 1 or more"
            )

    def semitones(self, norms: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """Semitones from home (before clamping): ``semitones_per_decade * log10(norm / reference)``."""
        if reference is None:
            raise SonifyParameterError("the relative map needs each layer's reference norm")
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.semitones_per_decade * np.log10(np.asarray(norms, dtype=float) / reference)

    def _freqs(self, norms: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        semitones = np.clip(self.semitones(norms, reference), -self.span, self.span)
        return self.home_freq * 2.0 ** (semitones / 12.0)

    def off_scale(self, norms: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        semitones = self.semitones(norms, reference)
        with np.errstate(invalid="ignore"):
            return (semitones > self.span).astype(np.int8) - (semitones < -self.span).astype(np.int8)

    def inverse(self, freqs: np.ndarray, reference: np.ndarray | float = 1.0) -> np.ndarray:
        semitones = 12.0 * np.log2(np.asarray(freqs, dtype=float) / self.home_freq)
        return np.asarray(reference) * 10.0 ** (semitones / self.semitones_per_decade)

    def homes(self, n_voices: int) -> Homes:
        return Homes(n_voices, self.reference_steps)


class Homes:
    """Each layer's reference norm, learnt from the first finite, non-zero norms of a run, in order.

    Examples
    --------
    >>> homes = Homes(1, reference_steps=3)
    >>> homes.update(np.array([[0.0], [2.0], [4.0], [np.nan], [9.0], [100.0]]), np.zeros((6, 1), bool)).ravel()
    array([nan,  2.,  3.,  3.,  4.,  4.])
    """

    def __init__(self, n_voices: int, reference_steps: int) -> None:
        self.reference_steps = reference_steps
        self._seen: list[list[float]] = [[] for _ in range(n_voices)]
        #: Each layer's home so far (NaN before its first finite, non-zero norm).
        self.current = np.full(n_voices, np.nan)

    @property
    def settled(self) -> bool:
        """Whether every layer's home is fixed."""
        return all(len(seen) >= self.reference_steps for seen in self._seen)

    def update(self, norms: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """The home in effect at each row of the next block (steps, voices); the block joins the history."""
        norms = np.asarray(norms, dtype=float)
        reference = np.empty(norms.shape)
        reference[:] = self.current
        if self.settled:
            return reference
        usable = np.isfinite(norms) & (norms > 0) & ~np.asarray(missing, bool)
        for voice, seen in enumerate(self._seen):
            need = self.reference_steps - len(seen)
            if need <= 0:
                continue
            rows = np.flatnonzero(usable[:, voice])[:need]
            for row in rows:
                seen.append(float(norms[row, voice]))
                self.current[voice] = float(np.median(seen))
                reference[row:, voice] = self.current[voice]
        return reference


#: The named maps, as accepted by ``get_map`` and the CLI's ``--map``.
PRESETS: dict[str, type[PitchMap]] = {"log": LogMap, "linear": LinearMap, "relative": RelativeMap}


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
