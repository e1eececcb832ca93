"""One rank of a 2-process DeepSpeed run on the CPU (gloo), for tests/test_deepspeed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_deepspeed_worker.py MODE OUT_DIR

MODE ``grid``: every ZeRO stage (1, 2, 3) x fp32/bf16/fp16 x gradient accumulation 1/2 (ZeRO-2 with 2 parameter
groups), and two with the optimizer offloaded to the CPU, each with a Sonifier
on every rank; the reference norms are taken at the same moment with ``deepspeed.utils.safe_get_full_grad``
(which gathers every full gradient: what sonify must not do) and saved by rank 0 beside each log.
MODE ``attach``: the ways to attach (the engine; the model and ``engine.optimizer``; ``son.step()`` misuse).
MODE ``disk``: rank 0's files fail at once (an unwritable folder): every rank still trains every step.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import deepspeed.ops
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_grad
from torch import nn

import sonify

deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # no g++ build of the shared-memory op
STEPS = 4
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


SONIFY_ALL_REDUCES = [0]


def count_sonify_all_reduces() -> None:
    """Count the all-reduces that sonify itself calls (DeepSpeed's own go through the same function)."""
    original = dist.all_reduce

    def counted(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("sonify."):
            SONIFY_ALL_REDUCES[0] += 1
        return original(*args, **kwargs)

    dist.all_reduce = counted


def make_engine(stage: int, dtype: str, accumulation: int, groups: int = 1, clip: float = 1.0, offload: bool = False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2))
    params = list(model.parameters())
    param_groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.005}] if groups == 2 else params
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": accumulation,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": clip,
    }
    if offload:  # the optimizer state and step on the CPU (with a torch optimizer: no DeepSpeedCPUAdam build)
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        config["zero_force_ds_cpu_optimizer"] = False
    if dtype == "bf16":
        config["bf16"] = {"enabled": True}
    if dtype == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 8}
    optimizer = torch.optim.AdamW(param_groups, lr=0.01)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def reference_hook(engine, son, rows):
    """Wrap the ZeRO step outside sonify's wrapper: the full gradients, gathered, at the same moment."""
    zero = engine.optimizer
    inner = zero.step

    def step(*args, **kwargs):
        scale = float(getattr(zero, "loss_scale", 1.0) or 1.0)
        full = {id(p): safe_get_full_grad(p) for p in engine.module.parameters()}
        rows.append(
            [
                float(np.sqrt(sum(float(full[id(p)].double().norm()) ** 2 for p in layer.parameters))) / scale
                for layer in son.layers
            ]
        )
        return inner(*args, **kwargs)

    zero.step = step


def train(engine, accumulation: int, rank: int) -> None:
    dtype = next(engine.module.parameters()).dtype
    for micro in range(STEPS * accumulation):
        generator = torch.Generator().manual_seed(1000 + 2 * micro + rank)
        x, y = torch.randn(4, 6, generator=generator), torch.randn(4, 2, generator=generator)
        loss = (engine(x.to(dtype)).float() - y).square().mean()
        engine.backward(loss)
        engine.step()


def grid(out: Path, rank: int) -> None:
    for stage in (1, 2, 3):
        for dtype in DTYPES:
            for accumulation in (1, 2):
                name = f"zero{stage}-{dtype}-acc{accumulation}"
                engine = make_engine(stage, dtype, accumulation, groups=2 if stage == 2 else 1)
                run_one(engine, name, accumulation, out, rank)
    for stage, dtype, accumulation in ((2, "fp32", 2), (3, "bf16", 1)):
        name = f"zero{stage}-{dtype}-acc{accumulation}-offload"
        run_one(make_engine(stage, dtype, accumulation, offload=True), name, accumulation, out, rank)


def run_one(engine, name: str, accumulation: int, out: Path, rank: int) -> None:
    """Train one engine with a Sonifier; rank 0 keeps the reference norms beside its log."""
    son = sonify.Sonifier(engine, out=out / f"{name}.wav", audio=False, flush_interval=0.05)
    SONIFY_ALL_REDUCES[0] = 0
    rows: list = []
    reference_hook(engine, son, rows)
    train(engine, accumulation, rank)
    son.close()
    if rank == 0:
        (out / f"{name}.reference.json").write_text(json.dumps(rows))
    print(
        f"rank {rank}: {name} steps {son.steps} all_reduce {SONIFY_ALL_REDUCES[0]} failures {sorted(son.failures)}",
        flush=True,
    )


