"""sonify against what users would pick instead, on the training thread, side by side.

Variants, interleaved round by round in one process (the order rotated each
round) so that machine noise hits them alike, each timed over the same
training steps:

* ``bare``: training alone (the baseline of every ratio);
* ``floor``: an optimizer pre-hook doing the least any monitor must: one
  fused ``torch._foreach_norm`` over every gradient, one stack, one host
  copy (``.tolist()``), nothing kept;
* ``sonify``: ``Sonifier(model, optimizer, out=...)`` with its defaults
  (norm log and WAV written by its own thread; norms read at the step);
* ``sonify, during backward``: the same with ``during_backward=True``
  (each parameter's norm computed by a hook as its gradient is produced);
* ``sonify, live="notebook"``: the default Sonifier plus the live notebook
  player, in an in-process Jupyter kernel (ipykernel's own: real widget
  comms, no front end): the recorder's thread scores each block for it, and
  a step that finds one ready sends it (skipped when ipykernel or anywidget
  is missing);
* ``naive loop``: the 2019 habit, a norm and a ``.item()`` per parameter,
  combined into layers in Python. Like with like: every parameter, as
  sonify and the floor read (the 2019 script read only the 4 weights);
* ``lightning grad_norm``: ``lightning.pytorch.utilities.grad_norm(model, 2)``,
  its values turned into floats (skipped when Lightning cannot be imported);
* ``wandb.watch``: ``wandb.watch(model, log="gradients", log_freq=1)`` in an
  offline run (skipped when wandb is not installed).

Models: the reference CNN (LeNet, 8 parameter tensors in 4 layers) at batch 10
and 64, and a larger one: a 4-layer Transformer encoder (d_model 256, 42
parameter tensors in 14 layers) at batch 16 of 32 tokens. The ratio of each
variant is the median over rounds of (its step time / bare step time in the
same round), with the middle half of the rounds. Every variant has its own
model with its monitor attached for the whole measurement (sonify's recorder
thread writes its files meanwhile, as in a real run); in each round every
variant trains a short block of steps, the order rotated round by round.

    python benchmarks/bench_peers.py [--smoke]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median, parse_args, table

import sonify
from sonify.experiment import LeNet


def floor_hook(model: torch.nn.Module):
    parameters = list(model.parameters())

    def hook(optimizer, args, kwargs):
        torch.stack(torch._foreach_norm([p.grad for p in parameters], 2)).tolist()

    return hook


def naive_hook(model: torch.nn.Module, layers: list[list[torch.nn.Parameter]]):
    def hook(optimizer, args, kwargs):
        [math.sqrt(sum(p.grad.norm().item() ** 2 for p in layer)) for layer in layers]

    return hook


def lightning_hook(model: torch.nn.Module, grad_norm: Any):
    def hook(optimizer, args, kwargs):
        {name: float(value) for name, value in grad_norm(model, 2).items()}

    return hook


class Encoder(torch.nn.Module):
    """A small Transformer encoder: 4 layers, d_model 256, 4 heads, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(256, 4, dim_feedforward=512, batch_first=True, dropout=0.0)
        self.encoder = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.encoder(x).mean(dim=1)), dim=1)


