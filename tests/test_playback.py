"""Replaying runs and the live player's latency policy, heard through a real stream."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

import sonify
from helpers import ROOT, decode_tones, frames_played, is_alarm
from sonify.normfile import NormLogWriter
from sonify.playback import play

SOUND = sonify.SoundSettings()


def write_log(path, norms):
    writer = NormLogWriter(path, [f"layer{i}" for i in range(norms.shape[1])])
    writer.append(np.arange(1, len(norms) + 1), norms, np.zeros(norms.shape, bool))
    writer.close()
    return path


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
