import functools
import gzip
import operator
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, run_sonify
from sonify import SonifyError, SonifyWarning
from sonify.experiment import ExperimentConfig, LeNet, _batches, load_dataset, run_experiment


def write_idx(path, array, gz=False):
    """Write an IDX file as MNIST ships them (big-endian header, unsigned bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def tiny_mnist(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 64), ("t10k", 16)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count))
    return tmp_path


def test_lenet_matches_the_reference_shapes():
    model = LeNet()
    assert [name for name, _ in model.named_children()] == ["conv1", "conv2", "fc1", "fc2"]
    assert model.fc1.in_features == 800 and model.fc1.out_features == 500
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))


def test_mnist_through_torchvision(working_torchvision, tiny_mnist):
    images, labels, name, _description = load_dataset("mnist", tiny_mnist)
    assert name == "mnist" and images.shape == (64, 1, 28, 28) and labels.shape == (64,)
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 28, 28)).astype(np.float32))
    torch.testing.assert_close(images[:, 0], (raw / 255 - 0.1307) / 0.3081)


def test_digits_look_like_mnist():
    images, labels, name, _ = load_dataset("digits")
    assert name == "digits" and images.shape == (1797, 1, 28, 28) and set(labels.tolist()) == set(range(10))
    background = images[:, :, :3, :].flatten()
    assert torch.allclose(background, torch.tensor(-0.1307 / 0.3081))  # an empty border, as in MNIST
    assert images.max() <= (1 - 0.1307) / 0.3081 + 1e-5


def test_broken_torchvision_is_explained_and_auto_falls_back(tmp_path):
    """In a fresh interpreter this machine's CUDA torchvision fails beside the CPU torch."""
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("torchvision imports fine here; the mismatch cannot be reproduced")
    code = (
        "from sonify.experiment import load_dataset\n"
        f"images, labels, name, text = load_dataset('auto', {str(tmp_path)!r}, notice=lambda m: print('NOTICE', m))\n"
        "print(name, len(images))\n"
        "from sonify import SonifyError\n"
        "try:\n"
        f"    load_dataset('mnist', {str(tmp_path)!r})\n"
        "except SonifyError as e:\n"
        "    print('ERROR', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0].startswith("NOTICE torchvision") and "cannot load its compiled operators" in lines[0]
    assert "install torchvision 0." in lines[0] and "scikit-learn" in lines[0]
    assert lines[1] == "digits 1797"
    assert lines[2].startswith("ERROR torchvision")


def test_failed_download_falls_back(working_torchvision, tmp_path, monkeypatch):
    notices = []

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(working_torchvision.datasets.MNIST, "download", no_network)
    _images, _, name, _ = load_dataset("auto", tmp_path / "empty", notice=notices.append)
    assert name == "digits" and "MNIST could not be loaded" in notices[0] and "Name or service" in notices[0]
    with pytest.raises(SonifyError, match="MNIST could not be loaded"):
        load_dataset("mnist", tmp_path / "empty")


def test_batches_are_seeded_and_cycle_through_epochs():
    images, labels = torch.arange(10.0)[:, None], torch.arange(10)
    first = [batch[1].tolist() for _, batch in zip(range(6), _batches(images, labels, 3, seed=5))]
    again = [batch[1].tolist() for _, batch in zip(range(6), _batches(images, labels, 3, seed=5))]
    assert first == again and sorted(functools.reduce(operator.iadd, first[:3], [])) == sorted(
        set(functools.reduce(operator.iadd, first[:3], []))
    )


@pytest.mark.parametrize(("optimizer", "lr", "batch"), [("sgd", 0.01, 10), ("adam", 0.01, 10), ("sgd", 1.0, 256)])
def test_reference_runs_complete(tmp_path, optimizer, lr, batch):
    config = ExperimentConfig(optimizer=optimizer, lr=lr, batch_size=batch, steps=25, dataset="digits")
    if lr == 1.0:
        with pytest.warns(SonifyWarning, match="NaN/Inf"):
            result = run_experiment(config, out=tmp_path / "run.wav", progress=False)
    else:
        result = run_experiment(config, out=tmp_path / "run.wav", progress=False)
    stats = result.sonifier.stats
    assert stats.steps == 25 and result.sonifier.audio_path.exists()
    if lr == 1.0:  # the exploding run: NaN within the first steps, and it still finishes
        assert stats.first_nonfinite_step is not None and np.isnan(result.final_loss)
    else:
        assert stats.first_nonfinite_step is None and result.final_loss < 2.4


def test_config_validation_and_names():
    with pytest.raises(SonifyError, match="unknown optimizer"):
        ExperimentConfig(optimizer="lbfgs2")
    assert ExperimentConfig(optimizer="adam").momentum is None
    name = ExperimentConfig(lr=0.1).run_name("log", "digits")
    assert name == "lenet-digits-sgd-lr0.1-bs10-m0.5-200steps-seed0-log"


def test_without_torchvision_auto_falls_back_and_mnist_says_what_to_install(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "torchvision.py").write_text("raise ImportError('No module named torchvision', name='torchvision')\n")
    env = {"PYTHONPATH": f"{blocker}:{ROOT}", "SONIFY_DATA": str(tmp_path / "data")}
    auto = run_sonify("train", "--steps", "2", "--no-progress", "-o", str(tmp_path / "a.wav"), env=env)
    assert auto.returncode == 0, auto.stderr
    fix = "pip install 'torchvision==0.28.*' 'torch==2.13.0'"  # the release built for this torch, torch kept
    assert f"MNIST needs torchvision, which is not installed: {fix}" in auto.stderr
    assert "scikit-learn digits" in auto.stdout
    mnist = run_sonify("train", "--dataset", "mnist", "--steps", "2", "-o", str(tmp_path / "m.wav"), env=env)
    assert mnist.returncode == 1 and mnist.stderr.strip() == (
        f"sonify: error: MNIST needs torchvision, which is not installed: {fix}"
    )
