import numpy as np
import pytest
import soundfile
import torch

import sonify
from helpers import decode_tones, refine_tones, spectral_peaks
from sonify import SonifyError
from sonify.normfile import NormLogWriter
from sonify.rendering import BLOCK_STEPS, SoundSettings, render


def write_log(path, norms, missing=None):
    norms = np.asarray(norms, np.float32)
    writer = NormLogWriter(path, [f"l{i}" for i in range(norms.shape[1])])
    writer.append(np.arange(1, len(norms) + 1), norms, np.zeros(norms.shape, bool) if missing is None else missing)
    writer.close()
    return path


def test_render_from_a_log_decodes_back_to_its_norms(tmp_path):
    norms = np.exp(np.random.default_rng(0).uniform(np.log(1e-3), np.log(1e3), (30, 4)))
    log_path = write_log(tmp_path / "r.norms.csv", norms)
    sound = SoundSettings(tone_duration=0.03)  # low pitches need a few cycles to be decoded precisely
    result = render(log_path, tmp_path / "r.wav", sound=sound)
    audio, rate = soundfile.read(result.path, dtype="float32")
    synth = sound.synthesizer(4)
    decoded = decode_tones(audio, rate, 4, synth.tone_samples, synth.gap_samples)
    np.testing.assert_allclose(sound.pitch_map().inverse(decoded), norms, rtol=0.03)
    assert result.steps == 30 and result.duration == pytest.approx(30 * synth.step_duration)


def test_block_boundaries_are_seamless_and_match_one_block(tmp_path):
    steps = BLOCK_STEPS * 2 + 37
    norms = np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.05, (steps, 2)), axis=0))
    render(norms, tmp_path / "long.wav")
    audio, _ = soundfile.read(tmp_path / "long.wav", dtype="float32")
    reference = SoundSettings().synthesizer(2).synthesize(SoundSettings().pitch_map()(norms))
    np.testing.assert_allclose(audio, reference, atol=2e-4)
    assert np.abs(np.diff(audio)).max() <= 0.05


def test_sonifier_audio_equals_rendering_its_log(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "live.wav") as son:
        for _ in range(25):
            optimizer.zero_grad()
            model(torch.randn(8, 4)).square().mean().backward()
            optimizer.step()
    render(son.log_path, tmp_path / "again.wav")
    recorded, _ = soundfile.read(son.audio_path, dtype="float32")
    rendered, _ = soundfile.read(tmp_path / "again.wav", dtype="float32")
    np.testing.assert_allclose(recorded, rendered, atol=1e-4)


def test_auto_range_uses_the_whole_pitch_range(tmp_path):
    norms = np.array([[0.01, 0.02], [0.04, 0.1]])
    render(norms, tmp_path / "auto.wav", sound=SoundSettings(norm_range="auto", tone_duration=0.05))
    audio, rate = soundfile.read(tmp_path / "auto.wav", dtype="float32")
    synth = SoundSettings(tone_duration=0.05).synthesizer(2)
    decoded = decode_tones(audio, rate, 2, synth.tone_samples, synth.gap_samples)
    assert decoded.min() == pytest.approx(440, rel=0.01) and decoded.max() == pytest.approx(3520, rel=0.01)


def test_pcm16_flac_nan_and_missing(tmp_path):
    norms = np.array([[1.0, np.nan], [np.inf, 2.0], [0.5, 0.5]], np.float32)
    missing = np.array([[False, False], [False, False], [False, True]])
    log_path = write_log(tmp_path / "m.norms.csv", norms, missing)
    for name, fmt, subtype in (("m16.wav", "pcm16", "PCM_16"), ("m.flac", "float", "PCM_24")):
        result = render(log_path, tmp_path / name, sound=SoundSettings(sample_format=fmt))
        assert soundfile.info(result.path).subtype == subtype and result.nonfinite_steps == 2
        audio, _ = soundfile.read(result.path, dtype="float32")
        assert np.isfinite(audio).all() and np.abs(audio).max() < 0.5
        synth = SoundSettings().synthesizer(2)
        rest = audio[2 * synth.step_samples + synth.tone_samples : 2 * synth.step_samples + 2 * synth.tone_samples]
        assert np.abs(rest).max() < 1e-4


def test_auto_range_while_recording_is_refused():
    with pytest.raises(SonifyError, match="whole run"):
        SoundSettings(norm_range="auto").pitch_map()


