"""Lightning and Hugging Face callbacks, on tiny models and data the tests build (no downloads)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import sonify
from conftest import ROOT


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
