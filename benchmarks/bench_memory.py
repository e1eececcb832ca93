"""Peak memory of rendering one hour of audio (60,000 steps x 4 layers).

Runs the render in a fresh interpreter and reads its peak resident set size
(``ru_maxrss``), next to the same interpreter's peak after the imports alone.

    python benchmarks/bench_memory.py [--smoke]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, parse_args, table

CHILD = """
import resource, sys, numpy as np, sonify
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
steps = int(sys.argv[1])
baseline = peak_mb()
writer = sonify.normfile.NormLogWriter(sys.argv[2] + "/hour.norms.csv", ["a", "b", "c", "d"])
norms = np.exp(np.random.default_rng(0).normal(0, 1, (steps, 4))).astype(np.float32)
for start in range(0, steps, 1000):  # as a Sonifier does: a block at a time
    block = norms[start : start + 1000]
    writer.append(np.arange(start + 1, start + 1 + len(block)), block, np.zeros(block.shape, bool))
writer.close()
del norms
after_log = peak_mb()
result = sonify.render(sys.argv[2] + "/hour.norms.csv", sys.argv[2] + "/hour.wav")
print(baseline, after_log, peak_mb(), result.duration)
"""


def main():
    args = parse_args(__doc__)
    steps = 6_000 if args.smoke else 60_000
    with tempfile.TemporaryDirectory() as workdir:
        output = subprocess.run(
            [sys.executable, "-c", CHILD, str(steps), workdir], capture_output=True, text=True, check=True
        )
    baseline, after_log, peak, duration = (float(x) for x in output.stdout.split())
    print(f"render of {steps} steps x 4 layers = {duration / 60:.1f} min of audio (float WAV), {machine()}")
    print(
        table(
            ["", "peak RSS"],
            [
                ["after imports (python, numpy, soundfile, sonify)", f"{baseline:.0f} MB"],
                ["after writing the norm log", f"{after_log:.0f} MB"],
                ["after loading the log and rendering", f"{peak:.0f} MB"],
                ["growth caused by rendering", f"{peak - after_log:.0f} MB"],
            ],
        )
    )


if __name__ == "__main__":
    main()