def test_a_long_run_fits_the_duration_asked_and_keeps_its_alarm(tmp_path):
    norms = np.exp(np.random.default_rng(0).normal(0, 1, (100_000, 4)))
    norms[77_777, 2] = np.nan
    result = sonify.render(norms, tmp_path / "minute.wav", duration=60.0)
    assert result.steps == 100_000 and result.windows == 1000 and result.nonfinite_steps == 1
    assert result.duration == pytest.approx(60.0, abs=0.06)  # 1000 windows x 60 ms
    audio, rate = soundfile.read(tmp_path / "minute.wav", dtype="float32")
    synth = sonify.SoundSettings().synthesizer(4)
    window = 777  # step 77,778 falls in window 777 of 1000
    slot = audio[window * synth.step_samples + 2 * synth.tone_samples :][: synth.tone_samples]
    assert len(spectral_peaks(slot, rate, threshold=0.3)) == 3  # the alarm chord survived compression


def test_duration_must_be_positive(tmp_path):
    with pytest.raises(sonify.SonifyError, match="duration -1 s is not positive"):
        sonify.render(np.ones((10, 2)), tmp_path / "x.wav", duration=-1)


def test_default_sound_decodes_back_to_the_norms_within_a_tenth_of_a_percent(tmp_path):
    rng = np.random.default_rng(0)
    norms = 10 ** rng.uniform(-4, 4, (40, 4))  # the whole default range, 10 ms tones
    sound = SoundSettings(spike_factor=0)  # random jumps of decades would be spikes: plain tones here
    render(norms, tmp_path / "default.wav", sound=sound)
    audio, rate = soundfile.read(tmp_path / "default.wav", dtype="float32")
    synth = sound.synthesizer(4)
    estimates = decode_tones(audio, rate, 4, synth.tone_samples, synth.gap_samples)
    decoded = sound.pitch_map().inverse(refine_tones(audio, synth, estimates))
    np.testing.assert_allclose(decoded, norms, rtol=1e-4)  # the issue asks 0.1%; least squares gets ~1e-6


def accented_steps(audio, synth, voice):
    """Steps whose tone in ``voice`` has harmonics: the accent, read from the samples alone."""
    found = []
    for step in range(len(audio) // synth.step_samples):
        start = step * synth.step_samples + voice * synth.tone_samples
        peaks = spectral_peaks(audio[start : start + synth.tone_samples], synth.sample_rate, threshold=0.2)
        if len(peaks) >= 2 and abs(peaks[1] / peaks[0] - 2) < 0.05:
            found.append(step)
    return found


def test_spikes_are_heard_exactly_where_they_happen(tmp_path):
    rng = np.random.default_rng(1)
    norms = np.exp(rng.normal(0, 0.2, (120, 2)))  # a calm run: within a factor of two of 1
    norms[[40, 90], 0] *= 25  # two spikes in layer 0
    norms[70, 1] = np.nan  # and an alarm, which is not a spike
    sound = SoundSettings(tone_duration=0.03)
    result = render(norms, tmp_path / "spikes.wav", sound=sound)
    audio, _ = soundfile.read(tmp_path / "spikes.wav", dtype="float32")
    synth = sound.synthesizer(2)
    assert accented_steps(audio, synth, 0) == [40, 90] and accented_steps(audio, synth, 1) == []
    stats = sonify.NormLog.from_array(norms).stats()
    assert (stats.first_spike_step, stats.spike_steps, stats.first_spike_layers) == (41, 2, ("layer0",))
    assert stats.first_spike_factor == pytest.approx(25, rel=0.5)
    assert result.nonfinite_steps == 1


def test_a_condensed_run_keeps_its_spikes(tmp_path):
    norms = np.ones((20_000, 1)) * np.exp(np.random.default_rng(2).normal(0, 0.1, (20_000, 1)))
    norms[12_345, 0] = 500.0
    sound = SoundSettings(tone_duration=0.03)
    result = render(norms, tmp_path / "long.wav", sound=sound, duration=6.0)
    audio, _ = soundfile.read(tmp_path / "long.wav", dtype="float32")
    found = accented_steps(audio, sound.synthesizer(1), 0)
    assert len(found) == 1 and found[0] == 12_345 * result.windows // 20_000  # its window, accented