def attach(out: Path, rank: int) -> None:
    for way in ("model+optimizer", "engine"):
        engine = make_engine(2, "fp32", 1)
        if way == "engine":
            son = sonify.Sonifier(engine, out=out / "engine.wav", audio=False)
        else:
            son = sonify.Sonifier(engine.module, engine.optimizer, out=out / "optimizer.wav", audio=False)
        rows: list = []
        reference_hook(engine, son, rows)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            son.step()  # misuse: it records at every ZeRO step already; one warning, nothing recorded
            train(engine, 1, rank)
        son.close()
        if rank == 0:
            (out / f"{way}.reference.json").write_text(json.dumps(rows))
        said = sorted({str(w.message).split(":")[0] for w in caught if "son.step" in str(w.message)})
        print(f"rank {rank}: {way} steps {son.steps} said {said}", flush=True)


def disk(out: Path, rank: int) -> None:
    """Rank 0's disk fills up after the first step: every rank must keep stepping (and all-reducing) together."""
    engine = make_engine(3, "fp32", 1)
    son = sonify.Sonifier(engine, out=out / "disk.wav", flush_interval=0.01)
    dtype = next(engine.module.parameters()).dtype
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for step in range(STEPS):
            if step == 1 and rank == 0:
                import resource
                import time

                resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # every further write fails (EFBIG)
                time.sleep(0.3)  # the recorder meets it before the next step
            generator = torch.Generator().manual_seed(1000 + 2 * step + rank)
            x, y = torch.randn(4, 6, generator=generator), torch.randn(4, 2, generator=generator)
            engine.backward((engine(x.to(dtype)).float() - y).square().mean())
            engine.step()
        son.close()
    print(
        f"rank {rank}: disk steps {son.steps} all_reduce {SONIFY_ALL_REDUCES[0]} lost {sorted(son.failures)}",
        flush=True,
    )


def broken(out: Path, rank: int) -> None:
    """Rank 1 cannot read its pieces (as with a DeepSpeed whose private attributes moved): no hang, one warning."""
    import sonify.capture._deepspeed as ds_capture

    if rank == 1:

        def unreadable(parameter):
            raise AttributeError("'Parameter' object has no attribute '_hp_mapping'")

        ds_capture._local_piece = unreadable
    engine = make_engine(2, "fp32", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        son = sonify.Sonifier(engine, out=out / "broken.wav", flush_interval=0.01)
        train(engine, 1, rank)
        son.close()
    said = [str(w.message) for w in caught if "sonify" in str(w.message) or "DeepSpeed" in str(w.message)]
    (out / f"broken-rank{rank}.json").write_text(json.dumps(said))
    print(
        f"rank {rank}: broken steps {son.steps} all_reduce {SONIFY_ALL_REDUCES[0]} lost {sorted(son.failures)}",
        flush=True,
    )


def hf(out: Path, rank: int) -> None:
    """The Hugging Face Trainer with a DeepSpeed config (through Accelerate) and SonifyTrainerCallback."""
    import transformers

    from sonify.integrations.transformers import SonifyTrainerCallback

    stage = int(os.environ.get("SONIFY_TEST_STAGE", "2"))

    class Regressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))

        def forward(self, x, y):
            return {"loss": (self.body(x) - y).square().mean()}

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, index: int) -> dict:
            generator = torch.Generator().manual_seed(index)
            return {"x": torch.randn(6, generator=generator), "y": torch.randn(2, generator=generator)}

    torch.manual_seed(0)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.5,
    }
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=5,
        logging_steps=1,
        report_to=[],
        deepspeed=config,
        max_grad_norm=0.5,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = SonifyTrainerCallback(out=out / f"hf-zero{stage}.wav", audio=False)
    trainer = transformers.Trainer(model=Regressor(), args=args, train_dataset=Data(), callbacks=[callback])
    trainer.train()
    if rank == 0:
        logged = [row for row in trainer.state.log_history if "grad_norm" in row]
        (out / f"hf-zero{stage}.grad_norm.json").write_text(
            json.dumps([[row["step"], row["grad_norm"]] for row in logged])
        )
    print(f"rank {rank}: hf steps {callback.sonifier.steps if callback.sonifier else None}", flush=True)


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    count_sonify_all_reduces()
    {"grid": grid, "attach": attach, "disk": disk, "broken": broken, "hf": hf}[mode](out, rank)
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank}: finished", flush=True)  # all of sonify's and torch.distributed's work is done


if __name__ == "__main__":
    main()
