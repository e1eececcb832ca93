"""MIDI files: read back with mido, they give the pitches, timing, alarms and spikes of the audio."""

import subprocess
import sys

import numpy as np
import pytest

import sonify
from helpers import ROOT
from sonify.midi import ALARM_NOTE, SPIKE_VELOCITY, TICKS_PER_TONE

mido = pytest.importorskip("mido")


def notes(path):
    """(start in seconds, channel, frequency in Hz, velocity) of every note, from the file alone."""
    midi = mido.MidiFile(path)
    found = []
    for track in midi.tracks[1:]:
        tick, bends = 0, {}
        for message in track:
            tick += message.time
            if message.type == "pitchwheel":
                bends[message.channel] = message.pitch
            if message.type == "note_on" and message.velocity > 0:
                semitones = message.note + 2.0 * bends.get(message.channel, 0) / 8192 - 69
                seconds = mido.tick2second(tick, midi.ticks_per_beat, midi.tracks[0][0].tempo)
                found.append((seconds, message.channel, 440.0 * 2 ** (semitones / 12), message.velocity))
    return sorted(found)


def test_a_run_as_midi_reads_back_to_its_pitches_and_timing(tmp_path):
    rng = np.random.default_rng(0)
    norms = np.exp(rng.normal(0, 0.2, (60, 3)))
    norms[45, 0] *= 30  # a spike
    norms[50, 2] = np.nan  # an alarm
    log = sonify.NormLog.from_array(norms, ["conv1", "conv2", "fc"])
    log.missing[20, 1] = True  # a rest
    log.norms[20, 1] = np.nan
    sound = sonify.SoundSettings()
    result = sonify.render(log, tmp_path / "run.mid", sound=sound)
    synth = sound.synthesizer(3)
    assert result.duration == pytest.approx(60 * synth.step_duration)
    heard = notes(tmp_path / "run.mid")
    tones = [n for n in heard if n[1] != 9]
    assert len(tones) == 60 * 3 - 2  # every tone but the rest and the alarm
    expected = sound.pitch_map()(norms)
    for seconds, channel, freq, velocity in tones:
        step, voice = divmod(round(seconds / 0.01), 5)[0], channel  # 3 tones + a 2-tone gap per step
        assert seconds == pytest.approx(step * synth.step_duration + voice * 0.01, abs=1e-6)
        assert 1200 * abs(np.log2(freq / expected[step, voice])) < 0.5  # note + bend within half a cent
        assert (velocity == SPIKE_VELOCITY) == (step == 45 and voice == 0)
    alarms = [n for n in heard if n[1] == 9]
    assert [round(n[0], 6) for n in alarms] == [round(50 * synth.step_duration + 2 * 0.01, 6)]
    assert all(
        msg.note == ALARM_NOTE for msg in mido.MidiFile(tmp_path / "run.mid").tracks[-1] if msg.type == "note_on"
    )


def test_a_scale_gives_plain_notes_and_chord_mode_starts_them_together(tmp_path):
    norms = np.array([[0.01, 1.0], [0.1, 10.0]])
    sound = sonify.SoundSettings(scale="major", mode="chord", tone_duration=0.02)
    sonify.render(norms, tmp_path / "chord.mid", sound=sound)
    midi = mido.MidiFile(tmp_path / "chord.mid")
    assert all(msg.pitch == 0 for track in midi.tracks for msg in track if msg.type == "pitchwheel")  # exact notes
    starts = [round(n[0], 6) for n in notes(tmp_path / "chord.mid")]
    step = sound.synthesizer(2).step_duration
    assert starts == [0.0, 0.0, round(step, 6), round(step, 6)]
    assert mido.tick2second(TICKS_PER_TONE, midi.ticks_per_beat, midi.tracks[0][0].tempo) == pytest.approx(0.02)


