"""Training-thread cost of sonify on the reference CNN (LeNet, digits-sized inputs).

Variants, interleaved round by round in one process so that machine noise
hits them alike:

* ``bare``: the training step alone (the baseline, ratio 1.00);
* ``floor``: a bare optimizer pre-hook that computes all norms with one fused
  call and copies them to the host once: the unavoidable cost;
* ``sonify``: a full ``Sonifier`` (norm log and WAV written by its thread);
* ``2019 script``: a norm and a host copy per layer, and the tones synthesized
  inside the loop, as the old script did.

Ratios are the median over rounds of (variant step time / bare step time in
the same round), per batch size.

    python benchmarks/bench_training.py [--smoke]
"""

from __future__ import annotations

import functools
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, median, parse_args, ratio_rows, table

import sonify
from sonify.experiment import REFERENCE_LAYERS, LeNet


def floor_hook(model):
    weights = [getattr(model, name).weight for name in REFERENCE_LAYERS]

    def hook(optimizer, args, kwargs):
        norms = torch.stack(torch._foreach_norm([w.grad for w in weights], 2, dtype=torch.float32))
        norms.cpu().numpy()

    return hook


def old_script_hook(model, chunks):
    """Per layer: a norm, a host copy (.item()) and a tone synthesized on the spot."""
    weights = [getattr(model, name).weight for name in REFERENCE_LAYERS]
    t = np.arange(441) / 44100

    def hook(optimizer, args, kwargs):
        for w in weights:
            norm = w.grad.norm().item()
            chunks.append((0.1 * np.sin(2 * math.pi * (200 + 100 * norm) * t)).astype(np.float32))
        chunks.append(np.zeros(882, np.float32))

    return hook


def run(variant, batch_size, steps, workdir):
    torch.manual_seed(0)
    model = LeNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    inputs = torch.randn(batch_size, 1, 28, 28)
    targets = torch.randint(0, 10, (batch_size,))
    handle, son, chunks = None, None, []
    if variant == "floor":
        handle = optimizer.register_step_pre_hook(floor_hook(model))
    elif variant == "2019 script":
        handle = optimizer.register_step_pre_hook(old_script_hook(model, chunks))
    elif variant == "sonify":
        son = sonify.Sonifier(
            model,
            optimizer,
            overwrite=True,
            out=Path(workdir) / f"bench-{batch_size}.wav",
            layers=list(REFERENCE_LAYERS),
            params="weight",
        )
    for _ in range(3):  # warm-up
        optimizer.zero_grad()
        F.nll_loss(model(inputs), targets).backward()
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        F.nll_loss(model(inputs), targets).backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    if son is not None:
        son.close()
    if handle is not None:
        handle.remove()
    return elapsed / steps


def many_tensors_model(tensors: int) -> torch.nn.Module:
    """A model of ``tensors`` small parameter tensors (Linear(8, 8) layers: a weight and a bias each)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(tensors // 2)])


def run_many(variant, tensors, steps, workdir):
    """One variant on the many-tensors model: bare, the fused floor, sonify, sonify reading each tensor alone."""
    import sonify.capture

    model = many_tensors_model(tensors)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    inputs = torch.randn(16, 8)
    handle, son = None, None
    limit = sonify.capture.PER_TENSOR_LIMIT
    if variant == "floor":
        parameters = list(model.parameters())

        def hook(optimizer, args, kwargs):
            torch.stack(torch._foreach_norm([p.grad for p in parameters], 2)).cpu().numpy()

        handle = optimizer.register_step_pre_hook(hook)
    elif variant.startswith("sonify"):
        if variant == "sonify, one by one":  # the path sonify took for any number of tensors before
            sonify.capture.PER_TENSOR_LIMIT = 10**9
        son = sonify.Sonifier(model, optimizer, overwrite=True, out=Path(workdir) / "many.wav")
    try:
        for _ in range(3):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
        elapsed = time.perf_counter() - start
    finally:
        sonify.capture.PER_TENSOR_LIMIT = limit
        if son is not None:
            son.close()
        if handle is not None:
            handle.remove()
    return elapsed / steps


def main():
    args = parse_args(__doc__)
    rounds, steps = (2, 10) if args.smoke else (25, 40)
    variants = ["bare", "floor", "sonify", "2019 script"]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for batch_size in (10, 64):
            times = {v: [] for v in variants}
            for round_index in range(rounds):
                order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
                for variant in order:
                    times[variant].append(run(variant, batch_size, steps, workdir))
            for variant in variants:
                ratios = [mine / bare for mine, bare in zip(times[variant], times["bare"])]
                step = median(times[variant])
                rows.append([batch_size, variant, f"{step * 1e3:.2f} ms", f"{median(ratios):.3f}"])
    print(
        f"training-thread cost, LeNet, {rounds} interleaved rounds x {steps} steps, torch {torch.__version__}, {machine()}"
    )
    print(table(["batch", "variant", "median step", "ratio vs bare (median of rounds)"], rows))
    many = ["bare", "floor", "sonify", "sonify, one by one"]
    many_rounds, many_steps = (2, 5) if args.smoke else (10, 20)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for tensors in (64, 256, 2000):
            measure = functools.partial(run_many, tensors=tensors, steps=many_steps, workdir=workdir)
            times = interleaved(many, many_rounds, measure)
            rows += [[tensors, *row] for row in ratio_rows(times, "bare")]
    print(f"\nmany small tensors (Linear(8, 8) layers), {many_rounds} interleaved rounds x {many_steps} steps")
    print(table(["tensors", "variant", "median step", "ratio vs bare", "middle half of rounds"], rows))


if __name__ == "__main__":
    main()
