"""Shared fixtures.

This machine's torchvision is a CUDA build beside a CPU torch: its compiled
operators cannot load and ``import torchvision`` fails. The product detects
that (tested in a subprocess); tests of the real torchvision MNIST loader use
``working_torchvision``, which defines the two operator schemas torchvision
checks at import so that its pure-Python parts (datasets) load. The
workaround lives here only, never in the product.

Live-audio tests play through a real sounddevice stream into a private
PulseAudio server with a null sink (``sound_server``, started once per test
session), and record what was really played from the sink's monitor with
``parec``. Nothing in them mocks sounddevice.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def working_torchvision():
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        working_torchvision.library = library  # keep the definitions alive
        import torchvision
    return torchvision


def run_sonify(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real ``sonify`` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "sonify.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


class SoundServer:
    """A headless PulseAudio server whose only sink is a null sink we can record."""

    SINK = "virtual_speaker"
    RATE = 44100

    def __init__(self, base: Path) -> None:
        missing = [tool for tool in ("pulseaudio", "parec", "pactl") if shutil.which(tool) is None]
        if missing:
            pytest.fail(f"live-audio tests need {', '.join(missing)}: run `bash scripts/setup.sh`")
        self.base = base
        self.run_dir = base / "run"
        self.run_dir.mkdir(parents=True, mode=0o700)
        (base / "state").mkdir(mode=0o700)
        self.socket = self.run_dir / "native"
        self.env = {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_COOKIE": str(base / "state" / "cookie")}
        config = base / "server.pa"
        # norewinds=1: a new stream must not be mixed over audio the monitor already delivered.
        config.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            f"load-module module-null-sink sink_name={self.SINK} format=float32le rate={self.RATE} "
            "channels=2 norewinds=1\n"
            f"set-default-sink {self.SINK}\nset-default-source {self.SINK}.monitor\n"
        )
        server_env = {**os.environ, "XDG_RUNTIME_DIR": str(self.run_dir), "PULSE_STATE_PATH": str(base / "state")}
        subprocess.run(
            [
                "pulseaudio",
                "--daemonize=yes",
                "-n",
                "-F",
                str(config),
                "--exit-idle-time=-1",
                "--use-pid-file=yes",
                f"--log-target=file:{base / 'server.log'}",
            ],
            env=server_env,
            check=True,
            timeout=30,
        )
        for _ in range(200):
            if self.answers():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"PulseAudio did not come up; see {base / 'server.log'}")
        self.pid = int((self.run_dir / "pulse" / "pid").read_text())

    def answers(self) -> bool:
        result = subprocess.run(
            ["pactl", "list", "short", "sinks"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=10,
        )
        return result.returncode == 0 and self.SINK in result.stdout

    def stop(self) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    @contextmanager
    def capture(self):
        """Record the sink's monitor (mono float32) while the block runs; yields a Recording."""
        recording = Recording(self)
        try:
            yield recording
        finally:
            recording.stop()


class Recording:
    """What parec received from the monitor, with arrival times of each chunk."""

    def __init__(self, server: SoundServer) -> None:
        self._process = subprocess.Popen(
            [
                "parec",
                f"--device={server.SINK}.monitor",
                "--raw",
                "--format=float32le",
                f"--rate={server.RATE}",
                "--channels=1",
                "--latency-msec=10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **server.env},
            bufsize=0,
        )
        self.chunks: list[tuple[float, bytes]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 5
        while not self.chunks:  # the monitor delivers silence as soon as it runs
            assert time.monotonic() < deadline, "parec delivered nothing"
            time.sleep(0.005)

    def _read(self) -> None:
        while chunk := self._process.stdout.read(4096):
            self.chunks.append((time.perf_counter(), chunk))

    def stop(self) -> None:
        time.sleep(0.15)  # what was played last is still on its way through the server
        self._process.terminate()
        self._reader.join(5)

    @property
    def samples(self) -> np.ndarray:
        data = b"".join(chunk for _, chunk in self.chunks)
        return np.frombuffer(data[: len(data) // 4 * 4], np.float32)

    def arrival_time(self, index: int) -> float:
        """When sample ``index`` of :attr:`samples` arrived (perf_counter seconds)."""
        position = 0
        for when, chunk in self.chunks:
            position += len(chunk) // 4
            if position > index:
                return when
        raise IndexError(index)


@pytest.fixture(scope="session")
def sound_server(tmp_path_factory):
    """A private PulseAudio server, made this process's default sound card."""
    server = SoundServer(tmp_path_factory.mktemp("pulse"))
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    import sounddevice

    sounddevice._terminate()  # PortAudio lists devices once: make it look again
    sounddevice._initialize()
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
