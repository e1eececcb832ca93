"""The one sound path: every state of a cell has its own sound, and the audio alone tells them apart."""

import numpy as np
import pytest
import soundfile

import sonify
from helpers import decode_cells
from sonify import SoundSettings, ToneKind
from sonify.synthesize import NYQUIST_FRACTION

STATES = ["TONE", "ABOVE", "BELOW", "ZERO", "REST", "ALARM"]


def log_of_every_state(steps=200, layers=5, seed=5):
    """A log no training produced: every state in random places, norms over 8 decades and far beyond.

    Returns the norms, the missing cells and each cell's intended state (spikes are left to the detector).
    """
    rng = np.random.default_rng(seed)
    state = rng.choice(len(STATES), (steps, layers), p=[0.55, 0.09, 0.09, 0.09, 0.09, 0.09])
    norms = 10 ** rng.uniform(-4, 4, (steps, layers))  # in the default map's range, 1e-4 .. 1e4
    above, below = state == 1, state == 2
    norms[above] = 10 ** rng.uniform(4.05, 38, above.sum())  # up to 1e38, as in the diverging reference run
    norms[below] = 10 ** rng.uniform(-12, -4.05, below.sum())
    norms[state == 3] = 0.0
    missing = state == 4
    norms[missing] = np.nan
    norms[state == 5] = rng.choice([np.nan, np.inf, -np.inf], (state == 5).sum())
    return norms, missing, np.array(STATES, dtype=object)[state]


def clicks(audio, synth, jump=0.07):
    """Cells that start or stop away from silence, gaps that are not silent, and jumps between samples larger
    than any cue makes (0.7 of a tone's amplitude: the fastest cue, a glide to 7 kHz, moves at most 0.58)."""
    steps = len(audio) // synth.step_samples
    frames = audio[: steps * synth.step_samples].reshape(steps, synth.step_samples)
    sounding = synth.n_voices * synth.tone_samples
    cells = frames[:, :sounding].reshape(steps, synth.n_voices, synth.tone_samples)
    edge = 0.01 * synth.amplitude
    return int(
        (np.abs(cells[..., 0]) > edge).sum()
        + (np.abs(cells[..., -1]) > edge).sum()
        + (frames[:, sounding:] != 0).any(axis=1).sum()
        + (np.abs(np.diff(audio)) > jump).sum()
    )


def test_every_state_of_every_cell_is_recovered_from_the_audio_alone(tmp_path):
    norms, missing, intended = log_of_every_state()
    log = sonify.NormLog.from_array(norms, [f"layer{i}" for i in range(norms.shape[1])])
    log.missing[:] = missing
    sonify.render(log, tmp_path / "states.wav")  # the default settings, through the file path
    audio, rate = soundfile.read(tmp_path / "states.wav", dtype="float32")
    synth = SoundSettings().synthesizer(norms.shape[1])

    states, freqs = decode_cells(audio, synth)

    # What each cell should sound as: its state, and an in-range spike (found by the run's detector) accented.
    expected = intended.copy()
    spikes = log.spikes()[0]
    expected[(intended == "TONE") & spikes] = "ACCENT"
    assert (expected == "ACCENT").sum() >= 5  # random jumps of decades: the log holds spikes too
    wrong = np.argwhere(states != expected)
    assert not len(wrong), [(tuple(c), expected[tuple(c)], states[tuple(c)]) for c in wrong[:10]]
    # Every in-range norm, tone or accent, from its pitch alone, to 1e-4.
    pitched = np.isin(expected, ["TONE", "ACCENT"])
    decoded = SoundSettings().pitch_map().inverse(freqs[pitched])
    np.testing.assert_allclose(decoded, norms[pitched], rtol=1e-4)
    # Never a click, nothing at or above 0.45 fs, and the alarm still the loudest cell.
    assert clicks(audio, synth) == 0
    power = np.abs(np.fft.rfft(audio.astype(float))) ** 2
    high = np.fft.rfftfreq(len(audio), 1 / rate) >= NYQUIST_FRACTION * rate
    assert power[high].sum() < 1e-9 * power.sum()
    cells = audio.reshape(len(norms), -1)[:, : norms.shape[1] * synth.tone_samples].reshape(*norms.shape, -1)
    alarm = expected == "ALARM"
    for loudness in (np.abs(cells).max(axis=-1), np.sqrt(np.mean(cells.astype(float) ** 2, axis=-1))):
        assert loudness[alarm].min() > loudness[~alarm].max()


