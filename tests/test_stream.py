"""Live output through a real sounddevice stream into a virtual sound card."""

import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, frames_played, run_sonify
from sonify.stream import LiveStream, LiveStreamError, output_devices, resolve_output_device

RATE = 44100


def tone(freq, seconds, amplitude=0.1):
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t) + amplitude * 1e-3).astype(np.float32)  # never exactly 0


def test_lists_the_virtual_card_and_marks_the_default(sound_server):
    devices = output_devices()
    names = [device["name"] for device in devices]
    assert "pulse" in names
    assert sum(device["default"] for device in devices) == 1
    index, name = resolve_output_device("PULSE")  # case-insensitive, like sounddevice
    assert name == "pulse" and resolve_output_device(index) == (index, name)
    assert resolve_output_device(str(index)) == (index, name)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("no-such-card", "no output device matches 'no-such-card'; choose one of"),
        (999, "no output device has index 999"),
    ],
)
def test_unknown_devices_are_named_in_the_error(sound_server, device, message):
    with pytest.raises(LiveStreamError, match=message):
        LiveStream(RATE, device=device)


def test_plays_every_sample_exactly_through_a_small_ring(sound_server):
    sound = np.concatenate([tone(440, 0.3), tone(660, 0.3), tone(880, 0.3)])
    with sound_server.capture() as recording, LiveStream(RATE, device="pulse", buffer_seconds=0.1) as speaker:
        assert speaker.capacity < len(sound)  # the ring wraps around many times
        for start in range(0, len(sound), 1000):
            speaker.write(sound[start : start + 1000])
    frames_played(recording.samples, [sound])
    assert speaker.underruns == 0 and speaker.failure is None


def test_a_slow_producer_is_heard_as_silence_between_writes(sound_server):
    first, second = tone(440, 0.1), tone(880, 0.1)
    with sound_server.capture() as recording, LiveStream(RATE, device="pulse") as speaker:
        speaker.write(first)
        time.sleep(0.4)  # the ring runs dry: the callback must play zeros, not stale samples
        speaker.write(second)
    captured = recording.samples
    start_first, start_second = frames_played(captured, [first, second])
    between = captured[start_first + len(first) : start_second]
    assert len(between) > 0.2 * RATE and not between.any()


def test_stream_without_room_does_not_block_when_asked(sound_server):
    with LiveStream(RATE, device="pulse", buffer_seconds=0.1) as speaker:
        queued = speaker.write(tone(440, 1.0), block=False)
        assert queued == speaker.capacity


def _run_without_sound_server(*args, tmp_path):
    return run_sonify(*args, cwd=tmp_path, env={"PULSE_SERVER": f"unix:{tmp_path}/no-server"})


def test_no_sound_server_gives_one_line_with_the_fix(tmp_path):
    for args in (("devices",), ("train", "--live", "--dataset", "digits", "--steps", "3", "--no-progress")):
        result = _run_without_sound_server(*args, tmp_path=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("sonify: error: no audio output device found")
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "audio_out").exists() or not any((tmp_path / "audio_out").iterdir())


def test_missing_portaudio_gives_one_line_with_the_package_to_install(tmp_path):
    # sounddevice finds PortAudio with ctypes.util.find_library; make that lookup fail as on a bare machine.
    (tmp_path / "sitecustomize.py").write_text(
        "import ctypes.util\n"
        "_find = ctypes.util.find_library\n"
        "ctypes.util.find_library = lambda name: None if 'portaudio' in name else _find(name)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice"], capture_output=True, text=True, env={**env}, cwd=tmp_path
    )
    assert "PortAudio library not found" in probe.stderr  # the real sounddevice import fails here
    for args in (("devices",), ("train", "--live", "--dataset", "digits", "--steps", "2", "--no-progress")):
        result = run_sonify(*args, env=env, cwd=tmp_path)
        assert result.returncode == 1
        line = result.stderr.strip()
        assert line.startswith("sonify: error: live audio needs the PortAudio library") and "\n" not in line
        assert "apt-get install libportaudio2" in line
