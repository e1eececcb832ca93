"""Live sound: what it costs training, and how close to now it plays.

1. **Slowdown**: the reference CNN (LeNet) at batch size 10, steps timed with
   a ``Sonifier`` writing files (``live off``) and with ``live=True`` as well
   (``live on``), interleaved round by round in one process; the ratio is the
   median over rounds of (live on / live off). ``bare`` (no sonify) is shown
   for scale.
2. **Underruns and latency**: training runs for 60 s with live sound on (both
   cores busy with torch) while the virtual card's monitor is recorded.
   Underruns are counted twice: as PortAudio flags them, and by finding every
   played step's samples in the recording (a step whose samples arrived
   altered counts as a glitch). Latency is from ``optimizer.step()`` (the
   moment the step was recorded) to the arrival of the step's first sample
   in the recording.

Needs a sound card: it uses ``$PULSE_SERVER`` when set, else starts a private
virtual one (``tests/helpers/virtual_audio.py``, packages from ``scripts/setup.sh``).

    python benchmarks/bench_live.py [--smoke]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import interleaved, machine, parse_args, ratio_rows, table

import sonify
from helpers.virtual_audio import SoundServer
from sonify.experiment import REFERENCE_LAYERS, LeNet


def make_run(batch_size=10):
    torch.manual_seed(0)
    model = LeNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    inputs = torch.randn(batch_size, 1, 28, 28)
    targets = torch.randint(0, 10, (batch_size,))

    def step():
        optimizer.zero_grad()
        F.nll_loss(model(inputs), targets).backward()
        optimizer.step()

    return model, optimizer, step


def reference_sonifier(model, optimizer, out, live):
    """A Sonifier on the reference CNN's four weights, as ``sonify train`` attaches it."""
    return sonify.Sonifier(
        model, optimizer, overwrite=True, out=out, layers=list(REFERENCE_LAYERS), params="weight", live=live
    )


def timed_steps(variant, steps, workdir):
    model, optimizer, step = make_run()
    son = None
    if variant != "bare":
        son = reference_sonifier(model, optimizer, Path(workdir) / "bench.wav", live=variant == "live on")
    for _ in range(30):  # warm-up: the stream's start-up burst of callbacks is over before timing
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    if son is not None:
        son.close()
    return elapsed / steps


def slowdown(rounds, steps, workdir):
    times = interleaved(["bare", "live off", "live on"], rounds, lambda variant: timed_steps(variant, steps, workdir))
    if os.environ.get("SONIFY_BENCH_VERBOSE"):
        for variant, values in times.items():
            print(variant, " ".join(f"{t * 1e3:.2f}" for t in values))
    return ratio_rows(times, "live off")


def find_frames(captured, frames, atol=1e-5):
    """Start of each frame in the capture (None where its samples arrived altered)."""
    starts, position = [], 0
    for frame in frames:
        lead = int(np.flatnonzero(frame)[0])
        rest = np.flatnonzero(captured[position:])
        if not rest.size:
            starts.append(None)
            continue
        start = position + int(rest[0]) - lead
        window = captured[start : start + len(frame)]
        if len(window) == len(frame) and np.allclose(window, frame, rtol=0, atol=atol):
            starts.append(start)
            position = start + len(frame)
        else:
            starts.append(None)
            position = start + 1
    return starts


def live_session(server, seconds, workdir):
    model, optimizer, step = make_run()
    son = reference_sonifier(model, optimizer, Path(workdir) / "live.wav", live=True)
    player = son._live.player  # the LivePlayer behind the Sonifier's live feed
    player.timeline = []
    frames = []
    write = player.stream.write

    def keep_copy(samples, block=True):  # instrumentation: remember each step played (not the end padding)
        if samples.any():
            frames.append(samples.copy())
        return write(samples, block=block)

    player.stream.write = keep_copy
    with server.capture() as recording:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            step()
        son.close()
    report = son.live_report
    starts = find_frames(recording.samples, frames)
    latencies = [
        recording.arrival_time(start) - when
        for start, (_, _, when) in zip(starts, player.timeline)
        if start is not None
    ]
    glitches = sum(start is None for start in starts)
    return report, glitches, np.array(latencies), son.stats.steps


def sound_server() -> SoundServer:
    """The tests' private PulseAudio server: the one running (PULSE_SERVER set), or a new one of ours."""
    return SoundServer.running_or_new()


def main():
    args = parse_args(__doc__)
    rounds, steps, seconds = (2, 20, 3) if args.smoke else (31, 200, 60)
    server = sound_server()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            rows = slowdown(rounds, steps, workdir)
            report, glitches, latencies, trained = live_session(server, seconds, workdir)
    finally:
        if server.owned:
            server.stop()
    print(f"live sound, LeNet batch 10, torch {torch.__version__}, {machine()}")
    print(f"\n1. training step time, {rounds} interleaved rounds x {steps} steps")
    print(table(["variant", "median step", "ratio vs live off (median of rounds)", "middle half of rounds"], rows))
    print(f"\n2. {seconds} s of training with live sound ({trained} steps trained)")
    print(
        table(
            ["played", "skipped", "underruns (PortAudio)", "glitches (capture)", "latency median", "p95", "max"],
            [
                [
                    report.played,
                    report.skipped,
                    report.underruns,
                    glitches,
                    f"{np.median(latencies) * 1e3:.0f} ms",
                    f"{np.percentile(latencies, 95) * 1e3:.0f} ms",
                    f"{latencies.max() * 1e3:.0f} ms",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
