"""Hugging Face ``Trainer``: add ``SonifyTrainerCallback`` to its callbacks.

    python examples/hf_trainer.py [OUT.wav] [--steps 40] [--live]

A tiny classifier stands in for a transformer so that it runs anywhere. The
Trainer clips gradients (``max_grad_norm``, 1.0 by default) before its
``on_pre_optimizer_step`` event, so the norms you hear are the clipped ones
the optimizer applies; ``max_grad_norm=0`` gives the raw norms.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import transformers
from torch import nn

from sonify.integrations.transformers import SonifyTrainerCallback


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(inputs)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Points(torch.utils.data.Dataset):
    def __init__(self, size: int = 512) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(size, 8, generator=generator)
        self.labels = (self.inputs[:, :2] > 0).long() @ torch.tensor([1, 2])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.inputs[index], "labels": self.labels[index]}


def main(out: str = "audio_out/hf_trainer.wav", steps: int = 40, live: bool = False) -> SonifyTrainerCallback:
    torch.manual_seed(0)
    callback = SonifyTrainerCallback(out=out, live=live)  # <- the one line (plus passing it below)
    with tempfile.TemporaryDirectory() as scratch:
        args = transformers.TrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=16,
            gradient_accumulation_steps=2,
            learning_rate=0.05,
            max_grad_norm=1.0,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Points(), callbacks=[callback])
        trainer.train()
    print(f"{callback.sonifier.steps} optimizer steps recorded; files: {[str(f) for f in callback.sonifier.files]}")
    return callback


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="audio_out/hf_trainer.wav")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--live", action="store_true", help="also play through the default sound card")
    args = parser.parse_args()
    main(args.out, args.steps, args.live)
