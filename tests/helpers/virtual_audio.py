"""A private virtual sound card for the live-audio tests and benchmarks.

A headless PulseAudio server (as root too, no D-Bus) whose only sink is a
null sink; what is played into it is recorded back, sample-exact, from the
sink's monitor with ``parec``. Needs the Debian packages that
``scripts/setup.sh`` installs (pulseaudio, pulseaudio-utils,
libasound2-plugins); the real PortAudio reaches the server through ALSA's
``pulse`` plugin.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np


class SoundServer:
    """A headless PulseAudio server whose only sink is a null sink we can record."""

    SINK = "virtual_speaker"
    RATE = 44100

    def __init__(self, base: Path) -> None:
        missing = [tool for tool in ("pulseaudio", "parec", "pactl") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"live-audio tests need {', '.join(missing)}: run `bash scripts/setup.sh`")
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
            raise RuntimeError(f"PulseAudio did not come up; see {base / 'server.log'}")
        self.pid = int((self.run_dir / "pulse" / "pid").read_text())

    owned = True

    @classmethod
    def existing(cls) -> SoundServer:
        """The server named by ``$PULSE_SERVER`` (not ours to stop); its sink must be called like ours."""
        server = cls.__new__(cls)
        server.env = {name: os.environ[name] for name in ("PULSE_SERVER", "PULSE_COOKIE") if name in os.environ}
        server.owned = False
        if not server.answers():
            raise RuntimeError(f"no sound server with a sink {cls.SINK!r} answers at {os.environ['PULSE_SERVER']}")
        return server

    @classmethod
    def running_or_new(cls) -> SoundServer:
        """The server named by ``$PULSE_SERVER`` (the tests', for a benchmark's smoke run), or a new one of ours,
        made this process's default."""
        if "PULSE_SERVER" in os.environ:
            return cls.existing()
        import tempfile

        server = cls(Path(tempfile.mkdtemp(prefix="sonify-bench-")))
        os.environ.update(server.env)
        return server

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
