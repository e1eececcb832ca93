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
import subprocess
import sys

import pytest

from helpers import ROOT, SoundServer


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


@pytest.fixture(scope="session")
def browser(sound_server):
    """Debian's chromium, driven by Playwright, playing into the private sound server."""
    from playwright.sync_api import sync_playwright

    from helpers.browser import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright, sound_server.env)
        yield chromium
        chromium.close()


# -- a small model and loop shared by the tests of the Sonifier and of its failures --


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