def test_the_click_check_finds_a_tone_cut_off_and_a_jump():
    synth = SoundSettings().synthesizer(2)
    audio = SoundSettings().sounder(2).sound(np.ones((3, 2)), np.zeros((3, 2), bool))
    assert clicks(audio, synth) == 0
    cut = audio.copy()
    cut[synth.tone_samples // 2 : synth.tone_samples] = 0  # a tone that stops mid-cycle
    assert clicks(cut, synth) > 0
    jumped = audio.copy()
    jumped[100] += 0.08
    assert clicks(jumped, synth) > 0


def test_the_score_names_every_state_and_counts_them():
    sounder = SoundSettings().sounder(3)
    norms = np.array([[1.0, 0.0, 1e9], [np.nan, 1e-9, 1.0]])
    missing = np.array([[False, False, False], [False, False, True]])
    score = sounder.score(norms, missing)
    assert [[ToneKind(k).name for k in row] for row in score.kind] == [
        ["TONE", "ZERO", "ABOVE"],
        ["ALARM", "BELOW", "REST"],
    ]
    assert score.frequency[0, 2] == pytest.approx(3520.0)  # off the scale: the glide starts at the clamped pitch
    assert score.frequency[1, 1] == pytest.approx(440.0)
    assert np.isnan(score.frequency[0, 1])  # a zero has no pitch
    assert score.counts()[ToneKind.ZERO].tolist() == [0, 1, 0]
    assert score.counts()[ToneKind.ABOVE].tolist() == [0, 0, 1]
    # A browser's synthesizer gets the same: kinds and the glide survive JSON.
    again = sonify.Score.from_dict(score.as_dict())
    assert again.kind.tolist() == score.kind.tolist() and again.glide == score.glide == 12.0


def test_off_scale_wins_over_a_spike_and_the_linear_map_leaves_the_band_upwards():
    sounder = SoundSettings().sounder(1)
    score = sounder.score(np.array([[1.0]] * 10 + [[1e6]]), np.zeros((11, 1), bool))
    assert ToneKind(score.kind[-1, 0]) is ToneKind.ABOVE  # a spike off the map: the glide, not the accent
    linear = SoundSettings(mapping="linear").sounder(1)
    kinds = linear.score(np.array([[1.0], [1e6], [0.0]]), np.zeros((3, 1), bool)).kind[:, 0]
    assert [ToneKind(k).name for k in kinds] == ["TONE", "ABOVE", "ZERO"]  # 1e8 Hz is beyond 0.45 fs


@pytest.mark.parametrize("rate", [8000, 16000])
def test_glides_stop_short_of_the_playable_bands_edges(rate):
    sound = SoundSettings(sample_rate=rate, tone_duration=0.1)  # long tones: their last quarter has a clear pitch
    audio = sound.sounder(2).sound(np.array([[1e9, 1e-9]]), np.zeros((1, 2), bool))
    tone = sound.synthesizer(2).tone_samples
    ends = [audio[voice * tone + 3 * tone // 4 : (voice + 1) * tone] for voice in (0, 1)]
    peaks = [np.fft.rfftfreq(1 << 16, 1 / rate)[np.abs(np.fft.rfft(end, 1 << 16)).argmax()] for end in ends]
    assert peaks[0] > 3520 and peaks[0] < 0.45 * rate  # above: up from the top, but never past 0.45 fs
    assert 220 * 0.95 < peaks[1] < 440  # below: down towards an octave under the bottom
