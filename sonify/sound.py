"""How norms sound: :class:`SoundSettings`, and the one object that turns norms into sound.

Every output takes the same path::

    norms ──Sounder.score()──> Score ──Sounder.samples()──> samples ──> file, sound card, tracker, notebook
                                 └──────────────────────────────────> MIDI (and, next, a browser's synthesizer)

:meth:`SoundSettings.sounder` builds a :class:`Sounder`: the pitch map, the
spike detector, the loudness contour and the synthesizer, wired together
here and nowhere else. Its intermediate result, the :class:`Score`, says for
every step and voice when a tone starts, how long it lasts, its frequency,
its gain and its kind (tone, rest, alarm, accent, above or below the map, zero), as arrays. It is plain
data: ``Score.as_dict()`` is JSON-ready and ``Score.from_dict`` reads it
back, so a synthesizer written elsewhere never has to repeat the mapping.

Examples
--------
>>> import numpy as np
>>> sounder = SoundSettings().sounder(2)
>>> score = sounder.score(np.array([[0.5, 2.0], [np.nan, 1.0]]), np.zeros((2, 2), bool))
>>> [ToneKind(k).name for k in score.kind[1]]
['ALARM', 'TONE']
>>> score.start[1].tolist()  # seconds: two 10 ms tones, then a 20 ms gap, per step
[0.04, 0.05]
>>> sounder.samples(score).shape
(3528,)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ._choices import SAMPLE_FORMATS
from ._errors import SonifyParameterError
from .mapping import Homes, PitchMap, get_map
from .score import Score, ToneKind
from .spikes import SPIKE_FACTOR, SPIKE_WINDOW, SpikeDetector
from .synthesize import MIN_FREQ_HZ, Synthesizer

if TYPE_CHECKING:
    from .norms import NormLog
    from .stats import RunStats

__all__ = ["Score", "SoundSettings", "Sounder", "ToneKind"]

_STATS_BLOCK = 65536  # steps per block when a whole log's totals are counted


@dataclass(frozen=True)
class SoundSettings:
    """How norms sound. Every value is checked when the settings are made.

    Attributes
    ----------
    mapping : str or PitchMap
        ``"log"`` (default), ``"relative"`` (a home pitch per layer: each
        layer heard from the median of its first 20 norms, an octave per
        factor of ten) or ``"linear"`` (the 2019 reference), or a map.
    norm_range : (float, float) or "auto", optional
        Norms at the bottom and top of the ``log`` map's pitch range;
        ``"auto"`` fits them to the run (only when the whole run is known,
        i.e. when rendering a log).
    scale : str, optional
        Snap pitches to ``"chromatic"``, ``"major"``, ``"minor"`` or ``"pentatonic"``.
    sample_rate : int
    tone_duration : float
        Seconds per tone (one tone per layer per step).
    gap : float, optional
        Seconds of silence after each step (two tone lengths by default).
    amplitude : float
        Peak amplitude of a tone.
    fade : float
        Seconds of raised-cosine fade at each tone edge.
    sample_format : str
        ``"float"`` (32-bit float WAV), ``"pcm16"`` or ``"pcm24"``.
    mode : str
        ``"sequence"`` (one tone per layer in turn, the reference) or
        ``"chord"`` (all layers at once, each at its own pitch).
    stereo : bool
        Spread the layers from left to right across the stereo field.
    spike_factor : float
        A norm at least this many times its layer's running median is a
        spike and sounds accented (brighter, sharper attack); 0 turns it off.
    spike_window : int
        Steps of each layer's history the running median looks back over.
    loudness : str
        ``"iso226"``: every pitch equally loud (ISO 226:2023 at 60 phon);
        ``"flat"``: the same amplitude for every pitch.

    Examples
    --------
    >>> SoundSettings(mapping="cubic")
    Traceback (most recent call last):
    ...
    sonify._errors.SonifyParameterError: unknown mapping 'cubic'; choose one of log, linear, relative
    """

    mapping: str | PitchMap = "log"
    norm_range: tuple[float, float] | str | None = None
    scale: str | None = None
    sample_rate: int = 44100
    tone_duration: float = 0.01
    gap: float | None = None
    amplitude: float = 0.1
    fade: float = 0.002
    sample_format: str = "float"
    mode: str = "sequence"
    stereo: bool = False
    spike_factor: float = SPIKE_FACTOR
    spike_window: int = SPIKE_WINDOW
    loudness: str = "iso226"

    def __post_init__(self) -> None:
        if isinstance(self.norm_range, str) and self.norm_range != "auto":
            raise SonifyParameterError(
                f"norm range {self.norm_range!r} is invalid; give 'auto' or two numbers LOW:HIGH"
            )
        if self.sample_format not in SAMPLE_FORMATS:
            raise SonifyParameterError(
                f"unknown sample format {self.sample_format!r}; choose one of {', '.join(SAMPLE_FORMATS)}"
            )
        if not isinstance(self.stereo, bool):
            raise SonifyParameterError(f"stereo={self.stereo!r} is invalid; give True or False")
        self._map(fitted=False)  # the mapping, its range and scale
        self.synthesizer(1)  # timing, amplitude, mode, loudness
        SpikeDetector(1, self.spike_factor, self.spike_window)

    def replace(self, **changes: Any) -> SoundSettings:
        """These settings with some changed (and checked).

        Examples
        --------
        >>> SoundSettings().replace(mapping="linear").mapping
        'linear'
        """
        return replace(self, **changes)

    def sounder(self, n_voices: int, pitch_map: PitchMap | None = None) -> Sounder:
        """The object that turns norms of ``n_voices`` layers into sound with these settings.

        ``pitch_map``: the map to use, when already fitted to a run
        (``norm_range="auto"``); see :meth:`pitch_map`.
        """
        return Sounder(self, n_voices, self.pitch_map() if pitch_map is None else pitch_map)

    def pitch_map(self, norms: np.ndarray | None = None) -> PitchMap:
        """The pitch map, fitted to ``norms`` when ``norm_range="auto"``."""
        pitch_map = self._map(fitted=True)
        if self.norm_range == "auto":
            if norms is None:
                raise SonifyParameterError(
                    "norm range 'auto' needs the whole run; use fixed bounds while recording "
                    "and render the log with {norm_range}auto afterwards"
                )
            pitch_map = pitch_map.fit(norms)
        return pitch_map

    def _map(self, fitted: bool) -> PitchMap:
        auto = self.norm_range == "auto"
        norm_range = None if auto or isinstance(self.norm_range, str) else self.norm_range
        return get_map(self.mapping, norm_range=norm_range, scale=self.scale)

    def synthesizer(self, n_voices: int) -> Synthesizer:
        """A synthesizer with these settings (a :class:`Sounder` holds one)."""
        return Synthesizer(
            n_voices,
            sample_rate=self.sample_rate,
            tone_duration=self.tone_duration,
            gap=self.gap,
            amplitude=self.amplitude,
            fade=self.fade,
            mode=self.mode,
            stereo=self.stereo,
            loudness=self.loudness,
            pitch_band=self._pitch_band(),
        )

    def step_duration(self, n_voices: int) -> float:
        """Seconds of sound per training step with ``n_voices`` layers."""
        return self.synthesizer(n_voices).step_duration

    def _pitch_band(self) -> tuple[float, float]:
        """Lowest and highest pitch the map can play (maps rise with the norm)."""
        pitch_map = get_map(self.mapping, scale=self.scale)
        low, high = pitch_map(np.array([1e-300, 1e300]), reference=np.ones(1))  # any home: the band is the same
        return float(low), float(high)

    def stats(self, log: NormLog) -> RunStats:
        """A log's totals as these settings sound it: spikes by their detector, cells off the scale by their map."""
        stats = log.stats(self.spike_factor, self.spike_window)
        sounder = self.sounder(len(log.layer_names), self.pitch_map(log.norms))
        for start in range(0, len(log), _STATS_BLOCK):
            block = slice(start, start + _STATS_BLOCK)
            stats.count_off_scale(sounder.off_scale(log.norms[block], log.missing[block]))
        return stats

    def as_dict(self, pitch_map: PitchMap | None = None) -> dict[str, Any]:
        """JSON-friendly settings (with the map actually used), for a run's metadata."""
        settings = asdict(self)
        settings["mapping"] = (pitch_map or self.pitch_map(np.ones(1))).as_dict()
        return settings

    def describe(self, pitch_map: PitchMap | None = None) -> dict[str, Any]:
        """Deprecated: :meth:`as_dict` (``describe`` now always means one line of text)."""
        import warnings

        warnings.warn("SoundSettings.describe() is now as_dict()", DeprecationWarning, stacklevel=2)
        return self.as_dict(pitch_map)


