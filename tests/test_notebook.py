"""What a notebook shows: an inline player with the run's sound embedded."""

import base64
import io
import re
import time

import numpy as np
import pytest
import soundfile
import torch

import sonify
from helpers import spectral_peaks
from sonify.norms import NormLog
from sonify.synthesize import ALARM_PARTIALS_HZ


def embedded_wav(html):
    (payload,) = re.findall(r'<audio controls src="data:audio/wav;base64,([^"]+)"', html)
    return soundfile.read(io.BytesIO(base64.b64decode(payload)), dtype="float32")


def test_a_long_log_plays_inline_condensed_with_its_alarm():
    norms = np.exp(np.random.default_rng(0).normal(0, 1, (50_000, 2)))
    norms[30_000, 1] = np.inf
    html = NormLog.from_array(norms)._repr_html_()
    assert "50000 steps x 2 layers, NaN/Inf from step 30001" in html
    audio, rate = embedded_wav(html)
    assert len(audio) / rate <= 60.0
    synth = sonify.SoundSettings().synthesizer(2)
    slots = audio.reshape(-1, synth.step_samples)[:, synth.tone_samples : 2 * synth.tone_samples]
    alarms = [
        slot
        for slot in slots
        if np.allclose(sorted(spectral_peaks(slot, rate, threshold=0.3))[:3], ALARM_PARTIALS_HZ, atol=15)
        and len(spectral_peaks(slot, rate, threshold=0.3)) == 3
    ]
    assert len(alarms) == 1  # one window alarms (accented spikes have harmonic peaks, not the alarm's)


def test_audio_object_for_ipython():
    player = NormLog.from_array(np.ones((3, 2))).player()
    assert type(player).__name__ == "Audio" and player.data[:4] == b"RIFF"


def test_renamed_names_still_work_with_a_deprecation_warning(tmp_path):
    """Names that meant two things were renamed (CHANGELOG); the old ones keep working, with a warning."""
    log = NormLog.from_array(np.ones((3, 2)))
    with pytest.warns(DeprecationWarning, match="player"):
        assert log.audio().data == log.player().data
    with pytest.warns(DeprecationWarning, match="as_dict"):
        assert sonify.SoundSettings().describe() == sonify.SoundSettings().as_dict()
    with pytest.warns(DeprecationWarning, match="as_dict"):
        assert sonify.get_map("log").describe() == sonify.get_map("log").as_dict()
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(DeprecationWarning, match="norm_log"):
        son = sonify.Sonifier(model, optimizer, out=tmp_path / "x.wav", log=False, audio=False)
    with son:
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
    assert son.files == [] and not list(tmp_path.iterdir())
    with pytest.warns(DeprecationWarning, match="player"):
        assert type(son.audio()).__name__ == "Audio"
    with pytest.raises(sonify.SonifyParameterError, match="give only norm_log"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "y.wav", log=False, norm_log=False)


def test_a_running_sonifier_shows_the_steps_so_far(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "nb.wav", flush_interval=0.05) as son:
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(4, 3)).sum().backward()
            optimizer.step()
        time.sleep(0.3)  # let the recorder flush
        html = son._repr_html_()
    assert "&lt;Sonifier recording" in html and "5 steps x 2 layers" in html
    audio, _ = embedded_wav(html)
    assert len(audio) == 5 * sonify.SoundSettings().synthesizer(2).step_samples


def test_a_nan_at_step_0_is_reported():
    log = sonify.NormLog.from_array([[np.nan], [1.0]])
    log = type(log)(log.norms, log.missing, np.array([0, 1]), log.layer_names)
    assert "NaN/Inf from step 0" in log._repr_html_()
