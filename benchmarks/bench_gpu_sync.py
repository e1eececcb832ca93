"""Host-device synchronisations caused by sonify's capture on a GPU (target: none per step).

Runs a small CNN on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``,
which makes torch warn at every operation that waits for the device (such as
``.item()`` or a blocking copy to the host). Counts those warnings over
training steps without sonify and with a Sonifier attached (capture, log and
WAV); the difference is sonify's. The norms are read back asynchronously
(pinned memory, a CUDA event), so the expected difference is 0, plus the
final drain when the Sonifier closes.

Without a CUDA device it says so and exits (nothing to measure).

    python benchmarks/bench_gpu_sync.py [--smoke]
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, table

import sonify
from sonify.experiment import LeNet


def count_syncs(steps: int, attach: bool, workdir: str) -> tuple[int, int]:
    torch.manual_seed(0)
    model = LeNet().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.randn(64, 1, 28, 28, device="cuda")
    labels = torch.randint(0, 10, (64,), device="cuda")
    son = sonify.Sonifier(model, optimizer, overwrite=True, out=Path(workdir) / "gpu.wav") if attach else None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.nll_loss(model(images), labels).backward()
            optimizer.step()
        in_steps = sum("synchroniz" in str(w.message) for w in caught)
        if son is not None:
            son.close()
        torch.cuda.set_sync_debug_mode("default")
    return in_steps, sum("synchroniz" in str(w.message) for w in caught) - in_steps


def main():
    args = parse_args(__doc__)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run this on a machine with a GPU)")
        print(table(["variant", "syncs during steps", "syncs at close"], [["-", "-", "-"]]))
        return
    steps = 20 if args.smoke else 500
    with tempfile.TemporaryDirectory() as workdir:
        count_syncs(5, True, workdir)  # warm-up (CUDA context, pinned memory)
        bare = count_syncs(steps, False, workdir)
        with_sonify = count_syncs(steps, True, workdir)
    print(f"{steps} training steps on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(table(["variant", "syncs during steps", "syncs at close"], [["bare", *bare], ["Sonifier", *with_sonify]]))


if __name__ == "__main__":
    main()