def test_midi_from_the_command_line_and_its_one_line_errors(tmp_path):
    (tmp_path / "run.norms.csv").write_text("step,a\n1,0.5\n2,2.0\n")
    command = [
        sys.executable,
        "-m",
        "sonify.cli",
        "render",
        str(tmp_path / "run.norms.csv"),
        "-o",
        str(tmp_path / "r.mid"),
    ]
    first = subprocess.run([*command, "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0 and len(notes(tmp_path / "r.mid")) == 2, first.stderr
    again = subprocess.run([*command, "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "mido.py").write_text("raise ImportError('No module named mido', name='mido')\n")
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "other.mid"), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == "sonify: error: writing MIDI files needs mido, which is not installed: pip install 'sonify[midi]'"
    )
    assert not (tmp_path / "other.mid").exists()


def sounding_pitches(path):
    """(tick, channel, semitones above A4) of every note as a player hears it: tracks merged, and each
    channel's pitch bend at a tick the last one set there (it retunes every note sounding on the channel)."""
    midi = mido.MidiFile(path)
    tick, bends, found = 0, {}, []
    for message in mido.merge_tracks(midi.tracks[1:]):
        tick += message.time
        if message.type == "pitchwheel":
            bends[(tick, message.channel)] = message.pitch
        if message.type == "note_on" and message.velocity > 0:
            found.append((tick, message.channel, message.note))
    last_bend: dict = {}
    for (when, channel), bend in sorted(bends.items()):
        last_bend.setdefault(channel, []).append((when, bend))

    def bend_at(channel, when):
        return max(((w, b) for w, b in last_bend.get(channel, []) if w <= when), default=(0, 0))[1]

    return [(t, c, n + 2.0 * bend_at(c, t) / 8192 - 69) for t, c, n in found]


def test_chord_mode_with_more_voices_than_channels_never_takes_another_voices_bend(tmp_path):
    rng = np.random.default_rng(1)
    norms = np.exp(rng.normal(0, 1.0, (10, 20)))  # 20 voices: channels are shared
    result = sonify.render(norms, tmp_path / "chord.mid", sound=sonify.SoundSettings(mode="chord"))
    assert result.steps == 10
    intended = 12 * np.log2(sonify.SoundSettings().pitch_map()(norms) / 440.0)
    heard = sounding_pitches(tmp_path / "chord.mid")
    assert len(heard) == 200
    step_ticks = sorted({t for t, _, _ in heard})
    errors = []
    for tick, channel, semitones in heard:
        step = step_ticks.index(tick)
        candidates = [v for v in range(20) if sonify.midi._channel(v) == channel]
        errors.append(min(abs(semitones - intended[step, v]) for v in candidates))
    assert max(errors) <= 0.5  # at worst the nearest semitone, never another voice's bend (up to 2 semitones)


def test_tones_longer_than_the_slowest_midi_tempo(tmp_path):
    log = tmp_path / "run.norms.csv"
    log.write_text("step,a,b\n1,0.5,1.0\n2,0.7,2.0\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sonify.cli",
            "render",
            str(log),
            "-o",
            str(tmp_path / "slow.mid"),
            "--tone-ms",
            "10000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    found = notes(tmp_path / "slow.mid")
    starts = [start for start, *_ in found]
    assert len(found) == 4 and np.allclose(np.diff(starts[:2]), 10.0, atol=1e-3)  # each tone lasts 10 s


def test_zero_and_off_scale_cells_have_their_own_midi_cues(tmp_path):
    from sonify.midi import ZERO_NOTE

    norms = np.array([[1.0, 1.0], [0.0, 1e9], [1.0, 1e-9]])  # a zero; above the map's top; below its bottom
    sonify.render(norms, tmp_path / "run.mid")
    midi = mido.MidiFile(tmp_path / "run.mid")
    drums = [(m.note, m.velocity) for m in midi.tracks[-1] if m.type == "note_on"]
    assert drums == [(ZERO_NOTE, 40)]  # the zero: a soft side stick, no pitch
    wheel = []  # the second voice's pitch wheel through steps 1 and 2
    tick = 0
    for message in midi.tracks[2]:
        tick += message.time
        if message.type == "pitchwheel":
            wheel.append((tick, message.pitch))
    step_ticks = 2 * TICKS_PER_TONE + 2 * TICKS_PER_TONE
    above = [p for t, p in wheel if step_ticks <= t < 2 * step_ticks]
    below = [p for t, p in wheel if 2 * step_ticks <= t]
    assert above[-1] == 8191 and above == sorted(above)  # glides up to the top of the bend range
    assert below[-1] == -8192 and below == sorted(below, reverse=True)  # and down to its bottom
    tones = [n for n in notes(tmp_path / "run.mid") if n[1] != 9]
    assert len(tones) == 5  # the zero is no note on the layer's channel
