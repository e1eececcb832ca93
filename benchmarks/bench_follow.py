"""Following a log written by another process: latency, and a writer far faster than the sound.

1. Latency from a row being appended by a writer process to its first sample
   arriving in the capture of the virtual sound card, for a local file
   (``sonify play --follow FILE``) and for a pipe (``sonify play --follow -``).
   The writer appends a row every 0.25 s (slower than the sound, so every row
   plays); append times and capture times are both CLOCK_MONOTONIC.
2. A writer at 1,000 rows/s for 60 s, with a NaN every 5,000 rows: the
   follower's peak memory (at 10 s and at the end: bounded means equal), the
   share of rows skipped to keep up, underruns, and the NaN alarms heard.

Needs the private PulseAudio server of the tests (``tests/helpers/virtual_audio.py``).

    python benchmarks/bench_follow.py [--smoke]
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import machine, parse_args, table
from bench_live import find_frames, sound_server

import sonify
from helpers.virtual_audio import SoundServer
from sonify.synthesize import ALARM_PARTIALS_HZ

ROOT = Path(__file__).resolve().parents[1]
SOUND = sonify.SoundSettings()


def start_follower(source: str, **pipes) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", "play", "--follow", source],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **pipes,
    )


def rows(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.exp(rng.normal(0, 0.3, (count, 4)))


def expected(norms: np.ndarray) -> list[np.ndarray]:
    sounder = SOUND.sounder(norms.shape[1])
    return [sounder.sound(row[None], np.zeros((1, norms.shape[1]), bool)) for row in norms]


def latency(server: SoundServer, mode: str, count: int, workdir: Path) -> np.ndarray:
    norms = rows(count)
    lines = [f"{i + 1}," + ",".join(repr(float(v)) for v in row) + "\n" for i, row in enumerate(norms)]
    appended = []
    log = workdir / f"latency-{mode}.norms.csv"
    with server.capture() as recording:
        if mode == "file":
            out = open(log, "w")  # noqa: SIM115
            follower = start_follower(str(log))
        else:
            follower = start_follower("-", stdin=subprocess.PIPE)
            out = follower.stdin
        out.write("step,a,b,c,d\n")
        out.flush()
        time.sleep(2.0)  # the follower is up and its sound card open
        for line in lines:
            out.write(line)
            out.flush()
            appended.append(time.monotonic())
            time.sleep(0.25)
        time.sleep(1.0)
        if mode == "file":
            out.close()
            follower.send_signal(signal.SIGINT)
        else:
            out.close()
        follower.wait(timeout=60)
    starts = find_frames(recording.samples, expected(norms))
    return np.array([recording.arrival_time(s) - t for s, t in zip(starts, appended) if s is not None])


WRITER = """
import sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with open(path, "w") as log:
    log.write("step,a,b,c,d\\n"); log.flush(); time.sleep(2.0)
    start, step = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        chunk = []
        while step < due:
            step += 1
            a = "nan" if step % 5000 == 0 else "0.5"
            chunk.append(f"{step},{a},1.0,2.0,4.0\\n")
        log.write("".join(chunk)); log.flush()
        time.sleep(0.001)
print(step)
"""


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1))


def fast_writer(server: SoundServer, seconds: float, workdir: Path) -> dict:
    log = workdir / "fast.norms.csv"
    with server.capture() as recording:
        follower = start_follower(str(log))
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log), "1000", str(seconds)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(2.0 + min(10.0, seconds / 2))
        early = peak_rss_kb(follower.pid)
        written = int(writer.communicate(timeout=seconds + 60)[0])
        time.sleep(1.0)
        late = peak_rss_kb(follower.pid)
        follower.send_signal(signal.SIGINT)
        stdout, _ = follower.communicate(timeout=60)
    summary = re.search(r"(\d+) steps, (\d+) played, (\d+) skipped .*?, (\d+) underruns", stdout)
    steps, played, skipped, underruns = (int(x) for x in summary.groups())
    synth = SOUND.synthesizer(4)
    voiced = np.flatnonzero(recording.samples)
    heard = recording.samples[voiced[0] :]
    from helpers import spectral_peaks

    alarms, last = 0, -synth.step_samples
    for start in range(0, len(heard) - synth.tone_samples, synth.tone_samples // 4):  # any alignment
        slot = heard[start : start + synth.tone_samples]
        peaks = spectral_peaks(slot, synth.sample_rate, threshold=0.3)
        if len(peaks) == 3 and all(abs(p - f) < 20 for p, f in zip(peaks, ALARM_PARTIALS_HZ)):
            alarms += start - last >= synth.step_samples  # one alarm, however many windows see it
            last = start
    return {
        "written": written,
        "steps": steps,
        "played": played,
        "skipped": skipped,
        "underruns": underruns,
        "nans": written // 5000,
        "alarms": alarms,
        "rss early": early,
        "rss late": late,
    }


def _spread(latencies: np.ndarray) -> list[str]:
    """Median, p95 and max in ms, or a plain 'too few samples' where a quantile would mean nothing."""
    if len(latencies) < 2:
        return ["too few rows heard"] * 3
    return [f"{np.percentile(latencies, q) * 1e3:.0f} ms" for q in (50, 95)] + [f"{latencies.max() * 1e3:.0f} ms"]


def main() -> None:
    args = parse_args(__doc__)
    count, seconds = (6, 6.0) if args.smoke else (60, 60.0)
    server = sound_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            results = {mode: latency(server, mode, count, workdir) for mode in ("file", "pipe")}
            fast = fast_writer(server, seconds, workdir)
    finally:
        if server.owned:
            server.stop()
    print(f"sonify play --follow, {machine()}")
    print(f"\n1. latency, row appended by another process -> its first sample in the capture ({count} rows)")
    print(
        table(
            ["source", "rows heard", "median", "p95", "max"],
            [[mode, f"{len(lat)} of {count}", *_spread(lat)] for mode, lat in results.items()],
        )
    )
    print(f"\n2. a writer at 1,000 rows/s for {seconds:g} s (a NaN every 5,000 rows)")
    print(
        table(
            ["rows written", "rows read", "played", "skipped", "underruns", "NaN rows", "alarms heard", "peak RSS"],
            [
                [
                    fast["written"],
                    fast["steps"],
                    fast["played"],
                    f"{fast['skipped']} ({fast['skipped'] / max(1, fast['steps']):.1%})",
                    fast["underruns"],
                    fast["nans"],
                    fast["alarms"],
                    f"{fast['rss early'] / 1024:.0f} MB early, {fast['rss late'] / 1024:.0f} MB at the end",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
