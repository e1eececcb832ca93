"""sonify serve: the stream (tokens, resuming, slow pages) and the page, in a real browser with real sound."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import sonify
from helpers import ROOT, decode_cells
from helpers.audio import find_frames, frames_of_rows
from helpers.browser import eval_no_gesture, wait_in_page
from sonify.serve import Server

README_MEDIA = os.environ.get("SONIFY_README_MEDIA")  # set: the page's screenshot goes to docs/serve.png


def write_log(path, rows, layers=("conv", "fc")):
    path.write_text("step," + ",".join(layers) + "\n" + "".join(f"{i},{','.join(map(repr, r))}\n" for i, r in rows))


def get(url, headers=None):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (ConnectionError, urllib.error.URLError):  # refused before the request was all sent: a reset
        return 0, b""


class Events:
    """A page's view of the stream, without a browser: server-sent events read line by line."""

    def __init__(self, server, last_id=None):
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/events?token={server.token}", headers=headers)
        self.response = urllib.request.urlopen(request, timeout=20)
        self.last_id = last_id

    def next(self):
        """The next event: (id, name, data)."""
        fields = {}
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if "event" in fields:
                    self.last_id = int(fields["id"])
                    return int(fields["id"]), fields["event"], json.loads(fields["data"])
                fields = {}
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def steps_until(self, count):
        """Step numbers of "steps" events until ``count`` steps arrived."""
        steps = []
        while len(steps) < count:
            _, name, data = self.next()
            if name == "steps":
                steps += data["steps"]
        return steps

    def close(self):
        self.response.close()


@pytest.fixture
def served(tmp_path):
    """A server following a log in tmp_path (rows appended by the test), on a free port."""
    log = tmp_path / "run.norms.csv"
    write_log(log, [(1, (0.5, 2.0))])
    with Server(log, port=0, notice=lambda text: None) as server:
        wait_for_steps(server, 1)  # row 1 read: a page that connects now gets it as the run so far
        yield server, log


def wait_for_steps(server, count, timeout=60.0):
    """Until the server has read ``count`` rows."""
    deadline = time.monotonic() + timeout
    while server.steps < count:
        assert time.monotonic() < deadline, f"the server read {server.steps} rows, not {count}"
        time.sleep(0.02)


def append(log, rows):
    with open(log, "a") as file:
        file.write("".join(f"{i},{','.join(map(repr, r))}\n" for i, r in rows))
        file.flush()


# -- the stream -------------------------------------------------------------------------------------


def test_the_page_and_the_stream_need_the_token_and_nothing_else_is_served(served):
    server, _ = served
    base = f"http://127.0.0.1:{server.port}"
    assert get(f"{base}/?token={server.token}")[0] == 200
    for path in ("/", "/events", f"/?token={server.token[:-1]}x", "/?token=", "/../../etc/passwd"):
        status, body = get(base + path)
        assert status == 403 and b"token" in body, path
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/web/app.js", "/sonify/serve.py", "//etc/passwd"):
        assert get(f"{base}{path}?token={server.token}")[0] == 404, path  # a fixed table: no path reaches the disk
    status, body = get(f"{base}/app.js")  # the page's own scripts are the package's files, the same for all
    assert status == 200 and b"EventSource" in body
    status, _ = get(f"{base}/?token={server.token}", headers={"X-Huge": "x" * 70_000})
    assert status in (400, 431, 0)  # oversized header: refused by the standard library's parser (0: the
    # connection was reset while the header was still being sent)
    page = get(f"{base}/?token={server.token}")[1]
    assert b'id="player"' in page and b'src="app.js"' in page
    status, player = get(f"{base}/player.js")  # the player, shared with the notebook's
    assert status == 200 and b"Listen" in player and b"export function createPlayer" in player


