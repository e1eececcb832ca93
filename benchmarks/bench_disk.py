"""Bytes a long run writes: the default bounded audio file against the full-resolution one.

The reference CNN's four layers, 200,000 optimizer steps (``son.step()`` on
fixed gradients, so that only sonify's writing is measured), default sound
(float WAV, 44.1 kHz), once with the defaults (``max_audio_seconds`` = 15
minutes: the file is condensed at the end) and once with
``max_audio_seconds=None`` (every step at full resolution, as before the
bound). Reported: the bytes of the norm log and of the audio file, the
audio's length, and how long ``close()`` took (the condensing happens there).

    python benchmarks/bench_disk.py [--smoke]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, parse_args, table

import sonify
from sonify.experiment import REFERENCE_LAYERS, LeNet


def run(steps: int, bound: float | None, folder: Path) -> list[str]:
    torch.manual_seed(0)
    model = LeNet()
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    label = "default (bounded)" if bound == sonify.sonifier.MAX_AUDIO_SECONDS else f"max_audio_seconds={bound}"
    out = folder / f"{'bounded' if bound else 'full'}.wav"
    son = sonify.Sonifier(model, out=out, layers=list(REFERENCE_LAYERS), params="weight", max_audio_seconds=bound)
    for _ in range(steps):
        son.step()
    start = time.perf_counter()
    son.close()
    closing = time.perf_counter() - start
    log_bytes = son.log_path.stat().st_size + son.meta_path.stat().st_size
    info = soundfile.info(out)
    return [
        label,
        f"{steps:,}",
        f"{log_bytes / 1e6:.1f} MB",
        f"{out.stat().st_size / 1e6:.1f} MB",
        f"{info.duration / 60:.1f} min",
        f"{son.audio_condensed['steps_per_tone'] if son.audio_condensed else 1}",
        f"{closing:.1f} s",
    ]


def main() -> None:
    args = parse_args(__doc__)
    steps = 2_000 if args.smoke else 200_000
    bounds = [1.0, None] if args.smoke else [sonify.sonifier.MAX_AUDIO_SECONDS, None]
    with tempfile.TemporaryDirectory() as folder:
        rows = [run(steps, bound, Path(folder)) for bound in bounds]
    print(f"bytes written by a long run, LeNet (4 layers), torch {torch.__version__}, {machine()}")
    print(
        table(["audio file", "steps", "norm log", "audio file size", "audio length", "steps per tone", "close()"], rows)
    )


if __name__ == "__main__":
    main()
