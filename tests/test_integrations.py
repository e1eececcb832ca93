"""Lightning and Hugging Face callbacks, on tiny models and data the tests build (no downloads)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

import sonify
from helpers import ROOT, decoded, tensorboard_events
from sonify.rendering import condensed_audio


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def layer_norms(model):
    return [
        torch.linalg.vector_norm(torch.cat([p.grad.flatten().double() for p in model[i].parameters()])).item()
        for i in (0, 2)
    ]


def dataset(n=64):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


# -- Lightning -------------------------------------------------------------------


@pytest.fixture
def lightning(working_torchvision):  # Lightning imports torchvision through torchmetrics
    import lightning.pytorch

    return lightning.pytorch


def test_lightning_callback_records_unscaled_norms_before_clipping(lightning, tmp_path):
    from sonify.integrations.lightning import SonifyCallback

    reference = []

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny_model()

        def training_step(self, batch, _):
            inputs, targets = batch
            return 50 * nn.functional.cross_entropy(self.net(inputs), targets)  # large: clipping bites

        def on_before_optimizer_step(self, optimizer):  # runs after the callbacks' hook, before clipping
            reference.append(layer_norms(self.net))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    inputs, targets = dataset()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=8)
    callback = SonifyCallback(out=tmp_path / "pl.wav")
    trainer = lightning.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        gradient_clip_val=0.1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(Module(), loader)
    log = sonify.load_norms(tmp_path / "pl.norms.csv")
    assert list(log.layer_names) == ["net.0", "net.2"] and len(log) == 3  # one row per optimizer step, not per batch
    np.testing.assert_allclose(log.norms, reference, rtol=1e-5)
    assert np.linalg.norm(log.norms, axis=1).min() > 0.1  # before clipping to 0.1
    assert log.metadata["framework"].startswith("lightning") and callback.sonifier.stats.steps == 3


def test_lightning_missing_is_one_clear_line(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['lightning'] = None\nsys.modules['pytorch_lightning'] = None\n")
    code = "import sonify.integrations.lightning"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "sonify's Lightning callback needs lightning.pytorch, which is not installed: pip install 'sonify[lightning]'"
        )
    )


# -- Hugging Face --------------------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_model()

    def forward(self, inputs, labels=None):
        logits = self.net(inputs)
        return {"loss": 50 * nn.functional.cross_entropy(logits, labels), "logits": logits}


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        self.inputs, self.labels = dataset()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"inputs": self.inputs[index], "labels": self.labels[index]}


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5], ids=["no-clipping", "clipped"])
def test_trainer_callback_records_what_the_optimizer_applies(tmp_path, max_grad_norm, working_torchvision):
    import transformers

    from sonify.integrations.transformers import SonifyTrainerCallback

    model, reference = Classifier(), []

    class Reference(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            reference.append(layer_norms(model.net))

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=max_grad_norm,
        learning_rate=0.01,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = SonifyTrainerCallback(out=tmp_path / "hf.wav")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[callback, Reference()])
    trainer.train()
    log = sonify.load_norms(tmp_path / "hf.norms.csv")
    assert list(log.layer_names) == ["net.0", "net.2"] and len(log) == 4
    np.testing.assert_allclose(log.norms, reference, rtol=1e-5)
    total = np.linalg.norm(log.norms, axis=1)
    if max_grad_norm:
        assert total.max() <= max_grad_norm * 1.001  # the Trainer clipped before the callback event
    else:
        assert total.min() > 0.5
    assert log.metadata["max_grad_norm"] == max_grad_norm


# -- sound in the trackers ------------------------------------------------------------


def lightning_module(lightning, fail_at=None):
    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny_model()

        def training_step(self, batch, index):
            if fail_at is not None and self.global_step == fail_at:
                raise ArithmeticError("the user's own error")
            inputs, targets = batch
            return nn.functional.cross_entropy(self.net(inputs), targets)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Module()


def loader():
    inputs, targets = dataset(256)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=4)


def test_lightning_sends_sound_and_norms_to_every_logger(lightning, offline, tmp_path, monkeypatch):
    import mlflow
    import wandb
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    from sonify.integrations.lightning import SonifyCallback
    from sonify.trackers import AUDIO_TAG

    loggers = [
        TensorBoardLogger(tmp_path / "tb"),
        CSVLogger(tmp_path / "csv"),
        WandbLogger(project="sonify-test", save_dir=str(tmp_path)),
        MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"),
    ]
    callback = SonifyCallback(out=tmp_path / "pl.wav", log_audio_every_n_steps=20, log_norms=True)
    monkeypatch.setattr(sonify.trackers, "MIN_CLIP_SECONDS", 0.0)  # every 20 steps, however fast the run
    monkeypatch.setattr(sonify.trackers, "CLIP_SPACING", 0.0)
    trainer = lightning.Trainer(
        max_steps=60,
        callbacks=[callback],
        logger=loggers,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    try:
        trainer.fit(lightning_module(lightning), loader())
    finally:
        wandb.finish()  # the next test must not find this run still open
    log = sonify.load_norms(tmp_path / "pl.norms.csv")
    expected, _ = condensed_audio(log)
    assert len(log) == 60 and callback.sonifier._trackers.failures == {}

    events = tensorboard_events(loggers[0].log_dir)
    clips = tensorboard_events(Path(loggers[0].log_dir) / "sonify").Audio(AUDIO_TAG)  # a run of its own beside
    assert clips[-1].step == 60
    np.testing.assert_allclose(decoded(clips[-1].encoded_audio_string), expected, atol=1.5 / 32767)
    assert [s.step for s in events.Scalars("sonify/grad_norm/net.2")] == list(range(1, 61))

    csv_dir = Path(loggers[1].log_dir)
    np.testing.assert_allclose(
        soundfile.read(csv_dir / "audio-step60.wav", dtype="float32")[0], expected, atol=1.5 / 32767
    )
    metrics = csv_dir.joinpath("metrics.csv").read_text().splitlines()
    assert "sonify/grad_norm/net.0" in metrics[0] and len(metrics) >= 61

    media = sorted(tmp_path.glob("wandb/offline-run-*/files/media/audio/sonify/*.wav"))
    assert media and soundfile.info(media[-1]).duration > 0

    client = mlflow.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    names = [a.path for a in client.list_artifacts(loggers[3].run_id, "sonify")]
    assert "sonify/audio-step60.wav" in names


def test_lightning_run_stopped_by_an_exception_still_logs_its_sound(lightning, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from sonify.integrations.lightning import SonifyCallback
    from sonify.trackers import AUDIO_TAG

    logger = TensorBoardLogger(tmp_path / "tb")
    trainer = lightning.Trainer(
        max_steps=50,
        callbacks=[SonifyCallback(out=tmp_path / "pl.wav")],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with pytest.raises(ArithmeticError, match="the user's own error"):
        trainer.fit(lightning_module(lightning, fail_at=30), loader())
    (clip,) = tensorboard_events(Path(logger.log_dir) / "sonify").Audio(AUDIO_TAG)
    assert clip.step == 30


def test_trainer_callback_sends_sound_to_report_to_trackers(offline, tmp_path, working_torchvision):
    import mlflow
    import transformers
    import wandb

    from sonify.integrations.transformers import SonifyTrainerCallback
    from sonify.trackers import AUDIO_TAG

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=0.01,
        report_to=["tensorboard", "wandb", "mlflow"],
        save_strategy="no",
        logging_steps=4,
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = SonifyTrainerCallback(out=tmp_path / "hf.wav", log_norms=True)
    trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Rows(), callbacks=[callback])
    try:
        trainer.train()
    finally:
        wandb.finish()
    log = sonify.load_norms(tmp_path / "hf.norms.csv")
    expected, _ = condensed_audio(log)
    assert callback.sonifier._trackers.failures == {}
    events = tensorboard_events(offline / "hf-tb")  # the Trainer's TensorBoard folder
    clips = tensorboard_events(offline / "hf-tb" / "sonify").Audio(AUDIO_TAG)
    np.testing.assert_allclose(decoded(clips[-1].encoded_audio_string), expected, atol=1.5 / 32767)
    assert "train/loss" in events.Tags()["scalars"] and "sonify/grad_norm/net.0" in events.Tags()["scalars"]
    assert list(offline.glob("wandb/offline-run-*/files/media/audio/sonify/*.wav"))
    (run,) = mlflow.search_runs(output_format="list", search_all_experiments=True)
    assert "sonify/audio-step12.wav" in [
        a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "sonify")
    ]