def test_a_page_gets_the_run_then_each_row_as_a_score(served):
    server, log = served
    events = Events(server)
    _, name, run = events.next()
    assert name == "run" and run["layers"] == ["conv", "fc"] and run["instrument"]["tone_samples"] == 441
    _, name, history = events.next()
    assert name == "history" and history["steps"] == [1]  # the run so far, to draw, not to play
    append(log, [(2, (0.0, 1e9)), (3, (float("nan"), 1.0))])
    steps = []
    while len(steps) < 2:
        _, name, data = events.next()
        if name == "steps":
            steps += list(zip(data["steps"], data["kind"]))
    kinds = sonify.ToneKind
    assert steps == [(2, [kinds.ZERO, kinds.ABOVE]), (3, [kinds.ALARM, kinds.TONE])]
    events.close()


def test_reconnecting_with_last_event_id_loses_and_repeats_no_step(served):
    server, log = served
    events = Events(server)
    append(log, [(step, (0.1 * step, 1.0)) for step in range(2, 40)])
    first = events.steps_until(10)
    events.close()  # the tunnel drops mid-run
    append(log, [(step, (0.1 * step, 1.0)) for step in range(40, 80)])
    again = Events(server, last_id=events.last_id)
    rest = again.steps_until(78 - len(first))
    assert first + rest == list(range(2, 80))  # every step once, in order
    again.close()


