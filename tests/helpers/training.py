"""A tiny model and a training loop that can turn to NaN on purpose."""

from __future__ import annotations

import torch
from torch import nn


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
