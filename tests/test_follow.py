"""Following a log that another process writes: real processes, heard through the private sound server."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import sonify
from helpers import ROOT, frames_played, run_sonify, start_sonify

SOUND = sonify.SoundSettings()

WRITER = textwrap.dedent(
    """
    import math, os, sys, time
    path, rows, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    time.sleep(1.0)  # the follower starts first and waits for the file
    with open(path, "w") as log:
        log.write("step,conv,fc\\n"); log.flush(); time.sleep(1.0)  # the player opens the sound card
        for step in range(1, rows + 1):
            conv, fc = 0.5 + 0.01 * step, "nan" if step == 12 else str(2.0 + 0.02 * step)
            line = f"{step},{conv},{fc}\\n"
            if step == 7:  # a half-written line: the rest comes later
                log.write(line[:5]); log.flush(); time.sleep(0.4)
                line = line[5:]
            log.write(line); log.flush()
            time.sleep(pause)
    """
)


def stop(follower):
    """Ctrl-C, the usual way to stop following; returns what it printed."""
    try:
        follower.send_signal(signal.SIGINT)
        return follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()


def expected_frames(norms, missing=None):
    """What the live player must have played for these rows, one step at a time."""
    sounder = SOUND.sounder(norms.shape[1])
    missing = np.zeros(norms.shape, bool) if missing is None else missing
    frames = []
    for row, gaps in zip(norms, missing):
        frames.append(sounder.sound(row[None], gaps[None]))
    return frames


def follow_stdin(*options):
    """``sonify play --follow -``, reading rows from the pipe it is given."""
    return subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", "play", "--follow", "-", *options],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows_of(count):
    steps = np.arange(1, count + 1)
    norms = np.stack([0.5 + 0.01 * steps, 2.0 + 0.02 * steps], 1)
    norms[11, 1] = np.nan
    return norms


def test_a_log_written_by_another_process_is_heard_row_by_row(sound_server, tmp_path):
    log = tmp_path / "run.norms.csv"
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(log), "--wait", "30")
        writer = subprocess.run([sys.executable, "-c", WRITER, str(log), "20", "0.1"], timeout=60)
        assert writer.returncode == 0
        time.sleep(1.0)  # the last rows play out
        stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert f"sonify: waiting for {log} to appear" in stderr
    assert "followed" in stdout and "20 steps, 20 played, 0 skipped" in stdout
    # Every row, in order, sample for sample; the NaN of row 12 as the alarm; the torn row 7 once, whole.
    frames_played(recording.samples, expected_frames(rows_of(20)))


def test_standard_input_from_a_pipe(sound_server, tmp_path):
    norms = rows_of(15)
    with sound_server.capture() as recording:
        follower = follow_stdin()
        follower.stdin.write("step,conv,fc\n")
        follower.stdin.flush()
        time.sleep(1.5)  # as `ssh ... tail -F` delivers it: the header, then rows as they are written
        for step, (conv, fc) in enumerate(norms, start=1):
            follower.stdin.write(f"{step},{float(conv)!r},{float(fc)!r}\n")
            follower.stdin.flush()
            time.sleep(0.1)
        follower.stdin.write("16,0.5")  # a last line cut off by the end of the pipe: never played
        follower.stdin.close()
        follower.wait(timeout=60)
        stdout, stderr = follower.stdout.read(), follower.stderr.read()
    assert follower.returncode == 0, stderr
    assert "followed standard input: 15 steps, 15 played, 0 skipped" in stdout
    frames_played(recording.samples, expected_frames(norms))


def test_a_line_over_the_csv_field_limit_is_skipped_and_following_goes_on(sound_server, tmp_path):
    norms = rows_of(12)[:6]
    lines = ["step,conv,fc"] + [f"{step},{float(a)!r},{float(b)!r}" for step, (a, b) in enumerate(norms, start=1)]
    lines.insert(4, '3,"' + "7" * 200_000 + ",1.0")  # garbage between rows 3 and 4 (a stray quote, a huge field)
    with sound_server.capture():
        follower = subprocess.run(
            [sys.executable, "-m", "sonify.cli", "play", "--follow", "-"],
            cwd=ROOT,
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert follower.returncode == 0, follower.stderr
    assert "6 steps" in follower.stdout and "1 unreadable lines ignored" in follower.stdout
    assert "Traceback" not in follower.stderr


def test_a_replaced_log_starts_a_new_run(sound_server, tmp_path):
    log = tmp_path / "run.norms.csv"
    log.write_text("step,a,b\n" + "".join(f"{i},0.5,1.0\n" for i in range(1, 6)))
    follower = start_sonify("play", "--follow", str(log))
    time.sleep(3.0)
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("step,a,b,c\n" + "".join(f"{i},0.1,0.2,0.3\n" for i in range(1, 5)))
    os.replace(fresh, log)  # a new run under the same name
    time.sleep(2.0)
    with open(log, "r+") as file:  # and then truncated and rewritten in place
        file.truncate(0)
        file.write("step,x\n1,0.25\n2,0.5\n")
    time.sleep(2.0)
    stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert stderr.count("was truncated or replaced: a new run; starting over") == 2
    assert "11 steps in 3 runs" in stdout


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ("--wait", "0.5"), "did not appear within 0.5 s; check the path, or give a longer --wait"),
        (lambda path: path.write_bytes(b"\x00\x01binary\n"), (), "expected a norm log header with a step column"),
        (lambda path: path.mkdir(), ("--wait", "0.5"), "no scalar tag matching"),
        (lambda path: path.write_text("step,a\n1,2\n"), ("--norm-range", "auto"), "norm_range='auto'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, make, args, message, sound_server):
    path = tmp_path / "run.norms.csv"
    if make is not None:
        make(path)
    result = run_sonify("play", "--follow", str(path), *args, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sonify: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_missing_sound_card_is_said_at_once_not_when_the_first_row_arrives(tmp_path, sound_server):
    result = run_sonify("play", "--follow", str(tmp_path / "not-yet.norms.csv"), "--device", "nonexistent", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no output device matches 'nonexistent'" in result.stderr and "waiting for" not in result.stderr


def test_a_fifo_is_followed_like_a_pipe(sound_server, tmp_path):
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    norms = rows_of(12)[:8]
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(fifo))
        with open(fifo, "w") as writer:  # blocks until the follower opens it: `<(ssh box tail -f ...)`
            writer.write("step,conv,fc\n")
            writer.flush()
            time.sleep(1.0)  # the header first, then rows one by one as a remote tail -f delivers them
            for step, (conv, fc) in enumerate(norms, start=1):
                writer.write(f"{step},{float(conv)!r},{float(fc)!r}\n")
                writer.flush()
                time.sleep(0.15)
        stdout, stderr = follower.communicate(timeout=60)  # the writer closed: the input ended
    assert follower.returncode == 0, stderr
    assert "8 steps, 8 played, 0 skipped" in stdout and "Illegal seek" not in stderr
    frames_played(recording.samples, expected_frames(norms))


def wait_for_sound(recording, after: int = 0, timeout: float = 60) -> int:
    """Wait until the capture holds sound after sample ``after``; returns the capture's length then."""
    deadline = time.monotonic() + timeout
    while not np.any(recording.samples[after:]):
        assert time.monotonic() < deadline, "nothing was heard"
        time.sleep(0.05)
    return len(recording.samples)


