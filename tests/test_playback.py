"""Replaying runs and the live player's latency policy, heard through a real stream."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

import sonify
from conftest import ROOT, decode_tones, frames_played, spectral_peaks
from sonify.playback import _LivePlayer, _newest_keeping_alarms, play
from sonify.record import NormLogWriter
from sonify.synthesize import ALARM_PARTIALS_HZ

SOUND = sonify.SoundSettings()


def write_log(path, norms):
    writer = NormLogWriter(path, [f"layer{i}" for i in range(norms.shape[1])])
    writer.append(np.arange(1, len(norms) + 1), norms, np.zeros(norms.shape, bool))
    writer.close()
    return path


def is_alarm(slot):
    peaks = spectral_peaks(slot, SOUND.sample_rate, threshold=0.3)
    return len(peaks) == 3 and all(abs(p - f) < 15 for p, f in zip(peaks, ALARM_PARTIALS_HZ))


def test_playing_a_norm_log_sounds_its_pitches_in_order(sound_server, tmp_path):
    norms = np.geomspace(0.1, 1e3, 30).reshape(15, 2)  # 440 Hz and up: 10 ms hold 4+ periods
    norms[9, 1] = np.nan
    log = write_log(tmp_path / "run.norms.csv", norms)
    with sound_server.capture() as recording:
        result = play(log, output_device="pulse")
    assert result.underruns == 0 and result.duration == pytest.approx(15 * 0.04)
    synth = SOUND.synthesizer(2)
    # A rising run spikes (each norm far above its running median): those tones are accented, as in a WAV.
    accents = sonify.load_norms(log).spikes()[0]
    expected = synth.synthesize(SOUND.pitch_map()(norms), None, accents)
    (start,) = frames_played(recording.samples, [expected])  # sample-exact, in order
    heard = recording.samples[start : start + len(expected)]
    pitches = decode_tones(heard, synth.sample_rate, 2, synth.tone_samples, synth.gap_samples)
    finite = np.isfinite(norms)
    np.testing.assert_allclose(pitches[finite], SOUND.pitch_map()(norms)[finite], rtol=0.01)
    step = synth.step_samples
    assert is_alarm(heard[9 * step + synth.tone_samples : 9 * step + 2 * synth.tone_samples])


def test_playing_a_wav_streams_it_unchanged(sound_server, tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(30_000) + 0.01).astype(np.float32)
    soundfile.write(tmp_path / "noise.wav", audio, 44100, subtype="FLOAT")
    with sound_server.capture() as recording:
        play(tmp_path / "noise.wav", output_device="pulse")
    frames_played(recording.samples, [audio])


def test_unreadable_files_give_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(
        sonify.SonifyError, match=r"cannot play .*notes.txt: not a norm log \(.norms.csv\) nor a readable"
    ):
        play(tmp_path / "notes.txt")
    with pytest.raises(sonify.SonifyError, match="no such file"):
        play(tmp_path / "missing.wav")


def test_ctrl_c_stops_play_at_once(sound_server, tmp_path):
    log = write_log(tmp_path / "long.norms.csv", np.ones((2000, 4)))  # 2 minutes of sound
    process = subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", "play", str(log), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 130
    assert err.strip() == "sonify play: stopped"


def test_newest_step_is_played_and_skipped_alarms_are_kept():
    ok = np.array([1.0, 2.0, 3.0])
    nan_in_middle = np.array([1.0, np.nan, 3.0])
    none = np.zeros(3, bool)
    batch = [(1, ok, none, 0.1), (2, nan_in_middle, none, 0.2), (3, ok * 2, none, 0.3)]
    step, norms, missing, when = _newest_keeping_alarms(batch)
    assert (step, when) == (3, 0.3)
    np.testing.assert_array_equal(norms, [2.0, np.nan, 6.0])
    # a layer with no gradient in the newest step still sounds the alarm it had before
    step, norms, missing, _ = _newest_keeping_alarms(
        [(1, nan_in_middle, none, 0), (2, ok, np.array([0, 1, 0], bool), 0)]
    )
    assert np.isnan(norms[1]) and not missing[1]


def test_training_faster_than_the_sound_is_followed_closely(sound_server):
    player = _LivePlayer(SOUND, 2, SOUND.pitch_map(), device="pulse")
    player.timeline = []
    with sound_server.capture() as recording:
        for step in range(1, 401):  # about 400 steps/s; the sound manages 25/s
            norms = np.array([0.01 * step, np.nan if step == 123 else 1.0])
            player.push(step, norms, np.zeros(2, bool), time.perf_counter())
            time.sleep(0.0025)
        report = player.close()
    assert report.played + report.skipped == 400
    assert 10 <= report.played < 100 and report.underruns == 0 and report.failure is None
    played_steps = [step for _, step, _ in player.timeline]
    assert played_steps == sorted(played_steps) and played_steps[-1] == 400
    # each played step was the newest one: nothing older than a few steps waited for the sound
    synth = SOUND.synthesizer(2)
    captured = recording.samples
    voiced = np.flatnonzero(captured)
    heard = captured[voiced[0] - 1 : voiced[-1] + synth.gap_samples]
    slots = [heard[i : i + synth.tone_samples] for i in range(0, len(heard) - synth.tone_samples, synth.tone_samples)]
    assert any(is_alarm(slot) for slot in slots), "the NaN at step 123 was not heard"


def test_play_reads_norms_recorded_elsewhere(sound_server, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as writer:
        for step in range(1, 4):
            writer.add_scalar("grad_norm/a", 0.5 * step, step)
            writer.add_scalar("grad_norm/b", 2.0 * step, step)
    (tmp_path / "other.csv").write_text("global_step,a,b\n1,0.5,2\n2,1,4\n3,1.5,6\n")
    with sound_server.capture() as recording:
        played = [play(tmp_path / "tb", output_device="pulse"), play(tmp_path / "other.csv", output_device="pulse")]
    assert [result.duration for result in played] == pytest.approx([3 * 0.04, 3 * 0.04])
    synth = SOUND.synthesizer(2)
    expected = synth.synthesize(SOUND.pitch_map()(np.array([[0.5, 2.0], [1.0, 4.0], [1.5, 6.0]])))
    frames_played(recording.samples, [expected, expected])  # both sources sound the same norms


def test_stereo_plays_to_the_end(sound_server, tmp_path):
    log = write_log(tmp_path / "run.norms.csv", np.geomspace(0.1, 10, 12).reshape(6, 2))
    result = play(log, output_device="pulse", sound=sonify.SoundSettings(stereo=True))  # it used to fail at close
    assert result.duration == pytest.approx(6 * 0.04)
    two_channels = np.stack([np.linspace(-0.1, 0.1, 4000), np.zeros(4000)], 1).astype(np.float32)
    soundfile.write(tmp_path / "listen-ab.wav", two_channels, 44100, subtype="FLOAT")
    cli = subprocess.run(
        [sys.executable, "-m", "sonify.cli", "play", str(tmp_path / "listen-ab.wav"), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and "played 0.1 s" in cli.stdout, cli.stderr


def test_a_spike_in_a_skipped_step_is_still_heard_live(sound_server):
    player = _LivePlayer(SOUND, 2, SOUND.pitch_map(), device="pulse")
    player.timeline = []
    rng = np.random.default_rng(3)
    with sound_server.capture() as recording:
        for step in range(1, 301):  # far faster than the sound: most steps are skipped live
            norms = np.exp(rng.normal(0, 0.1, 2))
            if step == 150:
                norms[0] *= 40
            player.push(step, norms, np.zeros(2, bool), time.perf_counter())
            time.sleep(0.002)
        report = player.close()
    assert report.skipped > 100
    synth = SOUND.synthesizer(2)
    captured = recording.samples
    voiced = np.flatnonzero(captured)
    heard = captured[voiced[0] - 1 : voiced[-1] + synth.gap_samples]
    slots = [heard[i : i + synth.tone_samples] for i in range(0, len(heard) - synth.tone_samples, synth.tone_samples)]
    harmonic = [
        peaks for peaks in (spectral_peaks(slot, SOUND.sample_rate, threshold=0.2) for slot in slots) if len(peaks) >= 2
    ]
    assert any(abs(peaks[1] / peaks[0] - 2) < 0.1 for peaks in harmonic), "the spike at step 150 was not heard"