def test_a_page_that_never_reads_holds_up_neither_the_reader_nor_the_others(served):
    server, log = served
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(f"GET /events?token={server.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    reader = Events(server)
    wide = [(step, tuple(float(step) + k for k in range(2))) for step in range(2, 20_002)]  # megabytes of events
    append(log, wide)
    assert reader.steps_until(20_000) == list(range(2, 20_002))
    wait_for_steps(server, 20_001)  # the reader went on
    stalled.close()


def test_bad_input_is_one_line_with_exit_2(tmp_path):
    (tmp_path / "sound.wav").write_bytes(b"RIFF")
    (tmp_path / "notes.csv").write_text("hello,world\n1,2\n")
    log = tmp_path / "run.norms.csv"
    write_log(log, [(1, (1.0, 1.0))])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path / "tb") as writer:  # a TensorBoard run without gradient norms
        writer.add_scalar("loss", 1.0, 1)
    cases = [
        ([str(tmp_path / "tb")], "no scalar tag matches"),
        ([str(tmp_path / "sound.wav")], "is an audio file"),
        ([str(tmp_path / "notes.csv")], "is not a norm log"),
        ([str(log), "--port", str(busy.getsockname()[1])], "is in use; give another with --port"),
        ([str(log), "--norm-range", "auto"], "norm_range='auto'"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "sonify.cli", "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    busy.close()


def test_the_command_prints_the_url_and_warns_when_reachable_from_elsewhere(tmp_path):
    log = tmp_path / "run.norms.csv"
    write_log(log, [(1, (1.0, 1.0))])
    server = subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", "serve", str(log), "--port", "0", "--host", "0.0.0.0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("sonify serve: http://0.0.0.0:") and "/?token=" in line
        url = line.split(": ", 1)[1].strip().replace("0.0.0.0", "127.0.0.1")
        assert get(url)[0] == 200
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "reachable from other machines" in stderr


# -- the page, in chromium, with sound --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    path, rows, pause, alarms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), set(map(int, sys.argv[4].split(",")))
    first = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    with open(path, "a") as log:
        for step in range(first, first + rows):
            conv = "nan" if step in alarms else repr(0.05 * step)
            log.write(f"{step},{conv},{2.0 + 0.1 * step!r}\\n"); log.flush()
            time.sleep(pause)
    """
)


def test_the_page_is_silent_until_listen_then_plays_each_row_as_it_is_written(browser, sound_server, served):
    server, log = served
    page = browser.new_page()
    page.goto(server.url)
    # Under the default autoplay policy, and before any gesture (read without granting one):
    deadline = time.monotonic() + 30
    while eval_no_gesture(page, "window.sonify ? window.sonify.state.run : 0") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eval_no_gesture(page, "window.sonify.context.state") == "suspended"
    rows, alarms = 40, {12, 30}
    with sound_server.capture() as silent:
        append(log, [(2, (0.1, 2.2))])
        deadline = time.monotonic() + 30
        while eval_no_gesture(page, "window.sonify.state.received") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not np.any(silent.samples), "the page made sound before Listen"
    assert eval_no_gesture(page, "window.sonify.state.played") == 0
    write_log(log, [])  # the log started over by a new run (its header only, so far): a new run for the page
    wait_in_page(page, "window.sonify.state.run === 2")
    page.click(".sonify-listen")
    wait_in_page(page, "window.sonify.context.state === 'running'")
    with sound_server.capture() as recording:
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, str(log), str(rows), "0.1", ",".join(map(str, alarms))], timeout=120
        )
        assert writer.returncode == 0
        wait_in_page(page, f"window.sonify.state.received >= {rows}")
        wait_in_page(page, f"window.sonify.state.played + window.sonify.state.skipped >= {rows}")
        time.sleep(0.6)  # the last scheduled steps play out (the page's lead plus Chromium's output buffer)
    counts = page.evaluate("window.sonify.counts()")
    assert counts["receivedSteps"][-rows:] == list(range(1, rows + 1))
    # Slower than the sound: every row is played, but for two that a loaded machine delivers at once while
    # sound is still waiting (the page then keeps the newest, as play --follow does).
    assert counts["skipped"] <= rows // 10 and counts["alarmsPlayed"] == len(alarms)
    played = counts["heard"]  # all of run 2's: nothing was played before Listen
    assert played == sorted(played) and len(played) >= 0.9 * rows
    played_rows = page.evaluate("window.sonify.state.playedRows")
    assert [row["step"] for row in played_rows] == played and played[-1] == rows  # up to the last row
    found = find_frames(recording.samples, frames_of_rows(played_rows, sonify.SoundSettings()))
    heard = [row["step"] for row, place in zip(played_rows, found) if place is not None]
    print(f"heard {len(heard)} of {rows} rows in the recording")
    assert len(heard) >= 0.9 * rows, f"heard {len(heard)} of {rows} rows (a dropout may lose some, never order)"
    carried = {row["step"] for row, place in zip(played_rows, found) if place is not None and 2 in row["kind"]}
    assert len(carried) == len(alarms)  # every alarm heard (in its own step, or carried by the next one played)
    places = [place for place in found if place is not None]
    assert places == sorted(places)
    if README_MEDIA:
        page.set_viewport_size({"width": 1000, "height": 500})
        page.screenshot(path=str(Path(README_MEDIA) / "serve.png"))
    page.close()


def test_the_pages_synthesizer_renders_exactly_what_sonify_render_does(browser, served, tmp_path):
    server, _ = served
    rng = np.random.default_rng(3)
    norms = 10 ** rng.uniform(-3, 3, (40, 2))
    norms[[5, 6], 0], norms[8, 1], norms[12, 0], norms[20, 1] = 0.0, 1e20, np.nan, 1e-9
    norms[30, 1] *= 1e3  # a spike
    missing = np.zeros(norms.shape, bool)
    missing[25, 0] = True
    norms[25, 0] = np.nan
    log = sonify.NormLog.from_array(norms, ["conv", "fc"])
    log.missing[:] = missing
    sonify.render(log, tmp_path / "python.wav")
    expected, _ = sonify_read(tmp_path / "python.wav")
    score = sonify.SoundSettings().sounder(2).score(norms, missing)
    data = score.as_dict()
    rows = [{"frequency": f, "gain": g, "kind": k} for f, g, k in zip(data["frequency"], data["gain"], data["kind"])]
    page = browser.new_page()
    page.goto(server.url)
    wait_in_page(page, "window.sonify.state.instrument !== null")
    channels = page.evaluate("async (rows) => window.sonify.renderOffline(window.sonify.state.instrument, rows)", rows)
    page.close()
    rendered = np.array(channels[0], dtype=np.float32)
    assert rendered.shape == expected.shape
    assert np.max(np.abs(rendered - expected)) < 1e-4  # the same samples, so the same onsets to the sample
    synth = sonify.SoundSettings().synthesizer(2)
    page_states, page_freqs = decode_cells(rendered, synth)
    python_states, python_freqs = decode_cells(expected, synth)
    assert page_states.tolist() == python_states.tolist()  # every state's cue in the same cells
    assert {"ZERO", "ABOVE", "BELOW", "ALARM", "REST", "ACCENT", "TONE"} <= set(page_states.ravel())
    pitched = ~np.isnan(python_freqs)
    cents = 1200 * np.abs(np.log2(page_freqs[pitched] / python_freqs[pitched]))
    assert cents.max() < 1.0


def sonify_read(path):
    import soundfile

    return soundfile.read(path, dtype="float32")


def test_a_writer_faster_than_the_sound_is_heard_newest_first_with_every_alarm(browser, sound_server, served):
    server, log = served
    page = browser.new_page()
    page.goto(server.url)
    wait_in_page(page, "window.sonify.state.run === 1")
    page.click(".sonify-listen")
    wait_in_page(page, "window.sonify.context.state === 'running'")
    rows, alarms = 1500, {300, 301, 900, 1400}
    before = page.evaluate("window.sonify.counts()")
    writer = subprocess.run(
        [sys.executable, "-c", WRITER, str(log), str(rows), "0.001", ",".join(map(str, alarms)), "2"], timeout=120
    )
    assert writer.returncode == 0
    wait_in_page(page, f"window.sonify.state.received >= {before['received'] + rows}")
    wait_in_page(page, f"window.sonify.state.played + window.sonify.state.skipped >= {before['received'] + rows}")
    counts = page.evaluate("window.sonify.counts()")
    played, skipped = counts["played"] - before["played"], counts["skipped"] - before["skipped"]
    assert played + skipped == rows and skipped > 0.5 * rows  # 1,000 rows a second: most are skipped ...
    assert counts["alarmsPlayed"] - before["alarmsPlayed"] >= len(alarms) - 1  # ... never an alarm (300 and 301
    # may be carried by one played step)
    heard = counts["heard"][-played:]
    assert heard == sorted(heard) and heard[-1] == rows + 1  # in order, up to the newest
    assert "skipped" in counts["status"]
    page.close()


def test_a_folder_of_runs_is_followed_newest_first_and_a_new_run_is_picked_up(tmp_path):
    older, newer = tmp_path / "a.norms.csv", tmp_path / "b.norms.csv"
    write_log(older, [(1, (1.0, 1.0))])
    os.utime(older, (time.time() - 60, time.time() - 60))
    write_log(newer, [(1, (2.0, 2.0)), (2, (3.0, 3.0))])
    with Server(tmp_path, port=0, notice=lambda text: None) as server:
        wait_for_steps(server, 2)
        events = Events(server)
        _, name, run = events.next()
        assert name == "run" and run["runs"] == ["a.norms.csv", "b.norms.csv"] and run["current"] == "b.norms.csv"
        assert events.next()[2]["steps"] == [1, 2]  # its rows so far, to draw
        write_log(tmp_path / "c.norms.csv", [(1, (5.0, 5.0))])  # a new run starts writing in the folder
        seen = {}
        while "run" not in seen or seen["run"]["run"] < 2:
            _, name, data = events.next()
            seen[name] = data
        assert seen["run"]["current"] == "c.norms.csv" and "c.norms.csv" in seen["run"]["runs"]
        assert "a new run" in seen["status"]["text"]
        events.close()


def test_a_page_whose_stream_drops_reconnects_and_resumes_with_no_step_lost_or_repeated(browser, served):
    server, log = served
    page = browser.new_page()
    page.goto(server.url)
    wait_in_page(page, "window.sonify.state.run === 1")
    append(log, [(step, (0.1 * step, 1.0)) for step in range(2, 30)])
    wait_in_page(page, "window.sonify.state.received >= 28")
    server.drop_pages()  # the tunnel drops
    wait_in_page(page, "window.sonify.state.disconnects >= 1")
    append(log, [(step, (0.1 * step, 1.0)) for step in range(30, 60)])  # rows written while it is away
    wait_in_page(page, "window.sonify.state.received >= 58")
    append(log, [(60, (6.0, 1.0))])
    wait_in_page(page, "window.sonify.state.received >= 59")
    counts = page.evaluate("window.sonify.counts()")
    assert counts["receivedSteps"] == list(range(2, 61))  # every step once, in order, across the drop
    assert "reconnecting" not in counts["status"]
    page.close()
