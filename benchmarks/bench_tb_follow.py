"""What following a long TensorBoard run costs per poll: sonify's incremental reader against a full re-read.

A run folder holds 20,000 steps x 16 per-layer norm scalars (torch's
SummaryWriter). Compared in one process:

* ``EventAccumulator`` (what ``play --follow`` did before): ``Reload()`` and
  then every event of every matching tag, at each poll;
* ``ScalarTail`` (now): the first look reads everything once, every later
  look reads only what was added.

Reported: the first look, a poll with 1 new step (median of several), and
how much the peak memory of a process of its own grew during them.

    python benchmarks/bench_tb_follow.py [--smoke]
"""

from __future__ import annotations

import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, median, parse_args, table

from sonify.importers import DEFAULT_TAG_PATTERN, ScalarTail


def write_run(folder: Path, steps: int, layers: int) -> object:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(folder)
    for step in range(1, steps + 1):
        for layer in range(layers):
            writer.add_scalar(f"grad_norm/layer{layer}", 1.0 + 0.001 * step, step)
    writer.flush()
    return writer


def accumulator_poll(events: object, pattern: re.Pattern) -> int:
    events.Reload()
    count = 0
    for tag in events.Tags().get("scalars", []):
        if pattern.search(tag):
            count += len(events.Scalars(tag))
    return count


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, folder: Path, writer: object, steps: int, layers: int, polls: int) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    pattern = re.compile(DEFAULT_TAG_PATTERN)
    before = peak_mb()  # the process with torch and TensorBoard loaded, before the reader
    start = time.perf_counter()
    if kind == "EventAccumulator (before)":
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        accumulator_poll(events, pattern)
    else:
        tail = ScalarTail(folder)
        sum(1 for _ in tail.read())  # a generator: read as the follower does
    first = time.perf_counter() - start
    times = []
    for poll in range(polls):
        for layer in range(layers):
            writer.add_scalar(f"grad_norm/layer{layer}", 2.0, steps + poll + 1)
        writer.flush()
        start = time.perf_counter()
        if kind == "EventAccumulator (before)":
            accumulator_poll(events, pattern)
        else:
            sum(1 for _ in tail.read())  # a generator: read as the follower does
        times.append(time.perf_counter() - start)
    return [kind, f"{first:.2f} s", f"{median(times) * 1e3:.1f} ms", f"{peak_mb() - before:.0f} MB"]


def child(kind: str, folder: str, steps: int, layers: int, polls: int) -> None:
    """One reader in a process of its own, so that its memory is its own: prints its row as JSON."""
    import json

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(folder)  # a second writer into the run: its new steps are what a poll finds
    print(json.dumps(measure(kind, Path(folder), writer, steps, layers, polls)))
    writer.close()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, folder, steps, layers, polls = sys.argv[2:7]
        child(kind, folder, int(steps), int(layers), int(polls))
        return
    import json
    import subprocess

    args = parse_args(__doc__)
    steps, layers, polls = (200, 4, 3) if args.smoke else (20_000, 16, 10)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "run"
        write_run(folder, steps, layers).close()
        for kind in ("ScalarTail (now)", "EventAccumulator (before)"):
            command = [sys.executable, __file__, "--child", kind, str(folder), str(steps), str(layers), str(polls)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"following a TensorBoard run of {steps:,} steps x {layers} norm tags, {machine()}")
    print(table(["reader", "first look", "a poll with 1 new step (median)", "memory grown by"], rows))


if __name__ == "__main__":
    main()
