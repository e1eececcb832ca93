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

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from _virtual_audio import SoundServer
from torch import nn

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


_SCHEMAS = (
    "import torch\n"
    "_library = torch.library.Library('torchvision', 'DEF')\n"
    "_library.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
    "_library.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
)


@pytest.fixture
def torchvision_env(tmp_path) -> dict:
    """Environment for a subprocess that imports torchvision (directly, or through Lightning or transformers).

    Where torchvision's compiled operators cannot load (this machine), a
    ``sitecustomize`` defines the two schemas it checks, as ``working_torchvision`` does in-process.
    """
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True)
    if probe.returncode == 0:
        return {"PYTHONPATH": str(ROOT)}
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SCHEMAS)
    return {"PYTHONPATH": f"{site}:{ROOT}"}


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


def start_sonify(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start the real ``sonify`` command line in the background (text pipes for its output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def complete_rows(log_file: Path) -> int:
    """Whole data rows of a norm log being written (the header line and a partial last line are not rows)."""
    if not log_file.exists():
        return 0
    return max(0, log_file.read_bytes().count(b"\n") - 1)


def wait_for_rows(log_file: Path, rows: int, timeout: float = 120) -> None:
    """Wait until a norm log being written holds at least ``rows`` data rows (not counting its header)."""
    deadline = time.monotonic() + timeout
    while complete_rows(log_file) < rows:
        if time.monotonic() > deadline:
            raise AssertionError(f"{log_file} holds {complete_rows(log_file)} rows after {timeout:g} s, not {rows}")
        time.sleep(0.1)


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


# -- a small model and loop shared by the tests of the Sonifier and of its failures --


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def train(model, optimizer, steps, seed=1, nan_at=None, reference=None):
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        model(torch.randn(32, 8, generator=generator)).square().mean().backward()
        if step == nan_at:
            model[2].weight.grad[0, 0] = float("nan")
        if reference is not None:
            reference.append(
                [
                    torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()])).item()
                    for m in (model[0], model[2], model[4])
                ]
            )
        optimizer.step()


# -- experiment trackers, offline --------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """wandb offline in tmp_path, MLflow's file store in tmp_path: no network, nothing outside the test folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "hf-tb"))
    wandb = sys.modules.get("wandb")
    if wandb is not None:  # wandb keeps its settings (the folder) per process: start afresh
        wandb.teardown()
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # so does MLflow (the tracking URI), once anything has set it
        mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    yield tmp_path
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.finish()
        wandb.teardown()


def tensorboard_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"audio": 0, "scalars": 0})
    events.Reload()
    return events


def decoded(data: bytes) -> np.ndarray:
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples


def is_alarm(slot, sample_rate=44100):
    """Whether a slot of sound is the alarm chord (its three partials and nothing else)."""
    from sonify.synthesize import ALARM_PARTIALS_HZ

    peaks = spectral_peaks(slot, sample_rate, threshold=0.3)
    return len(peaks) == 3 and all(abs(p - f) < 15 for p, f in zip(peaks, ALARM_PARTIALS_HZ))


def wandb_history(folder: Path) -> list[dict]:
    """The history rows (key -> JSON text) of the one offline W&B run under ``folder``, from its run file.

    The run file is a LevelDB-format log (32 KiB blocks of records with a
    7-byte header) behind W&B's own 7-byte file header; each record is a
    ``Record`` protocol buffer of wandb's.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = list(folder.glob("**/offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    block, position, pending, rows = 32768, 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # too little of the block left for a header: padding
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        if length == 0 and kind == 0:
            break
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record, MIDDLE/LAST go on
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
            pending = b""
    return rows
