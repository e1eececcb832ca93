"""One rank of a 2-process CPU (gloo) training run with a Sonifier, for tests/test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_distributed_worker.py MODE OUT_DIR

MODE: ``ddp`` (DistributedDataParallel), ``fsdp2`` (``fully_shard``: DTensor
parameters and gradients), or ``shards`` (what FSDP1 with use_orig_params
leaves in ``.grad``: each rank a flat piece of every gradient, or None; FSDP1
itself refuses to run without an accelerator, so the capture is fed such
pieces by hand). ``reference`` runs the same steps in one process on the
whole batch. Each rank trains on its half of the same global batch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import sonify
from sonify.capture import GradientCapture
from sonify.layers import Layer, select_layers

STEPS = 3


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 6, generator=generator), torch.randn(16, 2, generator=generator)


def main(mode: str, out_dir: Path) -> None:
    # "-full-disk": rank 0's disk fills up after the first step; every rank must keep stepping together.
    full_disk = mode.endswith("-full-disk")
    mode = mode.removesuffix("-full-disk")
    distributed = mode != "reference"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = make_model()
    if mode == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in (model[0], model[2], model[4]):
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if mode == "shards":
        # FSDP1 keeps each rank's piece of a flat parameter; stand-ins of the pieces' shapes play that role.
        stand_ins = {p: nn.Parameter(torch.empty(p.numel() // world + 1)) for p in model.parameters()}
        layers = [
            Layer(layer.name, tuple(stand_ins[p] for p in layer.parameters), layer.parameter_names)
            for layer in select_layers(model)
        ]
        capture, rows = GradientCapture(layers, sharded=True), []
    else:
        collectives = count_all_reduce()
        son = sonify.Sonifier(model, optimizer, out=out_dir / f"{mode}.wav", audio=False, flush_interval=0.01)
    for step in range(STEPS):
        if full_disk and step == 1 and rank == 0:
            import resource
            import time

            resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # every further write fails (EFBIG)
            time.sleep(0.3)  # the recorder meets it before the next step
        inputs, targets = batch(step)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs[rank::world]), targets[rank::world]).backward()
        if mode == "shards":
            rows.append(capture_pieces(model, stand_ins, capture, step, rank, world))
        optimizer.step()
    if mode == "shards":
        if rank == 0:
            np.save(out_dir / "shards.npy", np.array(rows))
        print(f"rank {rank}: steps {len(rows)}", flush=True)
        dist.destroy_process_group()
        return
    son.close()
    files = [path.name for path in son.files]
    print(f"rank {rank}: steps {son.steps}, all_reduce calls {collectives[0]}, files {files}", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def count_all_reduce() -> list[int]:
    """Count calls of ``dist.all_reduce`` from now on (DDP and FSDP2 use other entry points)."""
    calls = [0]
    if dist.is_initialized():
        original = dist.all_reduce

        def counted(*args, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)

        dist.all_reduce = counted
    return calls


def capture_pieces(model: nn.Module, stand_ins: dict, capture: GradientCapture, step: int, rank: int, world: int):
    """Average the gradients as FSDP would and give each rank's stand-ins its flat pieces, then capture."""
    for parameter, stand_in in stand_ins.items():
        dist.all_reduce(parameter.grad)
        parameter.grad /= world
        piece = parameter.grad.flatten().tensor_split(world)[rank]
        if parameter is model[4].bias:  # held whole by rank 0; the others have no gradient, as FSDP1 leaves it
            piece = parameter.grad.flatten() if rank == 0 else None
        stand_in.data = torch.empty(0 if piece is None else piece.numel())
        stand_in.grad = None if piece is None else piece.clone()
    capture.submit(step)
    ((_, norms, missing),) = capture.drain()
    assert not missing.any()
    return norms


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
    # Skip interpreter finalization: with gloo, torch 2.13 sometimes aborts there ("terminate called
    # without an active exception") after destroy_process_group, a teardown race of its own worker
    # threads that has nothing to do with what is tested. Everything was written and flushed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