class Sounder:
    """Norms in, sound out: pitch map, spike detection, loudness and synthesis, wired in one place.

    A sounder keeps the state that makes a run's sound continuous: each
    voice's phase, each layer's spike history and the clock (the time of its
    next step). Give it the steps in order; one sounder per stream of sound.

    Parameters
    ----------
    settings : SoundSettings
    n_voices : int
    pitch_map : PitchMap
        The map in use (fitted to the run for ``norm_range="auto"``).
    """

    def __init__(self, settings: SoundSettings, n_voices: int, pitch_map: PitchMap) -> None:
        self.settings = settings
        self.pitch_map = pitch_map
        self.synth = settings.synthesizer(n_voices)
        self.spikes = SpikeDetector(n_voices, settings.spike_factor, settings.spike_window)
        self.n_voices = n_voices
        #: Each layer's home, for a relative map (learnt from the steps scored or passed over).
        self.homes = pitch_map.homes(n_voices)
        self._counted_homes: Homes | None = None
        #: Samples of sound scored so far: where the next step starts.
        self.frames = 0

    @property
    def sample_rate(self) -> int:
        return self.synth.sample_rate

    @property
    def channels(self) -> int:
        return self.synth.channels

    @property
    def step_samples(self) -> int:
        """Samples (per channel) of one step's sound."""
        return self.synth.step_samples

    @property
    def step_duration(self) -> float:
        return self.synth.step_duration

    def detect(self, norms: np.ndarray, missing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Spikes among the next steps, and their ratios to the running median (the history moves on).

        Use it for steps that are heard otherwise (skipped live, combined),
        then give the accents to :meth:`score`.
        """
        return self.spikes.detect(norms, missing)

    def score(
        self,
        norms: np.ndarray,
        missing: np.ndarray,
        accents: np.ndarray | None = None,
        steps: np.ndarray | None = None,
    ) -> Score:
        """The score of the next block of steps.

        Parameters
        ----------
        norms, missing : ndarray, shape (steps, voices)
        accents : ndarray of bool, optional
            Where tones are accented, when already known (found at full
            resolution before combining, or by :meth:`detect`); otherwise the
            spike detector finds them here.
        steps : ndarray of int, optional
            Step numbers (default: counting on from the previous block).
        """
        norms = np.asarray(norms, dtype=float)
        missing = np.asarray(missing, dtype=bool)
        if accents is None:
            accents = self.spikes.detect(norms, missing)[0]
        synth = self.synth
        reference = self.homes.update(norms, missing) if self.homes is not None else None
        pitched = self.pitch_map(norms, reference)
        freqs = synth.clamp(np.nan_to_num(pitched))
        rest = missing
        alarm = ~np.isfinite(norms) & ~rest
        zero = (norms == 0) & ~rest
        off = self._off_scale(norms, pitched, reference)
        silent = alarm | rest | zero
        kind = np.full(norms.shape, ToneKind.TONE, np.uint8)
        kind[np.asarray(accents, bool) & ~silent] = ToneKind.ACCENT
        kind[(off > 0) & ~silent] = ToneKind.ABOVE  # the glide says more than the accent: the map is left
        kind[(off < 0) & ~silent] = ToneKind.BELOW
        kind[zero] = ToneKind.ZERO
        kind[alarm] = ToneKind.ALARM
        kind[rest] = ToneKind.REST
        gain = synth.loudness_gain(np.where(silent, np.nan, freqs))
        gain[alarm | zero] = 1.0
        gain[rest] = 0.0
        count = len(norms)
        offsets = np.arange(count) * synth.step_samples + self.frames
        voice_offsets = np.zeros(self.n_voices) if synth.mode == "chord" else np.arange(self.n_voices)
        start = (offsets[:, None] + voice_offsets * synth.tone_samples) / synth.sample_rate
        self.frames += count * synth.step_samples
        if steps is None:
            steps = np.arange(count, dtype=np.int64)
        return Score(
            steps=np.asarray(steps, np.int64),
            start=start,
            duration=np.full(norms.shape, synth.tone_samples / synth.sample_rate),
            frequency=np.where(silent, np.nan, freqs),
            gain=gain,
            kind=kind,
            tone_duration=synth.tone_samples / synth.sample_rate,
            gap=synth.gap_samples / synth.sample_rate,
            mode=synth.mode,
            amplitude=synth.amplitude,
            pan=synth.pan,
            glide=synth.glide,
        )

    def _off_scale(self, norms: np.ndarray, pitched: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """Off the scale where the map clamps, or where the playable band does (linear map, low sample rates)."""
        off = self.pitch_map.off_scale(norms, reference)
        with np.errstate(invalid="ignore"):
            return np.where(pitched > self.synth.max_freq, 1, np.where(pitched < MIN_FREQ_HZ, -1, off)).astype(np.int8)

    def off_scale(self, norms: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Where the next steps' norms leave the map (+1 above, -1 below, else 0), as :meth:`score` will sound
        them: for a run's totals, which see every step even where the sound does not. Zeros, NaN/Inf and
        missing cells are 0. A relative map's homes are learnt here on their own (the same steps, in order).
        """
        norms = np.asarray(norms, dtype=float)
        missing = np.asarray(missing, dtype=bool)
        reference = None
        if self.pitch_map.relative:
            if self._counted_homes is None:
                self._counted_homes = self.pitch_map.homes(self.n_voices)
            reference = self._counted_homes.update(norms, missing) if self._counted_homes is not None else None
        off = self._off_scale(norms, self.pitch_map(norms, reference), reference)
        off[~np.isfinite(norms) | (norms == 0) | missing] = 0
        return off

    def pass_over(self, norms: np.ndarray, missing: np.ndarray) -> None:
        """Steps that will not be scored (skipped live): each layer's home still learns from them.

        Give them before the steps after them are scored; spikes are
        :meth:`detect`'s.
        """
        if self.homes is not None and not self.homes.settled:
            self.homes.update(norms, missing)

    def samples(self, score: Score) -> np.ndarray:
        """The samples of a score, continuing each voice's phase (see :meth:`Synthesizer.fill`)."""
        return self.synth.fill(self.synth.plan_score(score))

    def sound(self, norms: np.ndarray, missing: np.ndarray, accents: np.ndarray | None = None) -> np.ndarray:
        """Score and synthesize the next block in one call."""
        return self.samples(self.score(norms, missing, accents))
