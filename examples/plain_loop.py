"""Add sonify to an existing PyTorch loop with one line.

    python examples/plain_loop.py                 # writes audio_out/plain_loop.wav + its norm log
    python examples/plain_loop.py --live --pace   # and plays every step as it trains

A small MLP learns a noisy sine; halfway through, the learning rate is
raised far too high so you can hear the gradients explode.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sonify


def main(
    out: str = "audio_out/plain_loop.wav", steps: int = 300, live: bool = False, pace: bool = False
) -> sonify.RunStats:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.linspace(-3, 3, 256)[:, None]
    y = torch.sin(x) + 0.1 * torch.randn_like(x)

    with sonify.Sonifier(model, optimizer, out=out, live=live, pace=pace) as son:  # <- the one line
        for step in range(steps):
            if step == steps // 2:
                optimizer.param_groups[0]["lr"] = 5.0  # far too high: listen to the pitch climb
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    stats = son.stats
    print(f"{stats.steps} steps; NaN/Inf from step {stats.first_nonfinite_step}; files: {[str(f) for f in son.files]}")
    if son.live_report is not None:
        print(f"live: {son.live_report.describe()}")
    return stats


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="audio_out/plain_loop.wav")
    parser.add_argument("--live", action="store_true", help="play through the default sound card while training")
    parser.add_argument("--pace", action="store_true", help="with --live: hear every step (training waits)")
    args = parser.parse_args()
    main(args.out, live=args.live, pace=args.pace)
