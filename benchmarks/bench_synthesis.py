"""Synthesis and rendering speed: 10,000 steps x 4 layers (600 s of audio).

* ``2019 per-tone loop``: one ``np.sin`` call per tone, phase restarted at
  every tone, no fades, pieces concatenated (the old script's way);
* ``Synthesizer, 1 thread``: sonify's block synthesis, phase-continuous with
  raised-cosine fades, in the calling thread;
* ``render pipeline, no file``: the same blocks filled on the render thread
  pool, as ``sonify.render`` does;
* ``soundfile alone``: writing the finished samples to a float WAV, block by
  block (the floor for rendering);
* ``sonify.render``: norm array -> WAV file, everything included;
* ``Sounder, ...``: score and samples in the calling thread (the one sound path, as live sound uses
  it), for the calm run and for runs whose every cell is off the map (the glide) or exactly zero (the
  puff): the cues a diverging run is made of.

Each is timed 5 times in one process; the table gives the best time
(least disturbed by other load), x realtime, and the render/soundfile ratio.

    python benchmarks/bench_synthesis.py [--smoke]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, parse_args, table

from sonify import SoundSettings, render
from sonify.rendering import BLOCK_STEPS


def per_tone_loop(freqs, rate=44100, tone=441, gap=882):
    t = np.arange(tone) / rate
    pieces = []
    for row in freqs:
        for f in row:
            pieces.append((0.1 * np.sin(2 * math.pi * f * t)).astype(np.float32))
        pieces.append(np.zeros(gap, np.float32))
    return np.concatenate(pieces)


def synth_one_thread(freqs, synth):
    buffer = np.empty(BLOCK_STEPS * synth.step_samples, np.float32)
    for start in range(0, len(freqs), BLOCK_STEPS):
        synth.fill(synth.plan(freqs[start : start + BLOCK_STEPS]), buffer)


def synth_pool(freqs, synth, workers=2):
    buffers = [np.empty(BLOCK_STEPS * synth.step_samples, np.float32) for _ in range(workers + 1)]
    pending = deque()
    with ThreadPoolExecutor(workers) as pool:
        for index, start in enumerate(range(0, len(freqs), BLOCK_STEPS)):
            plan = synth.plan(freqs[start : start + BLOCK_STEPS])
            pending.append(pool.submit(synth.fill, plan, buffers[index % len(buffers)]))
            if len(pending) > workers:
                pending.popleft().result()
        while pending:
            pending.popleft().result()


def sounder_one_thread(norms, sound):
    sounder = sound.sounder(norms.shape[1])
    missing = np.zeros(norms.shape, bool)
    for start in range(0, len(norms), BLOCK_STEPS):
        block = slice(start, start + BLOCK_STEPS)
        sounder.samples(sounder.score(norms[block], missing[block]))


def write_only(samples, path, block):
    with soundfile.SoundFile(path, "w", 44100, 1, subtype="FLOAT") as file:
        for start in range(0, len(samples), block):
            file.write(samples[start : start + block])


def best_of(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    args = parse_args(__doc__)
    steps, repeats = (1000, 1) if args.smoke else (10_000, 5)
    rng = np.random.default_rng(0)
    norms = np.exp(np.cumsum(rng.normal(0, 0.05, (steps, 4)), axis=0))
    sound = SoundSettings()
    freqs = sound.pitch_map()(norms)
    synth = sound.synthesizer(4)
    audio_seconds = steps * synth.step_duration
    samples = per_tone_loop(freqs)
    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir)
        timings = {
            "2019 per-tone loop": best_of(lambda: per_tone_loop(freqs), repeats),
            "Synthesizer, 1 thread": best_of(lambda: synth_one_thread(freqs, sound.synthesizer(4)), repeats),
            "render pipeline, no file": best_of(lambda: synth_pool(freqs, sound.synthesizer(4)), repeats),
            "soundfile alone": best_of(
                lambda: write_only(samples, out / "floor.wav", BLOCK_STEPS * synth.step_samples), repeats
            ),
            "sonify.render": best_of(lambda: render(norms, out / "render.wav", sound=sound, overwrite=True), repeats),
            "Sounder, calm run": best_of(lambda: sounder_one_thread(norms, sound), repeats),
            "Sounder, every cell above the map": best_of(lambda: sounder_one_thread(norms * 1e9, sound), repeats),
            "Sounder, every cell zero": best_of(lambda: sounder_one_thread(norms * 0.0, sound), repeats),
        }
    rows = [[name, f"{seconds * 1e3:.1f} ms", f"{audio_seconds / seconds:,.0f}x"] for name, seconds in timings.items()]
    print(f"synthesis of {steps} steps x 4 layers = {audio_seconds:.0f} s of audio, best of {repeats}, {machine()}")
    print(table(["stage", "time", "x realtime"], rows))
    print(
        f"per-tone loop / Synthesizer (1 thread): {timings['2019 per-tone loop'] / timings['Synthesizer, 1 thread']:.1f}x faster"
    )
    print(f"sonify.render / soundfile alone: {timings['sonify.render'] / timings['soundfile alone']:.2f}")
    calm = timings["Sounder, calm run"]
    print(
        f"Sounder, every cell above the map / calm run: {timings['Sounder, every cell above the map'] / calm:.2f}; "
        f"every cell zero / calm run: {timings['Sounder, every cell zero'] / calm:.2f}"
    )


if __name__ == "__main__":
    main()
