"""Reading back what was played or rendered: tones, pitches, alarms, frames."""

from __future__ import annotations

import io

import numpy as np
import soundfile


def decode_tones(audio: np.ndarray, sample_rate: int, n_voices: int, tone_samples: int, gap_samples: int) -> np.ndarray:
    """Estimate the frequency of every tone slot from the samples alone.

    Each slot's samples are windowed and zero-padded; the spectral peak is
    refined by parabolic interpolation. Returns (steps, voices) in Hz.
    """
    step = n_voices * tone_samples + gap_samples
    steps = len(audio) // step
    slots = audio[: steps * step].reshape(steps, step)[:, : n_voices * tone_samples]
    slots = slots.reshape(steps, n_voices, tone_samples) * np.hanning(tone_samples)
    size = 1 << 16
    spectrum = np.abs(np.fft.rfft(slots, n=size, axis=-1))
    peak = spectrum.argmax(axis=-1)
    peak = np.clip(peak, 1, spectrum.shape[-1] - 2)
    left = np.take_along_axis(spectrum, (peak - 1)[..., None], -1)[..., 0]
    middle = np.take_along_axis(spectrum, peak[..., None], -1)[..., 0]
    right = np.take_along_axis(spectrum, (peak + 1)[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):  # silent slots
        offset = np.nan_to_num(0.5 * (left - right) / (left - 2 * middle + right))
    return (peak + offset) * sample_rate / size


def refine_tones(audio: np.ndarray, synth, estimates: np.ndarray) -> np.ndarray:
    """Sharpen :func:`decode_tones` estimates by least squares: the frequency whose sinusoid, under the
    tone's raised-cosine fades, best explains each slot's samples. Exact for a lone faded sine."""
    from scipy.optimize import minimize_scalar

    n = synth.tone_samples
    fade = round(0.002 * synth.sample_rate)  # the default fade, as the synthesizer applies it
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    envelope = np.ones(n)
    envelope[:fade], envelope[n - fade :] = ramp, ramp[::-1]
    t = np.arange(n) / synth.sample_rate
    refined = np.array(estimates, dtype=float)
    for row, voice in np.ndindex(refined.shape):
        start = row * synth.step_samples + voice * n
        slot = audio[start : start + n].astype(float)
        if not np.any(slot):
            continue

        def residual(freq, slot=slot):
            basis = envelope[:, None] * np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
            coef, *_ = np.linalg.lstsq(basis, slot, rcond=None)
            return float(np.sum((slot - basis @ coef) ** 2))

        guess = refined[row, voice]
        refined[row, voice] = minimize_scalar(
            residual, bounds=(guess * 0.995, guess * 1.005), method="bounded", options={"xatol": 1e-6}
        ).x
    return refined


def spectral_peaks(slot: np.ndarray, sample_rate: int, threshold: float = 0.25) -> list[float]:
    """Frequencies of the local maxima above ``threshold`` x the largest."""
    size = 1 << 15
    spectrum = np.abs(np.fft.rfft(slot * np.hanning(len(slot)), n=size))
    top = spectrum.max()
    peaks = [
        i
        for i in range(1, len(spectrum) - 1)
        if spectrum[i] >= threshold * top and spectrum[i] >= spectrum[i - 1] and spectrum[i] > spectrum[i + 1]
    ]
    return [i * sample_rate / size for i in peaks]


def frames_played(captured: np.ndarray, expected_frames: list[np.ndarray], atol: float = 1e-5) -> list[int]:
    """Where each expected frame starts in a capture, in order (samples equal within ``atol``).

    ``atol`` allows for float32 rounding when the same sound is synthesized in
    other block sizes; the capture itself is bit-exact.

    Live playback may put silence between frames (training slower than the
    sound), never inside one, so each frame is looked for after the previous.
    """
    starts, position = [], 0
    for frame in expected_frames:
        lead = int(np.flatnonzero(frame)[0])
        rest = np.flatnonzero(captured[position:])
        assert rest.size, f"frame {len(starts)} never played"
        start = position + int(rest[0]) - lead
        np.testing.assert_allclose(
            captured[start : start + len(frame)], frame, rtol=0, atol=atol, err_msg=f"frame {len(starts)}"
        )
        starts.append(start)
        position = start + len(frame)
    return starts


def decoded(data: bytes) -> np.ndarray:
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples


def is_alarm(slot, sample_rate=44100):
    """Whether a slot of sound is the alarm chord (its three partials and nothing else)."""
    from sonify.synthesize import ALARM_PARTIALS_HZ

    peaks = spectral_peaks(slot, sample_rate, threshold=0.3)
    return len(peaks) == 3 and all(abs(p - f) < 15 for p, f in zip(peaks, ALARM_PARTIALS_HZ))


#: What :func:`decode_cells` reads from each cell, by :class:`sonify.ToneKind` name.
CELL_STATES = ("TONE", "REST", "ALARM", "ACCENT", "ABOVE", "BELOW", "ZERO")


def _sine_fit(segment: np.ndarray, sample_rate: int, harmonics=(1,)) -> tuple[float, float]:
    """The sum of harmonics of one fundamental that best explains ``segment``: (fundamental, residual
    energy / energy)."""
    from scipy.optimize import minimize_scalar

    t = np.arange(len(segment)) / sample_rate
    energy = float(np.sum(segment**2))

    def residual(freq):
        basis = np.stack([wave(2 * np.pi * h * freq * t) for h in harmonics for wave in (np.sin, np.cos)], 1)
        coef, *_ = np.linalg.lstsq(basis, segment, rcond=None)
        return float(np.sum((segment - basis @ coef) ** 2)) / energy

    # A segment of a cycle or two has a blunt spectral peak: search around it on a grid, then refine.
    guess = _peak_frequency(segment, sample_rate)
    grid = guess * np.geomspace(0.7, 1.4, 71)
    best = grid[int(np.argmin([residual(f) for f in grid]))]
    found = minimize_scalar(residual, bounds=(best * 0.99, best * 1.01), method="bounded", options={"xatol": 1e-7})
    return float(found.x), float(found.fun)


def _peak_frequency(segment: np.ndarray, sample_rate: int) -> float:
    size = 1 << 16
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=size))
    peak = int(np.clip(spectrum[1:].argmax() + 1, 1, len(spectrum) - 2))
    left, middle, right = spectrum[peak - 1 : peak + 2]
    offset = 0.5 * (left - right) / (left - 2 * middle + right) if left - 2 * middle + right else 0.0
    return (peak + offset) * sample_rate / size


