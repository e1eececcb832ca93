"""``sonify serve`` in a real browser: latency, and five pages under a writer at 1,000 rows a second.

Debian's chromium (Playwright), playing into the tests' private PulseAudio server, recorded back.

* **Latency**: one page listening; a writer appends a row every 0.5 s (slower than the sound, so each
  row is played at once). From the append (the writer's clock) to the row's first sample arriving in the
  recording; the row is found in the recording sample for sample.
* **Load**: ``sonify serve`` in its own process; five pages listening (four muted, so that the
  recording is the first page's alone); a writer at 1,000 rows/s with a NaN every 500 rows. Reported:
  the server's resident memory at the start and the end, each page's rows received, played and skipped,
  and alarms received and played, and for the first page the played steps found in the recording,
  sample for sample (a dropout would lose or alter some).

    python benchmarks/bench_serve.py [--smoke]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import machine, parse_args, table

import sonify
from helpers.audio import find_frames, frames_of_rows
from helpers.browser import launch_chromium, wait_in_page
from helpers.virtual_audio import SoundServer
from sonify.serve import Server

ROOT = Path(__file__).parents[1]


def sound_server() -> SoundServer:
    """The tests' private PulseAudio server: the one running (PULSE_SERVER set), or a new one of ours."""
    return SoundServer.running_or_new()


def write_rows(log: Path, first: int, count: int, rate: float, appended: dict[int, float], nan_every: int = 0):
    """Append ``count`` rows at ``rate`` rows/s, noting when each was appended (perf_counter)."""
    start = time.perf_counter()
    with open(log, "a") as file:
        for index in range(count):
            step = first + index
            conv = "nan" if nan_every and step % nan_every == 0 else repr(0.05 + 0.001 * (step % 997))
            file.write(f"{step},{conv},{2.0 + 0.0013 * (step % 991)!r}\n")
            file.flush()
            appended[step] = time.perf_counter()
            delay = start + (index + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def latency(browser, recorder: SoundServer, rows: int) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="sonify-serve-bench-"))
    log = folder / "run.norms.csv"
    log.write_text("step,conv,fc\n")
    with Server(log, port=0, notice=lambda text: None) as server:
        page = browser.new_page()
        page.goto(server.url)
        wait_in_page(page, "window.sonify.state.run === 1", timeout=60.0)
        page.click(".sonify-listen")
        wait_in_page(page, "window.sonify.context.state === 'running'", timeout=60.0)
        appended: dict[int, float] = {}
        with recorder.capture() as recording:
            write_rows(log, 1, rows, 2.0, appended)
            wait_in_page(page, f"window.sonify.state.played >= {rows}", timeout=60.0)
            time.sleep(0.6)
        played = page.evaluate("window.sonify.state.playedRows")
        page.close()
    frames = frames_of_rows(played, sonify.SoundSettings())
    found = find_frames(recording.samples, frames)
    delays = []
    for row, frame, place in zip(played, frames, found):
        if place is not None:
            first_sound = place + int(np.flatnonzero(frame)[0])
            delays.append(recording.arrival_time(first_sound) - appended[row["step"]])
    return delays


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(browser, recorder: SoundServer, seconds: float, pages: int = 5, rate: float = 1000.0):
    folder = Path(tempfile.mkdtemp(prefix="sonify-serve-bench-"))
    log = folder / "run.norms.csv"
    log.write_text("step,conv,fc\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", "serve", str(log), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().split(": ", 1)[1].strip()
        opened = []
        for index in range(pages):
            page = browser.new_page()
            page.goto(url)
            wait_in_page(page, "window.sonify.state.run === 1", timeout=60.0)
            if index:
                page.check(".sonify-mute")  # only the first page is heard: the recording is its sound alone
            page.click(".sonify-listen")
            wait_in_page(page, "window.sonify.context.state === 'running'", timeout=60.0)
            opened.append(page)
        memory = [resident_mb(server.pid)]
        rows = int(seconds * rate)
        appended: dict[int, float] = {}
        with recorder.capture() as recording:
            writer = threading.Thread(target=write_rows, args=(log, 1, rows, rate, appended, 500))
            writer.start()
            while writer.is_alive():
                writer.join(timeout=1.0)
                memory.append(resident_mb(server.pid))
            for page in opened:
                wait_in_page(page, f"window.sonify.state.received >= {rows}", timeout=60.0)
                wait_in_page(page, f"window.sonify.state.played + window.sonify.state.skipped >= {rows}", timeout=60.0)
            time.sleep(0.6)
        memory.append(resident_mb(server.pid))
        counts = [page.evaluate("window.sonify.counts()") for page in opened]
        played_rows = opened[0].evaluate("window.sonify.state.playedRows")
        for page in opened:
            page.close()
    finally:
        server.terminate()
        server.communicate(timeout=30)
    frames = frames_of_rows(played_rows, sonify.SoundSettings())
    found = find_frames(recording.samples, frames)
    alarms = rows // 500
    return memory, counts, alarms, sum(place is not None for place in found), len(found)


def main():
    args = parse_args(__doc__)
    latency_rows, seconds, pages = (3, 1.0, 2) if args.smoke else (40, 60.0, 5)
    from playwright.sync_api import sync_playwright

    recorder = sound_server()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, recorder.env)
        delays = latency(browser, recorder, latency_rows)
        memory, counts, alarms, found, played = load(browser, recorder, seconds, pages)
        browser.close()
    print(f"sonify serve in chromium, {machine()}")
    ms = np.array(delays) * 1000
    print(
        table(
            ["latency: row appended -> its first sample recorded", "rows found", "median", "p95", "max"],
            [
                [
                    "one page",
                    f"{len(delays)} of {latency_rows}",
                    f"{np.median(ms):.0f} ms",
                    f"{np.percentile(ms, 95):.0f} ms",
                    f"{ms.max():.0f} ms",
                ]
            ],
        )
    )
    print()
    rows = []
    for index, count in enumerate(counts):
        share = count["skipped"] / max(1, count["received"])
        rows.append(
            [
                f"page {index + 1}" + (" (heard)" if index == 0 else " (muted)"),
                count["received"],
                count["played"],
                f"{count['skipped']} ({share:.0%})",
                f"{count['alarmsPlayed']} of {alarms} rows with NaN",
            ]
        )
    print(f"load: 1,000 rows/s for {seconds:g} s, {pages} pages")
    print(table(["page", "received", "played", "skipped", "alarms played"], rows))
    print(
        f"server resident memory: {memory[0]:.0f} MB at the start, {max(memory):.0f} MB at most, {memory[-1]:.0f} MB "
        f"at the end; page 1's played steps found in the recording sample for sample: {found} of {played}"
    )


if __name__ == "__main__":
    main()
