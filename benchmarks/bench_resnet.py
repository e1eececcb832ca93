"""Capture cost on a large model: torchvision's ResNet-18 (41 layers, 62 gradients; auto-grouped to 11 voices).

Variants, interleaved round by round in one process:

* ``bare``: the training step alone (the baseline, ratio 1.00);
* ``capture at the step``: a Sonifier that only records (norm log, no audio),
  reading every gradient at ``optimizer.step()`` (``during_backward=False``);
* ``capture during backward``: the same, each parameter's norm computed as
  its gradient is produced (``during_backward=True``);
* ``sonify``: a full Sonifier with its defaults (norm log and WAV, chord mode).

    python benchmarks/bench_resnet.py [--smoke]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, parse_args, ratio_rows, table

import sonify


def timed(variant, steps, workdir):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    son = None
    if variant != "bare":
        son = sonify.Sonifier(
            model,
            optimizer,
            overwrite=True,
            out=Path(workdir) / "resnet.wav",
            audio=variant == "sonify",
            mapping="log",
            sound=sonify.SoundSettings(mode="chord"),
            during_backward=variant == "capture during backward",
        )

    def step():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = (time.perf_counter() - start) / steps
    if son is not None:
        son.close()
    return elapsed


def main():
    args = parse_args(__doc__)
    rounds, steps = (1, 2) if args.smoke else (24, 10)
    with tempfile.TemporaryDirectory() as workdir:
        variants = ["bare", "capture at the step", "capture during backward", "sonify"]
        times = interleaved(variants, rounds, lambda variant: timed(variant, steps, workdir))
    rows = ratio_rows(times, "bare")
    print(
        f"ResNet-18, batch 32 of 32x32 images, {rounds} interleaved rounds x {steps} steps, torch {torch.__version__}, {machine()}"
    )
    print(table(["variant", "median step", "ratio vs bare (median of rounds)", "middle half of rounds"], rows))


if __name__ == "__main__":
    main()