def decode_cell(slot: np.ndarray, sample_rate: int, fade_samples: int) -> tuple[str, float]:
    """The state of one cell (a :data:`CELL_STATES` name) and its frequency (NaN where it has none), from
    its samples alone.

    Inside the fades a tone is one exact sinusoid; an accent is exactly three harmonics; a tone off the
    scale is one sinusoid for its first half and then moves (up or down); the alarm is its three fixed
    partials; a zero is noise (no sinusoid explains even its first half); a rest is silence.
    """
    slot = np.asarray(slot, dtype=float)
    n = len(slot)
    if np.max(np.abs(slot)) < 1e-6:
        return "REST", float("nan")
    if is_alarm(slot.astype(np.float32), sample_rate):
        return "ALARM", float("nan")
    inside = slot[fade_samples : n - fade_samples]
    freq, residual = _sine_fit(inside, sample_rate)
    if residual < 1e-6:
        return "TONE", freq
    accent, harmonic_residual = _sine_fit(inside, sample_rate, harmonics=(1, 2, 3))
    if harmonic_residual < 1e-6:
        return "ACCENT", accent
    held, held_residual = _sine_fit(slot[fade_samples : n // 2], sample_rate)
    if held_residual < 1e-6:
        from scipy.signal import hilbert

        # Where the second half went: the instantaneous frequency over its last half, against the held pitch.
        phase = np.unwrap(np.angle(hilbert(slot[fade_samples : n - fade_samples])))
        moved = np.median(np.diff(phase)[-(n // 4) :]) * sample_rate / (2 * np.pi)
        return ("ABOVE" if moved > held else "BELOW"), held
    if held_residual > 0.01:
        return "ZERO", float("nan")
    return "UNKNOWN", float("nan")


def decode_cells(audio: np.ndarray, synth) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's state and frequency in mono sequence audio laid out as ``synth``'s steps."""
    steps = len(audio) // synth.step_samples
    fade = round(0.002 * synth.sample_rate)
    states = np.empty((steps, synth.n_voices), dtype=object)
    freqs = np.full((steps, synth.n_voices), np.nan)
    for step, voice in np.ndindex(steps, synth.n_voices):
        start = step * synth.step_samples + voice * synth.tone_samples
        states[step, voice], freqs[step, voice] = decode_cell(
            audio[start : start + synth.tone_samples], synth.sample_rate, fade
        )
    return states, freqs


def find_frames(captured: np.ndarray, frames: list[np.ndarray], atol: float = 1e-3) -> list[int | None]:
    """Where each frame was played in a capture, in order; None for a frame not found (a dropout, a skip).

    Looks for each frame after the previous one found, by cross-correlation, and accepts a place only
    where the samples match within ``atol`` (the page's synthesizer computes in float64, Python's in
    float32: they differ by about 1e-6).
    """
    from scipy.signal import fftconvolve

    captured = np.asarray(captured, dtype=float)
    found: list[int | None] = []
    position = 0
    for frame in frames:
        frame = np.asarray(frame, dtype=float)
        rest = captured[position:]
        if len(rest) < len(frame) or not frame.any():
            found.append(None)
            continue
        score = fftconvolve(rest, frame[::-1], mode="valid")
        start = int(np.argmax(score))
        if np.max(np.abs(rest[start : start + len(frame)] - frame)) <= atol:
            found.append(position + start)
            position += start + len(frame)
        else:
            found.append(None)
    return found


def frames_of_rows(rows: list[dict], sound) -> list[np.ndarray]:
    """The samples of the rows a page played (its ``state.playedRows``: frequency, gain, kind per voice), by
    Python's synthesizer, phases continuing from row to row as the page's do."""
    import sonify

    voices = len(rows[0]["kind"]) if rows else 1
    synth = sound.synthesizer(voices)
    frames = []
    for row in rows:
        score = sonify.Score.from_dict(
            {
                "steps": [row["step"]],
                "start": [[0.0] * voices],
                "duration": [[sound.tone_duration] * voices],
                "frequency": [[np.nan if f is None else f for f in row["frequency"]]],
                "gain": [row["gain"]],
                "kind": [row["kind"]],
                "tone_duration": sound.tone_duration,
                "gap": synth.gap_samples / synth.sample_rate,
                "mode": sound.mode,
                "amplitude": sound.amplitude,
            }
        )
        frames.append(synth.fill(synth.plan_score(score)))
    return frames