def sounds(samples: np.ndarray, silence: int = 4410) -> int:
    """Separate sounds in a capture: runs of samples with more than ``silence`` zeros between them."""
    voiced = np.flatnonzero(samples)
    return 0 if not voiced.size else 1 + int(np.sum(np.diff(voiced) > silence))


def test_a_log_rewritten_in_place_by_a_longer_run_is_a_new_run(sound_server, tmp_path):
    log = tmp_path / "run.norms.csv"
    log.write_text("step,a,b\n" + "".join(f"{i},0.5,1.0\n" for i in range(1, 4)))
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(log))
        heard = wait_for_sound(recording)  # the first run is being followed
        time.sleep(0.3)  # its sound has ended
        # `cp longer.csv run.norms.csv` seen mid-copy need never show a shorter file: written over in place
        with open(log, "r+") as file:
            file.write("step,a,b\n" + "".join(f"{i},0.25,2.0\n" for i in range(1, 9)))
        wait_for_sound(recording, after=heard + 4410)  # the new run is heard
        stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert "was truncated or replaced: a new run; starting over" in stderr
    assert "11 steps in 2 runs" in stdout and "unreadable" not in stdout


def test_wait_needs_follow(tmp_path):
    result = run_sonify("play", str(tmp_path / "x.norms.csv"), "--wait", "3")
    assert result.returncode == 1 and "--wait only applies to --follow" in result.stderr


