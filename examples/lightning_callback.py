"""PyTorch Lightning: add ``SonifyCallback`` to the Trainer's callbacks.

    python examples/lightning_callback.py [OUT.wav] [--steps 40] [--live]

Norms are read in ``on_before_optimizer_step``: once per optimizer step
(here after accumulating 2 batches), after AMP unscaling and before
Lightning's gradient clipping.
"""

from __future__ import annotations

import argparse

import lightning
import torch
from torch import nn

from sonify.integrations.lightning import SonifyCallback


class Regressor(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main(out: str = "audio_out/lightning.wav", steps: int = 40, live: bool = False) -> SonifyCallback:
    torch.manual_seed(0)
    inputs = torch.linspace(-3, 3, 512)[:, None]
    data = torch.utils.data.TensorDataset(inputs, torch.sin(inputs))
    callback = SonifyCallback(out=out, live=live)  # <- the one line (plus passing it below)
    trainer = lightning.Trainer(
        max_steps=steps,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Regressor(), torch.utils.data.DataLoader(data, batch_size=32, shuffle=True))
    print(f"{callback.sonifier.steps} optimizer steps recorded; files: {[str(f) for f in callback.sonifier.files]}")
    return callback


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="audio_out/lightning.wav")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--live", action="store_true", help="also play through the default sound card")
    args = parser.parse_args()
    main(args.out, args.steps, args.live)
