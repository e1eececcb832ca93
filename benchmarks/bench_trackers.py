"""What sending sound and norms to experiment trackers costs training.

The reference CNN (LeNet, batch 10) trains with a Sonifier that logs to one
tracker (TensorBoard, Weights & Biases offline, MLflow's file store, a
folder), with ``log_norms=True`` and ``log_audio_every_n_steps`` of 1, 100
and 1,000. Every variant runs in this one process, interleaved round by round
with a plain Sonifier (no trackers: the baseline, ratio 1.000), so machine
noise hits them alike.

Per variant: the median step time of the training loop, its ratio to the
plain Sonifier in the same round (median of rounds, and the middle half), the
slowest single step (a stall would show there), the time ``close()`` took,
and the bytes the tracker wrote. "floor off" rows send a clip every N steps
however fast the run (the one-a-minute floor removed), to show what a clip
itself costs the training thread.

    python benchmarks/bench_trackers.py [--smoke]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median, parse_args, table

import sonify
import sonify.trackers
from sonify.experiment import LeNet


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def tracker_for(kind: str, folder: Path):
    """A fresh tracker of ``kind`` writing under ``folder``; closed (and flushed) on exit."""
    if kind == "plain":
        yield None
    elif kind == "TensorBoard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(folder / "tb")
        yield writer
        writer.close()
    elif kind == "W&B":
        import wandb

        run = wandb.init(project="sonify-bench", dir=str(folder), mode="offline", settings=wandb.Settings(silent=True))
        yield run
        run.finish()
    elif kind == "MLflow":
        import mlflow

        mlflow.set_tracking_uri(f"file:{folder / 'mlruns'}")
        with mlflow.start_run():
            yield mlflow
    else:
        yield folder / "clips"


def run(kind: str, every: int | None, floor: bool, steps: int, workdir: Path, index: int) -> dict:
    torch.manual_seed(0)
    model = LeNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    inputs, targets = torch.randn(10, 1, 28, 28), torch.randint(0, 10, (10,))
    folder = workdir / f"{kind}-{every}-{floor}-{index}"
    folder.mkdir(parents=True)
    saved = sonify.trackers.MIN_CLIP_SECONDS, sonify.trackers.CLIP_SPACING
    if not floor:
        sonify.trackers.MIN_CLIP_SECONDS, sonify.trackers.CLIP_SPACING = 0.0, 0.0
    try:
        with tracker_for(kind, folder) as target, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notice about the clip floor
            options = (
                {} if target is None else {"trackers": target, "log_norms": True, "log_audio_every_n_steps": every}
            )
            son = sonify.Sonifier(model, optimizer, out=folder / "run.wav", **options)
            durations = np.empty(steps)
            for step in range(steps):
                start = time.perf_counter()
                optimizer.zero_grad()
                F.nll_loss(model(inputs), targets).backward()
                optimizer.step()
                durations[step] = time.perf_counter() - start
            start = time.perf_counter()
            son.close()
            closing = time.perf_counter() - start
            failures = son.failures
    finally:
        sonify.trackers.MIN_CLIP_SECONDS, sonify.trackers.CLIP_SPACING = saved
    written = folder_bytes(folder) - sum(p.stat().st_size for p in son.files if p.exists())
    return {
        "step": float(np.median(durations[5:] if steps > 10 else durations)),
        "slowest": float(durations.max()),
        "close": closing,
        "bytes": written,
        "failures": failures,
    }


def main() -> None:
    args = parse_args(__doc__)
    rounds, steps = (1, 12) if args.smoke else (5, 2000)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store in the temporary folder: no server
    variants = [("plain", None, True)]
    variants += [(kind, every, True) for kind in ("TensorBoard", "W&B", "MLflow", "folder") for every in (1, 100, 1000)]
    variants += [("TensorBoard", 1, False), ("TensorBoard", 100, False), ("folder", 100, False)]
    results: dict[tuple, list[dict]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        for index in range(rounds):
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results[variant].append(run(*variant, steps, workdir, index))
    rows = []
    for variant, runs in results.items():
        kind, every, floor = variant
        ratios = [mine["step"] / base["step"] for mine, base in zip(runs, results[("plain", None, True)])]
        low, high = np.percentile(ratios, [25, 75])
        failed = {name for result in runs for name in result["failures"]}
        rows.append(
            [
                kind if floor else f"{kind} (floor off)",
                "" if every is None else every,
                f"{median([r['step'] for r in runs]) * 1e3:.2f} ms",
                f"{median(ratios):.3f}",
                f"{low:.3f} .. {high:.3f}",
                f"{max(r['slowest'] for r in runs) * 1e3:.1f} ms",
                f"{median([r['close'] for r in runs]):.2f} s",
                f"{median([r['bytes'] for r in runs]) / 1e6:.1f} MB",
                ", ".join(sorted(failed)) or "none",
            ]
        )
    print(
        f"trackers, LeNet batch 10, log_norms=True, {rounds} interleaved rounds x {steps} steps, "
        f"torch {torch.__version__}, {machine()}"
    )
    headers = ["tracker", "every N", "median step", "ratio vs plain", "middle half", "slowest step", "close()"]
    print(table([*headers, "tracker wrote", "failures"], rows))


if __name__ == "__main__":
    main()