def test_render_and_compare_of_a_run_still_being_written(tmp_path):
    import torch

    from helpers import make_model, train

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "live.wav", flush_interval=0.05)
    train(model, optimizer, 6)
    time.sleep(0.4)  # flushed: 6 rows on disk, the run not closed
    with open(son.log_path, "a") as log:
        log.write("7,0.12")  # what a reader may meet: a row cut short that still parses
    rendered = run_sonify("render", str(son.log_path), "-o", str(tmp_path / "so-far.wav"), "--no-progress")
    assert rendered.returncode == 0, rendered.stderr
    assert "still being written" in rendered.stdout and "steps: 6" in rendered.stdout
    compared = run_sonify("compare", str(son.log_path), "-o", str(tmp_path / "cmp"), "--no-figure")
    assert compared.returncode == 0 and "its 6 complete steps so far are compared" in compared.stderr
    son.close()


TRAINING = textwrap.dedent(
    """
    import sys, time, torch
    import sonify
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with sonify.Sonifier(model, optimizer, out=sys.argv[1], audio=False, flush_interval=0.05):  # headless: log only
        time.sleep(1.0)
        for _ in range(30):
            optimizer.zero_grad()
            model(torch.randn(16, 4)).square().mean().backward()
            optimizer.step()
            time.sleep(0.05)
    """
)


def test_the_readme_recipe_a_headless_run_followed_from_another_process(sound_server, tmp_path):
    log = tmp_path / "remote.norms.csv"
    follower = start_sonify("play", "--follow", str(log))
    trained = subprocess.run([sys.executable, "-c", TRAINING, str(tmp_path / "remote.wav")], cwd=ROOT, timeout=120)
    assert trained.returncode == 0 and not (tmp_path / "remote.wav").exists()
    time.sleep(1.0)
    stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert len(sonify.load_norms(log)) == 30 and "30 steps" in stdout


TENSORBOARD_WRITER = textwrap.dedent(
    """
    import sys, time
    from torch.utils.tensorboard import SummaryWriter
    time.sleep(1.0)
    with SummaryWriter(sys.argv[1]) as writer:
        for step in range(1, 13):
            conv, fc = 0.5 + 0.01 * step, float("nan") if step == 8 else 2.0 + 0.02 * step
            writer.add_scalar("grad_2.0_norm/conv.weight", conv, step)  # what Lightning's grad_norm logs
            writer.add_scalar("grad_2.0_norm/fc.weight", fc, step)
            writer.add_scalar("train_loss", 1.0 / step, step)
            writer.flush()
            time.sleep(0.5)
    """
)


