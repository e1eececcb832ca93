"""Turn per-step pitches into audio samples.

Each training step becomes one *step frame*: one tone per voice (layer), one
after another, then a silence that marks the end of the batch::

    | voice 0 | voice 1 | ... | voice L-1 |  gap  |

Tones are sines whose phase continues from the voice's previous tone, with a
raised-cosine fade at both edges, so no sample ever jumps. What the slots
hold:

* a finite norm: a sine at the mapped pitch, clamped to 20 Hz .. 0.45 x the
  sample rate (so nothing aliases);
* a NaN or infinite norm: the **alarm**, a chord of three partials (C6, F#6,
  C7, a tritone and an octave) that no single finite norm can produce, since
  those always sound as one pure sine;
* a layer with no gradient this step (frozen, unused): silence, a rest;
* an **accented** tone (a spike: a norm far above its layer's recent
  median): the same pitch, brighter (its 2nd and 3rd harmonics join in) and
  with a sharp 0.25 ms attack; no ordinary tone has harmonics, and the alarm
  is not harmonic (C6, F#6, C7), so neither can be mistaken for it;
* a norm **off the scale** (above the map's top or below its bottom): the
  clamped pitch for the first half of the tone, then an exponential glide
  of an octave (:data:`GLIDE_SEMITONES`) up, or down, over the second half:
  it starts where an in-range tone at the edge would and then leaves the
  scale, so 1e5 and 1e35 are never heard as an in-range 1e4; the glide stops
  short of the playable band's edges;
* a norm of exactly **zero** (a dead layer): a short, muffled noise puff
  (noise between 300 and 1200 Hz, the same for every zero cell), which has
  no pitch, so it is neither a tone nor a rest.

In ``mode="chord"`` all voices sound at once for each step (one tone length,
then the gap), each at its own pitch; their sum is scaled so that it can never
clip. With ``stereo=True`` the voices are spread from left to right across
the stereo field (equal-power panning) and samples have two channels.

Synthesis is vectorised over whole blocks of steps and keeps no state but one
phase per voice, so memory stays flat however long the run.

Examples
--------
>>> import numpy as np
>>> synth = Synthesizer(n_voices=2)
>>> audio = synth.synthesize(np.array([[440.0, 660.0], [np.nan, 880.0]]))
>>> audio.dtype, audio.size == 2 * synth.step_samples
(dtype('float32'), True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._errors import SonifyParameterError
from .score import Score, ToneKind

__all__ = [
    "ACCENT_PARTIALS",
    "ALARM_PARTIALS_HZ",
    "GLIDE_SEMITONES",
    "LOUDNESS",
    "MIN_FREQ_HZ",
    "MODES",
    "NYQUIST_FRACTION",
    "ZERO_BAND_HZ",
    "Synthesizer",
    "equal_loudness_db",
]

#: How the voices of one step are laid out in time.
MODES = ("sequence", "chord")

#: Frequencies of the alarm chord that marks NaN/Inf norms.
ALARM_PARTIALS_HZ = (1046.5, 1480.0, 2093.0)
#: How tones are made equally loud: by the ISO 226:2023 contour ("iso226"), or not at all ("flat").
LOUDNESS = ("iso226", "flat")
#: Sound pressure level (dB) of a pure tone heard as loud as 60 dB at 1 kHz (60 phon), ISO 226:2023,
#: at the standard's 29 frequencies (Hz). A tone's gain follows this contour, so every pitch sounds alike.
_ISO226_HZ = (20, 25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600,
              2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500)  # fmt: skip
_ISO226_60_PHON_DB = (109.51, 104.23, 99.08, 94.18, 89.96, 85.94, 82.05, 78.65, 75.56, 72.47, 69.86, 67.53, 65.39,
                      63.45, 62.05, 60.82, 59.89, 60.01, 62.15, 63.19, 59.96, 57.26, 56.42, 57.57, 60.89, 66.36,
                      71.66, 73.16, 68.63)  # fmt: skip


def equal_loudness_db(freqs: np.ndarray) -> np.ndarray:
    """Level (dB SPL) at which a pure tone of each frequency sounds as loud as 60 dB at 1 kHz (ISO 226:2023).

    Interpolated linearly over log-frequency between the standard's points, held beyond its ends.

    Examples
    --------
    >>> equal_loudness_db(np.array([1000.0, 3150.0])).round(2)
    array([60.01, 56.42])
    """
    return np.interp(np.log(np.asarray(freqs, dtype=float)), np.log(_ISO226_HZ), _ISO226_60_PHON_DB)


#: Harmonics and their gains in an accented tone (a spike). Their peak stays below the alarm's.
ACCENT_PARTIALS = ((1, 0.7), (2, 0.45), (3, 0.3))
#: How far a tone off the scale glides (up above the map, down below it), over the second half of the tone.
GLIDE_SEMITONES = 12.0
#: The band of the noise puff that marks a norm of exactly zero, and its RMS level relative to ``amplitude``.
ZERO_BAND_HZ = (300.0, 1200.0)
_ZERO_RMS = 0.35
#: Lowest pitch played; lower mapped pitches are raised to it.
MIN_FREQ_HZ = 20.0
#: Highest pitch played, as a fraction of the sample rate (always below it).
NYQUIST_FRACTION = 0.45


class Synthesizer:
    """Render blocks of steps to float32 samples, one voice per layer.

    Parameters
    ----------
    n_voices : int
        Number of tones per step (layers or groups).
    sample_rate : int
        Samples per second.
    tone_duration : float
        Length of each tone in seconds (the reference used 0.01).
    gap : float, optional
        Silence after each step in seconds; two tone lengths by default.
    amplitude : float
        Peak amplitude of a tone (the alarm's partials each get 0.6 of it).
    fade : float
        Length of the raised-cosine fade at each tone edge, in seconds,
        at most a quarter of the tone.
    mode : str
        ``"sequence"`` (one tone per voice, one after another, as in 2019) or
        ``"chord"`` (all voices at once).
    stereo : bool
        Pan the voices from left (first) to right (last); two channels.
    loudness : str
        ``"flat"`` (default here): every tone at ``amplitude``; ``"iso226"``
        (the default of :class:`~sonify.SoundSettings`): each tone's amplitude
        follows the ISO 226:2023 equal-loudness contour at 60 phon, so that a
        change of pitch is not also heard as a change of loudness.
    pitch_band : (float, float), optional
        Lowest and highest pitch the map plays (default: the whole playable
        band). Under ``"iso226"`` the pitch of the band where the ear is least
        sensitive keeps the full amplitude; all others are turned down.
    """

    def __init__(
        self,
        n_voices: int,
        *,
        sample_rate: int = 44100,
        tone_duration: float = 0.01,
        gap: float | None = None,
        amplitude: float = 0.1,
        fade: float = 0.002,
        mode: str = "sequence",
        stereo: bool = False,
        loudness: str = "flat",
        pitch_band: tuple[float, float] | None = None,
    ) -> None:
        if n_voices < 1:
            raise SonifyParameterError("nothing to play: no layers were selected; check the layer selection")
        if sample_rate < 8000:
            raise SonifyParameterError(f"sample rate {sample_rate} Hz is too low; use at least 8000 Hz")
        if not 0.0 < amplitude <= 0.5:
            raise SonifyParameterError(f"amplitude {amplitude} is out of range; use a value in (0, 0.5]")
        if mode not in MODES:
            raise SonifyParameterError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if loudness not in LOUDNESS:
            raise SonifyParameterError(f"unknown loudness {loudness!r}; choose one of {', '.join(LOUDNESS)}")
        gap = 2.0 * tone_duration if gap is None else gap
        self.mode = mode
        self.channels = 2 if stereo else 1
        self.n_voices = n_voices
        self.sample_rate = int(sample_rate)
        self.amplitude = float(amplitude)
        self.tone_samples = round(tone_duration * sample_rate)
        self.gap_samples = round(gap * sample_rate)
        if self.tone_samples < 8 or self.gap_samples < 0:
            raise SonifyParameterError(
                f"tone of {tone_duration * 1000:g} ms / gap of {gap * 1000:g} ms is too short; "
                "use tones of at least 1 ms and a gap of 0 or more"
            )
        self.step_samples = (1 if mode == "chord" else n_voices) * self.tone_samples + self.gap_samples
        self._mix = self._voice_gains(n_voices, stereo)
        self.max_freq = math.nextafter(NYQUIST_FRACTION * sample_rate, 0.0)
        fade_samples = max(1, min(round(fade * sample_rate), self.tone_samples // 4))
        self._fade = _raised_cosine(fade_samples)
        self._grid = _factor_grid(self.tone_samples)
        self._row_offsets = np.arange(self._grid[0], dtype=np.float32) * self._grid[1]
        self._col_offsets = np.arange(self._grid[1], dtype=np.float32)
        self._alarm = self._alarm_wave()
        self._zero = self._zero_wave()
        self.glide = GLIDE_SEMITONES
        self._glide_start = self.tone_samples // 2  # a glide holds the clamped pitch for the first half
        # Equal loudness: the least sensitive pitch the map can play keeps the full amplitude, every other
        # pitch is turned down to sound as loud; nothing gets louder, so nothing can clip.
        self.loudness = loudness
        low, high = pitch_band or (MIN_FREQ_HZ, self.max_freq)
        low, high = (min(max(MIN_FREQ_HZ, f), self.max_freq) for f in (low, high))
        band = np.geomspace(low, max(low, high), 512)
        self._loudest_db = float(equal_loudness_db(band).max())
        self._accent_envelope = np.ones(self.tone_samples, np.float32)
        attack = _raised_cosine(max(1, min(round(0.00025 * sample_rate), fade_samples)))
        self._accent_envelope[: attack.size] = attack
        self._accent_envelope[self.tone_samples - self._fade.size :] = self._fade[::-1]
        self._phase = np.zeros(n_voices)  # radians, where each voice's next tone starts

    @property
    def step_duration(self) -> float:
        """Seconds of audio per training step."""
        return self.step_samples / self.sample_rate

    def clamp(self, freqs: np.ndarray) -> np.ndarray:
        """Frequencies limited to the playable band (NaN stays NaN)."""
        return np.clip(freqs, MIN_FREQ_HZ, self.max_freq)

    def synthesize(
        self, freqs: np.ndarray, rests: np.ndarray | None = None, accents: np.ndarray | None = None
    ) -> np.ndarray:
        """Samples for a block of steps, continuing the phase of earlier blocks.

        Parameters
        ----------
        freqs : ndarray, shape (steps, n_voices)
            Pitch of each tone in Hz; NaN (or any non-finite value) sounds the alarm.
        rests : ndarray of bool, same shape, optional
            True where the voice is silent (no gradient this step).
        accents : ndarray of bool, same shape, optional
            True where the tone is accented (a spike).

        Returns
        -------
        ndarray of float32, shape (steps * step_samples,), or (steps * step_samples, 2) in stereo
        """
        plan = self.plan(freqs, rests, accents)
        return self.fill(plan)

    def plan(self, freqs: np.ndarray, rests: np.ndarray | None = None, accents: np.ndarray | None = None) -> _BlockPlan:
        """Fix pitches and start phases of a block and advance the voices (see :meth:`plan_score`).

        Splitting :meth:`synthesize` into ``plan`` (cheap, sequential) and
        ``fill`` (costly, independent per block) lets callers fill several
        blocks in parallel.
        """
        freqs = np.asarray(freqs, dtype=float)
        if freqs.ndim != 2 or freqs.shape[1] != self.n_voices:
            raise SonifyParameterError(f"expected pitches of shape (steps, {self.n_voices}), got {freqs.shape}")
        rest = np.zeros(freqs.shape, bool) if rests is None else np.asarray(rests, bool)
        alarm = ~np.isfinite(freqs) & ~rest
        silent = alarm | rest
        played = np.where(silent, np.nan, self.clamp(np.nan_to_num(freqs)))
        accent = None if accents is None else np.asarray(accents, bool) & ~silent
        gain = self.loudness_gain(played) if self.loudness == "iso226" else None
        return self._plan(played, alarm, rest, accent, gain)

    def plan_score(self, score: Score) -> _BlockPlan:
        """Plan a block from its :class:`~sonify.score.Score` (what a :class:`~sonify.sound.Sounder` makes)."""
        if score.kind.ndim != 2 or score.kind.shape[1] != self.n_voices:
            raise SonifyParameterError(f"expected a score of {self.n_voices} voices, got shape {score.kind.shape}")
        kind = score.kind
        accent = kind == ToneKind.ACCENT
        zero = kind == ToneKind.ZERO
        direction = (kind == ToneKind.ABOVE).astype(np.int8) - (kind == ToneKind.BELOW).astype(np.int8)
        plan = self._plan(
            score.frequency,
            kind == ToneKind.ALARM,
            (kind == ToneKind.REST) | zero,
            accent if accent.any() else None,
            score.gain,
            self._glide_ratios(score.frequency, direction, score.glide) if direction.any() else None,
        )
        plan.zero = zero if zero.any() else None
        return plan

    def _glide_ratios(self, freqs: np.ndarray, direction: np.ndarray, semitones: float) -> np.ndarray:
        """End over start frequency of each tone's glide (1: none), kept within the playable band."""
        with np.errstate(invalid="ignore", divide="ignore"):
            up = np.minimum(2.0 ** (semitones / 12.0), self.max_freq / freqs)
            down = np.maximum(2.0 ** (-semitones / 12.0), MIN_FREQ_HZ / freqs)
        return np.where(direction > 0, up, np.where(direction < 0, down, 1.0))

    def _plan(
        self,
        freqs: np.ndarray,
        alarm: np.ndarray,
        rest: np.ndarray,
        accent: np.ndarray | None,
        gain: np.ndarray | None,
        glide: np.ndarray | None = None,
    ) -> _BlockPlan:
        """``freqs``: in the band where a tone sounds (NaN where silent); ``gain``: the loudness factor;
        ``glide``: each tone's end over start frequency (None: no glides)."""
        silent = alarm | rest
        omega = np.where(silent, 0.0, 2.0 * math.pi * freqs / self.sample_rate)
        advance = omega * self.tone_samples
        if glide is not None:
            gliding = glide != 1.0
            held, moving = self._glide_start, self.tone_samples - self._glide_start
            ratio = glide[gliding]
            advance[gliding] = omega[gliding] * (held + moving * (ratio - 1.0) / np.log(ratio))
            glide = np.where(silent, 1.0, glide)
        starts = np.cumsum(advance, axis=0) - advance + self._phase
        if len(freqs):
            self._phase = np.remainder(starts[-1] + advance[-1], 2.0 * math.pi)
        return _BlockPlan(omega, np.remainder(starts, 2.0 * math.pi), alarm, rest, accent, gain, glide)

    def loudness_gain(self, freqs: np.ndarray) -> np.ndarray:
        """Each pitch's gain (1 at most) under the loudness setting; NaN pitches get the gain of 1 kHz."""
        played = np.where(np.isnan(freqs), 1000.0, self.clamp(freqs))
        if self.loudness != "iso226":
            return np.ones(played.shape)
        return 10.0 ** ((np.minimum(equal_loudness_db(played), self._loudest_db) - self._loudest_db) / 20.0)

    def instrument(self) -> dict[str, Any]:
        """Everything a synthesizer elsewhere needs, besides a :class:`Score`, to make these samples (JSON-ready).

        A browser's synthesizer (``sonify serve``) gets it once per run: the
        timing, the fades, the accent's attack and partials, the glide, the
        voices' mix, and the two fixed waves (the alarm chord and the zero's
        puff), so that it computes the same formulas as :meth:`fill`.
        """
        return {
            "sample_rate": self.sample_rate,
            "voices": self.n_voices,
            "channels": self.channels,
            "mode": self.mode,
            "tone_samples": self.tone_samples,
            "gap_samples": self.gap_samples,
            "step_samples": self.step_samples,
            "amplitude": self.amplitude,
            "fade": self._fade.tolist(),
            "accent_envelope": self._accent_envelope.tolist(),
            "accent_partials": [list(partial) for partial in ACCENT_PARTIALS],
            "glide": self.glide,
            "glide_start": self._glide_start,
            "min_freq": MIN_FREQ_HZ,
            "max_freq": self.max_freq,
            "mix": None if self._mix is None else self._mix.tolist(),
            "alarm": self._alarm.tolist(),
            "zero": self._zero.tolist(),
        }

    @property
    def pan(self) -> tuple[float, ...] | None:
        """Each voice's place from left (0) to right (1) in stereo; None in mono."""
        if self.channels == 1:
            return None
        return tuple(np.linspace(0.0, 1.0, self.n_voices).tolist()) if self.n_voices > 1 else (0.5,)

    def fill(self, plan: _BlockPlan, out: np.ndarray | None = None) -> np.ndarray:
        """Samples of a planned block (pure: safe to call from several threads).

        Parameters
        ----------
        plan : _BlockPlan
            From :meth:`plan`.
        out : ndarray of float32, optional
            Buffer of at least ``steps * step_samples * channels`` samples to
            write into (reused buffers avoid page faults on long renders).
        """
        steps, voices = plan.omega.shape
        size = steps * self.step_samples * self.channels
        out = np.empty(size, dtype=np.float32) if out is None else out.reshape(-1)[:size]
        grid = out.reshape(steps, self.step_samples, self.channels)
        sounding = (1 if self.mode == "chord" else voices) * self.tone_samples
        grid[:, sounding:] = 0.0
        if self._mix is None:  # mono sequence: tones are written in place
            self._tones(plan, grid[:, :, 0][:, :sounding].reshape(steps, voices, self.tone_samples))
        else:
            tones = self._tones(plan, np.empty((steps, voices, self.tone_samples), np.float32))
            if self.mode == "chord":  # (steps, voices, T) x (voices, channels) -> (steps, T, channels)
                np.einsum("svt,vc->stc", tones, self._mix, out=grid[:, :sounding])
            else:
                stereo = tones[..., None] * self._mix[None, :, None, :]
                grid[:, :sounding] = stereo.reshape(steps, sounding, self.channels)
        return out if self.channels == 1 else out.reshape(-1, self.channels)

    def _tones(self, plan: _BlockPlan, tones: np.ndarray) -> np.ndarray:
        """Every voice's faded tone (or alarm, or rest) for every step, into ``tones``."""
        self._sines(plan, tones)
        tones[..., : self._fade.size] *= self._fade
        tones[..., self.tone_samples - self._fade.size :] *= self._fade[::-1]
        if plan.alarm.any():
            tones[plan.alarm] = self._alarm
        if plan.rest.any():
            tones[plan.rest] = 0.0
        if plan.zero is not None:
            tones[plan.zero] = self._zero
        if plan.accent is not None and plan.accent.any():
            gain = 1.0 if plan.gain is None else plan.gain[plan.accent][:, None]
            tones[plan.accent] = gain * self._accented(plan.start[plan.accent], plan.omega[plan.accent])
        if plan.glide is not None:
            gliding = plan.glide != 1.0
            if gliding.any():
                gain = 1.0 if plan.gain is None else plan.gain[gliding][:, None]
                tones[gliding] = gain * self._glides(plan.start[gliding], plan.omega[gliding], plan.glide[gliding])
        return tones

    def _accented(self, start: np.ndarray, omega: np.ndarray) -> np.ndarray:
        """Accented tones (rare: computed directly): harmonics 1-3 below the band's top, sharp attack."""
        phase = start[:, None] + omega[:, None] * np.arange(self.tone_samples)
        wave = np.zeros(phase.shape)
        for harmonic, gain in ACCENT_PARTIALS:
            audible = (harmonic * omega * self.sample_rate / (2.0 * math.pi) < self.max_freq)[:, None]
            wave += np.where(audible, gain * np.sin(harmonic * phase), 0.0)
        return (self.amplitude * wave * self._accent_envelope).astype(np.float32)

    def _glides(self, start: np.ndarray, omega: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """Tones off the scale: the pitch held for the first half, then an exponential glide to ``ratio``
        times it, phase-continuous, under the ordinary fades.

        Off-scale tones share a few shapes (a map clamps to its ends, so they start at one pitch or
        two): each shape's phase curve is computed once, and a tone is ``sin(start + curve)`` =
        ``sin(start) cos(curve) + cos(start) sin(curve)``.
        """
        held, moving = self._glide_start, self.tone_samples - self._glide_start
        shapes, shape = np.unique(np.stack([omega, ratio], axis=1), axis=0, return_inverse=True)
        n = np.arange(self.tone_samples, dtype=float)
        log_ratio = np.log(shapes[:, 1])[:, None]
        into = np.maximum(n - held, 0.0) / moving  # how far into the glide, 0 .. 1
        glided = moving * np.expm1(log_ratio * into) / log_ratio  # samples' worth of phase at the start pitch
        curve = shapes[:, :1] * (np.minimum(n, held) + glided)
        envelope = np.ones(self.tone_samples)
        envelope[: self._fade.size] = self._fade
        envelope[self.tone_samples - self._fade.size :] = self._fade[::-1]
        # (shapes, 2, T): the cosine and sine of each shape's curve, faded; a tone is [sin, cos](start) @ them.
        basis = (self.amplitude * envelope * np.stack([np.cos(curve), np.sin(curve)], axis=1)).astype(np.float32)
        weights = np.stack([np.sin(start), np.cos(start)], axis=1).astype(np.float32)
        shape = shape.reshape(-1)
        wave = np.empty((len(start), self.tone_samples), np.float32)
        for index in range(len(shapes)):
            tones = shape == index
            wave[tones] = weights[tones] @ basis[index]
        return wave

    def _voice_gains(self, voices: int, stereo: bool) -> np.ndarray | None:
        """(voices, channels) gains, or None for the mono sequence (gain 1 everywhere)."""
        if self.mode == "sequence" and not stereo:
            return None
        gains = np.ones((voices, 1))
        if self.mode == "chord":
            # Voices add up: the loudest possible sum (every voice an alarm, 1.8 x amplitude) stays below 1.
            gains *= min(1.0 / math.sqrt(voices), 1.0 / (1.8 * self.amplitude * voices))
        if stereo:
            angle = np.linspace(0.0, 0.5 * math.pi, voices) if voices > 1 else np.array([0.25 * math.pi])
            gains = gains * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # equal power
        return gains.astype(np.float32)

    def _sines(self, plan: _BlockPlan, tones: np.ndarray) -> None:
        """Write ``amplitude * sin(start + omega * n)`` for every tone.

        Sample n = a * cols + b of a tone is sin(x_a + y_b) with
        x_a = start + omega * cols * a and y_b = omega * b, which is
        sin(x_a) cos(y_b) + cos(x_a) sin(y_b): a rank-2 outer product. So a
        tone of T samples needs about 4 * sqrt(T) sines and one small matrix
        product instead of T sines, which is several times faster.
        """
        rows, cols = self._grid
        omega = plan.omega.astype(np.float32)[:, :, None]
        angles = np.zeros((*plan.omega.shape, 2, max(rows, cols)), dtype=np.float32)
        np.multiply(omega, self._row_offsets, out=angles[:, :, 0, :rows])
        angles[:, :, 0, :rows] += plan.start.astype(np.float32)[:, :, None]
        np.multiply(omega, self._col_offsets, out=angles[:, :, 1, :cols])
        sines, cosines = np.sin(angles), np.cos(angles)
        left = np.stack((sines[:, :, 0, :rows], cosines[:, :, 0, :rows]), axis=-1)
        left *= (
            self.amplitude if plan.gain is None else (self.amplitude * plan.gain).astype(np.float32)[..., None, None]
        )
        right = np.stack((cosines[:, :, 1, :cols], sines[:, :, 1, :cols]), axis=-2)
        if rows * cols == self.tone_samples:
            np.matmul(left, right, out=tones.reshape((*tones.shape[:2], rows, cols)))
        else:
            padded = np.matmul(left, right).reshape((*tones.shape[:2], rows * cols))
            tones[...] = padded[..., : self.tone_samples]

    def _alarm_wave(self) -> np.ndarray:
        t = np.arange(self.tone_samples) / self.sample_rate
        partials = [f for f in ALARM_PARTIALS_HZ if f < self.max_freq]
        wave = 0.6 * self.amplitude * np.sum([np.sin(2.0 * math.pi * f * t) for f in partials], axis=0)
        wave[: self._fade.size] *= self._fade
        wave[self.tone_samples - self._fade.size :] *= self._fade[::-1]
        return wave.astype(np.float32)

    def _zero_wave(self) -> np.ndarray:
        """The puff of a zero norm: noise in :data:`ZERO_BAND_HZ` (the same every time), under the fades.

        Cut from a longer band-limited noise, so that it has no period (a
        tone-long noise would repeat at 1 / tone_duration and sound pitched).
        """
        length = 8 * self.tone_samples
        spectrum = np.fft.rfft(np.random.default_rng(2019).standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1.0 / self.sample_rate)
        low, high = (min(f, self.max_freq / 2.0) for f in ZERO_BAND_HZ)
        spectrum[(freqs < low) | (freqs > high)] = 0.0
        noise = np.fft.irfft(spectrum, length)[3 * self.tone_samples : 4 * self.tone_samples]
        noise[: self._fade.size] *= self._fade
        noise[self.tone_samples - self._fade.size :] *= self._fade[::-1]
        noise *= _ZERO_RMS * self.amplitude / math.sqrt(np.mean(noise**2))
        return noise.astype(np.float32)


class _BlockPlan:
    """Per-tone angular frequency, start phase and slot kind of one block."""

    __slots__ = ("accent", "alarm", "gain", "glide", "omega", "rest", "start", "zero")

    def __init__(
        self,
        omega: np.ndarray,
        start: np.ndarray,
        alarm: np.ndarray,
        rest: np.ndarray,
        accent: np.ndarray | None,
        gain: np.ndarray | None = None,
        glide: np.ndarray | None = None,
    ) -> None:
        self.omega, self.start, self.alarm, self.rest, self.accent, self.gain = omega, start, alarm, rest, accent, gain
        #: End over start frequency of each tone (1 for a steady tone); None when no tone glides.
        self.glide = glide
        #: Where a zero norm sounds its puff; None when there is none.
        self.zero: np.ndarray | None = None


def _raised_cosine(samples: int) -> np.ndarray:
    """Fade-in gains rising from near 0 to near 1 (reverse it to fade out)."""
    return (0.5 - 0.5 * np.cos(math.pi * (np.arange(samples) + 0.5) / samples)).astype(np.float32)


def _factor_grid(samples: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols >= samples, both near the square root.

    An exact factorisation lets the tone be written in place; otherwise a
    padded grid is computed and cut.
    """
    root = math.isqrt(samples)
    for cols in range(root, max(1, root // 2), -1):
        if samples % cols == 0:
            return samples // cols, cols
    cols = root + 1
    return -(-samples // cols), cols
