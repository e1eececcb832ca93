"""sonify's per-step cost on a DeepSpeed ZeRO run, against the same run without it (2 ranks, CPU, gloo).

Two engines train the same MLP (8 layers of 256) side by side in each rank:
one with a Sonifier attached (the default files: norm log and WAV, written
by its own thread), one bare. In each round each trains a block of steps,
the order rotated round by round, so machine noise hits both alike. The
figure is the median over rounds of (sonify block time / bare block time),
with the middle half of the rounds; ZeRO stages 1, 2 and 3 in fp32.

    python benchmarks/bench_deepspeed.py [--smoke]

It starts its own 2 ranks (``torch.distributed.run``); DeepSpeed must be
installed (``scripts/setup.sh`` does).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, machine, parse_args, ratio_rows, table

STEPS_PER_BLOCK = 5


def build_engine(stage: int) -> object:
    """The MLP (8 layers of 256) under DeepSpeed ZeRO ``stage``, fp32, AdamW, clipping at 1."""
    import deepspeed
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.Tanh()]
    model = nn.Sequential(*layers)
    config = {
        "train_micro_batch_size_per_gpu": 32,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 1.0,
    }
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), config=config
    )
    return engine


def train_block(engines: dict, data: list, variant: str) -> float:
    """Seconds for one block of steps of one engine (both ranks start together)."""
    import torch.distributed as dist

    engine = engines[variant]
    dist.barrier()
    start = time.perf_counter()
    for step in range(STEPS_PER_BLOCK):
        x, y = data[step % len(data)]
        engine.backward((engine(x) - y).square().mean())
        engine.step()
    return time.perf_counter() - start


def rank_main(smoke: bool) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops
    import torch
    import torch.distributed as dist

    import sonify

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    rounds = 3 if smoke else int(os.environ.get("BENCH_ROUNDS", 40))
    rows = []
    for stage in (1, 2, 3):
        engines = {"bare": build_engine(stage), "sonify": build_engine(stage)}
        folder = tempfile.mkdtemp(prefix="sonify-bench-ds-")
        son = sonify.Sonifier(engines["sonify"], out=Path(folder) / f"zero{stage}.wav")
        generator = torch.Generator().manual_seed(rank)
        data = [
            (torch.randn(32, 256, generator=generator), torch.randn(32, 256, generator=generator)) for _ in range(4)
        ]
        measure = functools.partial(train_block, engines, data)
        for variant in engines:  # warm up both
            measure(variant)
        times = interleaved(list(engines), rounds, measure)
        son.close()
        for row in ratio_rows(times, "bare"):
            rows.append([f"ZeRO-{stage}", *row])
    if rank == 0:
        print(
            f"DeepSpeed {deepspeed.__version__}, 2 ranks (gloo), {rounds} rounds x {STEPS_PER_BLOCK} steps, {machine()}"
        )
        print(table(["stage", "variant", "median block", "ratio vs bare", "middle half of rounds"], rows))
    dist.destroy_process_group()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    if "RANK" in os.environ:
        rank_main(args.smoke)
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__]
    if args.smoke:
        command.append("--smoke")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    raise SystemExit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