def test_a_tensorboard_run_written_elsewhere_is_heard_live(sound_server, tmp_path):
    runs = tmp_path / "runs" / "exp"
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(runs))
        writer = subprocess.run([sys.executable, "-c", TENSORBOARD_WRITER, str(runs)], timeout=120)
        assert writer.returncode == 0
        time.sleep(1.5)
        stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert "waiting for TensorBoard scalars" in stderr and "12 steps" in stdout, stdout
    steps = np.arange(1, 13)
    norms = np.stack([0.5 + 0.01 * steps, 2.0 + 0.02 * steps], 1)
    norms[7, 1] = np.nan
    frames_played(recording.samples, expected_frames(norms.astype(np.float32).astype(float)), atol=1e-4)


BURSTS = textwrap.dedent(
    """
    import sys, time
    path, = sys.argv[1:]
    # A Sonifier's rhythm: 5 steps/s, flushed every 0.5 s, 3 layers (50 ms of sound a step); then an
    # evaluation pause of 5 s with nothing written, and training goes on.
    with open(path, "w") as log:
        log.write("step,a,b,c\\n"); log.flush(); time.sleep(1.5)  # the player opens the sound card
        step = 0
        for burst in range(30):
            if burst == 20:
                time.sleep(5.0)
            rows = range(step + 1, step + 1 + (1 if burst == 0 else 2 + burst % 2))  # 2 or 3 rows a burst
            log.write("".join(f"{s},{0.5 + 0.01 * s},{2.0 - 0.01 * s},{1.0 + 0.1 * (s % 7)}\\n" for s in rows))
            log.flush()
            step = rows[-1]
            time.sleep(0.5)
        print(step)
    """
)


def test_bursts_are_played_whole_and_a_pause_is_not_a_stall(sound_server, tmp_path):
    log = tmp_path / "run.norms.csv"
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(log), "--wait", "30")
        writer = subprocess.run([sys.executable, "-c", BURSTS, str(log)], capture_output=True, text=True, timeout=120)
        assert writer.returncode == 0, writer.stderr
        rows = int(writer.stdout)
        steps = np.arange(1, rows + 1)
        norms = np.stack([0.5 + 0.01 * steps, 2.0 - 0.01 * steps, 1.0 + 0.1 * (steps % 7)], 1)
        expected = expected_frames(norms)
        deadline = time.monotonic() + 30
        while True:  # until the last burst has played out
            try:
                frames_played(recording.samples, expected)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert "stopped" not in stderr + stdout
    # Every step of every burst (the card is idle 75% of the time), in order, sample for sample (above),
    # the steps after the 5 s pause included.
    assert f"{rows} steps, {rows} played, 0 skipped" in stdout


TENSORBOARD_RHYTHMS = textwrap.dedent(
    """
    import sys, time
    from torch.utils.tensorboard import SummaryWriter
    folder = sys.argv[1]
    time.sleep(1.0)
    with SummaryWriter(folder) as writer:  # run 1: fc has no gradient (frozen) until step 7
        for step in range(1, 13):
            writer.add_scalar("grad_2.0_norm/conv.weight", 0.5 + 0.01 * step, step)
            if step >= 7:
                writer.add_scalar("grad_2.0_norm/fc.weight", 2.0 + 0.02 * step, step)
            writer.flush()
            time.sleep(0.4)
    time.sleep(1.0)
    with SummaryWriter(folder) as writer:  # run 2 in the same folder: steps start again at 1
        for step in range(1, 6):
            time.sleep(1.5 if step == 5 else 0.1)  # the last step well after the others: a sound of its own
            if step == 5:
                print(time.perf_counter(), flush=True)  # the system's monotonic clock, the test's too
            writer.add_scalar("grad_2.0_norm/conv.weight", 0.25, step)
            writer.add_scalar("grad_2.0_norm/fc.weight", 1.0, step)
            writer.flush()
    """
)