def make(model_name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if model_name == "LeNet":
        return LeNet(), torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    return Encoder(), torch.randn(batch, 32, 256), torch.randint(0, 10, (batch,))


def layer_parameters(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """Parameters grouped by the module that owns them (what sonify calls a layer)."""
    return [
        list(module.parameters(recurse=False))
        for module in model.modules()
        if any(True for _ in module.parameters(recurse=False))
    ]


class Variant:
    """One variant's own model, optimizer and monitor, attached for the whole measurement."""

    def __init__(self, name: str, model_name: str, batch: int, workdir: str, peers: dict[str, Any]) -> None:
        self.name = name
        self.model, self.inputs, self.targets = make(model_name, batch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.5)
        self.handle, self.son, self.run = None, None, None
        if name == "floor":
            self.handle = self.optimizer.register_step_pre_hook(floor_hook(self.model))
        elif name == "naive loop":
            self.handle = self.optimizer.register_step_pre_hook(naive_hook(self.model, layer_parameters(self.model)))
        elif name == "lightning grad_norm":
            self.handle = self.optimizer.register_step_pre_hook(lightning_hook(self.model, peers["grad_norm"]))
        elif name == "wandb.watch":
            self.run = peers["wandb"].run
            self.run.watch(self.model, log="gradients", log_freq=1)
        elif name.startswith("sonify"):
            slug = "".join(c if c.isalnum() else "-" for c in name)  # each variant its own files
            out = Path(workdir) / f"peers-{model_name}-{batch}-{slug}.wav"
            self.son = sonify.Sonifier(
                self.model,
                self.optimizer,
                out=out,
                overwrite=True,
                during_backward=name == "sonify, during backward",
                live="notebook" if "notebook" in name else False,
            )
        self.steps(3)  # warm-up

    def steps(self, count: int) -> float:
        """Seconds per training step over ``count`` steps."""
        start = time.perf_counter()
        for _ in range(count):
            self.optimizer.zero_grad()
            F.nll_loss(self.model(self.inputs), self.targets).backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / count

    def close(self) -> None:
        if self.son is not None:
            self.son.close()
        if self.handle is not None:
            self.handle.remove()
        if self.run is not None:
            self.run.unwatch(self.model)


def available_peers(workdir: str) -> tuple[dict[str, Any], list[str]]:
    """Lightning's grad_norm and an offline wandb run, where they can be had; notes for the others."""
    peers: dict[str, Any] = {}
    notes = []
    try:
        from lightning.pytorch.utilities import grad_norm

        peers["grad_norm"] = grad_norm
    except Exception as exc:  # not installed, or its torchvision import fails
        notes.append(f"lightning grad_norm skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        wandb.init(mode="offline", dir=workdir, project="sonify-bench")
        peers["wandb"] = wandb
    except Exception as exc:
        notes.append(f"wandb.watch skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    try:
        from ipykernel.inprocess.manager import InProcessKernelManager

        import sonify.live_notebook

        sonify.live_notebook._widget_class()  # anywidget
        manager = InProcessKernelManager()
        manager.start_kernel()
        peers["kernel"] = manager
    except Exception as exc:
        notes.append(f"sonify live='notebook' skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    return peers, notes


def main() -> None:
    args = parse_args(__doc__)
    rounds = 2 if args.smoke else int(os.environ.get("BENCH_ROUNDS", 200))
    # Blocks of steps per round: short blocks, many rounds (the Encoder's steps are 20x longer).
    rounds_for = {"LeNet": (rounds, 3 if args.smoke else 10), "Encoder": (max(2, rounds // 5), 2 if args.smoke else 4)}
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cases = [("LeNet", 10), ("LeNet", 64), ("Encoder", 16)]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        peers, notes = available_peers(workdir)
        variants = ["bare", "floor", "sonify", "sonify, during backward", "naive loop"]
        variants += ['sonify, live="notebook"'] if "kernel" in peers else []
        variants += ["lightning grad_norm"] if "grad_norm" in peers else []
        variants += ["wandb.watch"] if "wandb" in peers else []
        print(
            f"training-thread cost against bare training, rounds x steps per block {rounds_for}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine()}"
        )
        for note in notes:
            print(f"({note})")
        for model_name, batch in cases:
            print(f"... {model_name} batch {batch}", file=sys.stderr, flush=True)
            rounds, steps = rounds_for[model_name]
            built = [Variant(name, model_name, batch, workdir, peers) for name in variants]
            times: dict[str, list[float]] = {v: [] for v in variants}
            for index in range(rounds):  # every monitor stays attached; blocks of steps take turns
                shift = index % len(built)
                for variant in built[shift:] + built[:shift]:
                    times[variant.name].append(variant.steps(steps))
            for variant in built:
                variant.close()
            floor = np.array(times["floor"]) / np.array(times["bare"])
            for variant in variants:
                ratios = np.array(times[variant]) / np.array(times["bare"])
                low, high = np.percentile(ratios, [25, 75])
                rows.append(
                    [
                        f"{model_name} batch {batch}",
                        variant,
                        f"{median(times[variant]) * 1e3:.2f} ms",
                        f"{np.median(ratios):.3f}",
                        f"{low:.3f} .. {high:.3f}",
                        f"{np.median(ratios - floor):+.3f}",
                    ]
                )
        if "wandb" in peers:
            peers["wandb"].finish()
        if "kernel" in peers:
            peers["kernel"].shutdown_kernel()
    print(
        table(
            ["model", "variant", "median step", "ratio vs bare", "middle half of rounds", "ratio minus floor's"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
