"""Every example runs as users would run it (tiny step counts; no downloads)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

import sonify
from helpers import ROOT


def run_example(name, *args, env=None):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("live", [False, True], ids=["files", "live"])
def test_plain_loop_example(tmp_path, request, live):
    if live:
        request.getfixturevalue("sound_server")
    out = tmp_path / "plain.wav"
    stdout = run_example("plain_loop.py", out, *(["--live"] if live else []))
    log = sonify.load_norms(out)
    assert len(log) == 300 and out.exists()
    assert ("live: " in stdout) == live
    calm, wild = log.norms[:150], log.norms[150:]
    assert finite_max(wild) > 10 * finite_max(calm)  # the raised learning rate is audible in the norms


def finite_max(values):
    finite = values[np.isfinite(values)]
    return finite.max() if finite.size else np.inf


def test_resnet18_example_groups_41_layers_into_a_stereo_chord(tmp_path, torchvision_env):
    out = tmp_path / "resnet.wav"
    stdout = run_example("resnet18.py", out, "--steps", "3", env=torchvision_env)
    log = sonify.load_norms(out)
    assert list(log.layer_names) == ["conv1", "bn1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)] + ["fc"]
    assert "11 voices" in stdout and log.metadata["sound"]["mode"] == "chord"
    info = soundfile.info(out)
    assert info.channels == 2 and info.frames == 3 * round(0.05 * 44100 + 0.1 * 44100)  # chord: one tone + gap


def test_transformer_example_has_one_voice_per_block(tmp_path):
    out = tmp_path / "transformer.wav"
    run_example("transformer.py", out, "--steps", "4")
    log = sonify.load_norms(out)
    assert list(log.layer_names) == ["embed"] + [f"encoder.layers.{i}" for i in range(6)] + ["head"]
    assert len(log) == 4 and np.isfinite(log.norms).all()


def test_lightning_example(tmp_path, torchvision_env):
    out = tmp_path / "pl.wav"
    stdout = run_example("lightning_callback.py", out, "--steps", "4", env=torchvision_env)
    assert "4 optimizer steps recorded" in stdout and len(sonify.load_norms(out)) == 4


def test_hf_trainer_example(tmp_path, torchvision_env):
    out = tmp_path / "hf.wav"
    stdout = run_example("hf_trainer.py", out, "--steps", "4", env=torchvision_env)
    assert "4 optimizer steps recorded" in stdout
    log = sonify.load_norms(out)
    assert len(log) == 4 and np.linalg.norm(log.norms, axis=1).max() <= 1.0 + 1e-4  # clipped at 1.0