def test_tensorboard_follow_hears_late_layers_and_a_second_run_in_the_folder(sound_server, tmp_path):
    runs = tmp_path / "runs" / "exp"
    with sound_server.capture() as recording:
        follower = start_sonify("play", "--follow", str(runs))
        writer = subprocess.run(
            [sys.executable, "-c", TENSORBOARD_RHYTHMS, str(runs)], timeout=120, capture_output=True, text=True
        )
        assert writer.returncode == 0, writer.stderr
        last_written = float(writer.stdout.split()[-1])
        steps = np.arange(1, 13)
        first = np.stack([0.5 + 0.01 * steps[:6]], 1).astype(np.float32).astype(float)
        later = np.stack([0.5 + 0.01 * steps[6:], 2.0 + 0.02 * steps[6:]], 1).astype(np.float32).astype(float)
        expected = expected_frames(first) + expected_frames(later)  # one voice, then two from step 7
        deadline = time.monotonic() + 30
        while True:  # until run 1 has been heard, every step in order
            try:
                frames_played(recording.samples, expected)
                break
            except AssertionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        # Then run 2, until its last step, written well after the others, has been heard.
        while not any(
            when > last_written and np.frombuffer(chunk, np.float32).any() for when, chunk in recording.chunks
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        stdout, stderr = stop(follower)
    assert follower.returncode == 0, stderr
    assert "fc.weight heard from step 7 on" in stderr
    assert "conv.weight went back from step 12 to 1: a new run; starting over" in stderr
    assert "17 steps in 2 runs" in stdout, stdout


@pytest.mark.parametrize("mapping", ["log", "relative"])
def test_follow_plays_every_new_cue(sound_server, tmp_path, mapping):
    from helpers import decode_cells

    norms = np.ones((12, 3))
    norms[:, 0] = 0.0  # a dead layer
    norms[4, 1], norms[6, 1] = 1e9, 1e-9  # off the top of the log map (and 1e9x home), then below
    norms[8, 2] = np.nan
    missing = np.zeros(norms.shape, bool)
    missing[10, 2] = True  # no gradient: a rest
    sound = sonify.SoundSettings(mapping=mapping)
    with sound_server.capture() as recording:
        follower = follow_stdin("--map", mapping)
        follower.stdin.write("step,conv,mid,fc\n")
        follower.stdin.flush()
        time.sleep(1.5)  # as in the pipe test above: the header, then rows as they are written
        for step, row in enumerate(norms, start=1):
            cells = ["" if gap else repr(float(v)) for v, gap in zip(row, missing[step - 1])]
            follower.stdin.write(f"{step},{','.join(cells)}\n")
            follower.stdin.flush()
            time.sleep(0.1)
        follower.stdin.close()
        follower.wait(timeout=60)
        stderr = follower.stderr.read()
    assert follower.returncode == 0, stderr
    sounder = sound.sounder(3)
    frames = [sounder.sound(row[None], gaps[None]) for row, gaps in zip(norms, missing)]
    starts = frames_played(recording.samples, frames)
    heard = np.concatenate([recording.samples[s : s + len(f)] for s, f in zip(starts, frames)])
    states, _ = decode_cells(heard, sound.synthesizer(3))
    assert (states[:, 0] == "ZERO").all()
    assert states[4, 1] == "ABOVE" and states[6, 1] == "BELOW"
    assert states[8, 2] == "ALARM" and states[10, 2] == "REST"
    assert set(states[[0, 1, 2, 3, 5, 7, 9, 11], 1].tolist()) == {"TONE"}


def test_a_folder_of_norm_logs_is_a_folder_of_runs_not_a_tensorboard_run(tmp_path):
    from sonify.sources import SourceKind, source_kind

    assert source_kind(tmp_path) is SourceKind.TENSORBOARD  # empty: a run folder training has not filled yet
    (tmp_path / "a.norms.csv").write_text("step,fc\n1,1.0\n")
    assert source_kind(tmp_path) is SourceKind.RUNS
    with pytest.raises(sonify.SonifyError, match="folder of norm logs"):
        sonify.load_norms(tmp_path)
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    assert source_kind(tmp_path) is SourceKind.TENSORBOARD  # TensorBoard's events decide
