"""Fault injection and fuzzing: a monitor never harms the run it watches.

Real failures, not mocks: a file-size limit and a full tmpfs (the disk is
full), a tmpfs remounted read-only and a folder deleted while ``sonify train``
runs, ``kill -9`` at random moments, and random bytes, CSVs and option values.
"""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sonify
from helpers import ROOT, make_model, run_sonify, start_sonify, train, wait_for_rows
from sonify import SonifyError, SonifyWarning
from sonify.cli import main

TRAIN = ("train", "--dataset", "digits", "--no-progress")
STEP_SAMPLES = sonify.SoundSettings().synthesizer(4).step_samples  # the reference CNN's 4 layers


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sonify: warning: sonify")]


def check_readable(folder: Path, stem: str = "run") -> sonify.NormLog:
    """What a failed or killed run left: a log that reads back, a WAV that common readers open."""
    log = sonify.load_norms(folder / f"{stem}.norms.csv")  # whole rows only: no drop_incomplete needed
    wav = folder / f"{stem}.wav"
    if wav.exists() and wav.stat().st_size:
        frames = soundfile.info(wav).frames
        _, samples = scipy.io.wavfile.read(wav)
        assert len(samples) == frames
        assert frames <= len(log) * STEP_SAMPLES + STEP_SAMPLES
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # no temporary files left behind
    return log


@pytest.fixture
def tmpfs(tmp_path):
    """A small RAM file system of our own (root only), to fill up or make read-only for real."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}); the file-size-limit test still runs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_by_file_size_limit_keeps_training_and_the_log(tmp_path):
    # RLIMIT_FSIZE makes every write past 20 kB fail with EFBIG, as a full disk does (Python ignores SIGXFSZ).
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
        "from sonify.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *TRAIN, "--steps", "60", "-o", str(tmp_path / "run.wav")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "sonify train: done" in result.stdout and "steps: 60" in result.stdout
    assert "lost (audio)" in result.stdout  # the summary says what was lost
    (warning,) = warnings_of(result.stderr)
    assert "run.wav" in warning and "File too large" in warning and "training continues" in warning
    log = check_readable(tmp_path)
    assert len(log) == 60  # the log, a smaller file, is complete
    assert sonify.load_norms(tmp_path / "run.norms.csv").metadata["summary"]["lost"]["audio"]


def test_render_to_a_full_disk_is_one_line(tmp_path):
    log = tmp_path / "run.norms.csv"
    log.write_text("step,a,b\n" + "".join(f"{i},0.5,1.5\n" for i in range(1, 2001)))
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000)); "
        "from sonify.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "render", str(log), "--no-progress"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("sonify: error: cannot write audio file") and "File too large" in result.stderr
    _, samples = scipy.io.wavfile.read(tmp_path / "run.wav")  # what fitted is readable
    assert 0 < len(samples) < 50000 // 4


def test_full_tmpfs_keeps_training_and_says_what_was_lost(tmpfs):
    result = run_sonify(*TRAIN, "--steps", "60", "-o", str(tmpfs / "run.wav"))
    assert result.returncode == 0, result.stderr
    assert "sonify train: done" in result.stdout and "lost (audio)" in result.stdout
    warnings = warnings_of(result.stderr)
    assert any("run.wav" in w and "No space left on device" in w for w in warnings)
    assert len(warnings) == len({w.split("(")[1].split(")")[0] for w in warnings})  # at most one per file
    assert "Traceback" not in result.stderr
    check_readable(tmpfs)


def test_folder_made_read_only_mid_run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    process = start_sonify(*TRAIN, "--steps", "300", "-o", str(folder / "run.wav"))
    try:
        wait_for_rows(folder / "run.norms.csv", 10)
        # A read-only bind mount over the folder: new files cannot be made there, even by root.
        bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if bound.returncode != 0:
            pytest.skip(f"cannot bind-mount here ({bound.stderr.decode().strip()})")
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)]).returncode == 0
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    try:
        assert process.returncode == 0, stderr
        assert "sonify train: done" in stdout and "steps: 300" in stdout
        (warning,) = warnings_of(stderr)
        assert "run.norms.json" in warning and "Read-only file system" in warning
        assert len(check_readable(folder)) == 300  # the files open before still took every row
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_folder_deleted_mid_run(tmp_path):
    folder = tmp_path / "gone"
    process = start_sonify(*TRAIN, "--steps", "300", "-o", str(folder / "run.wav"))
    try:
        wait_for_rows(folder / "run.norms.csv", 10)
        shutil.rmtree(folder)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "sonify train: done" in stdout and "steps: 300" in stdout
    (warning,) = warnings_of(stderr)
    assert "run.norms.json" in warning and "its folder was deleted during the run" in warning
    assert "Traceback" not in stderr


def test_the_users_exception_survives_a_failing_close(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    folder = tmp_path / "run"
    with (
        pytest.warns(SonifyWarning, match="could not finish its summary"),
        pytest.raises(ZeroDivisionError),
        sonify.Sonifier(model, optimizer, out=folder / "run.wav") as son,
    ):
        train(model, optimizer, 3)
        shutil.rmtree(folder)  # the folder goes away: closing cannot write the summary
        1 / 0  # noqa: B018  the user's own error, which sonify must not replace
    assert son.failures.keys() == {"summary"} and son.stats.steps == 3


def test_kill_9_at_random_moments_leaves_readable_files(tmp_path):
    rng = random.Random(20261129)
    for attempt in range(6):
        folder = tmp_path / f"k{attempt}"
        process = start_sonify(*TRAIN, "--steps", "100000", "-o", str(folder / "run.wav"))
        try:
            if attempt == 0:  # before the first flush: as soon as the WAV exists
                while not (folder / "run.wav").exists() and process.poll() is None:
                    time.sleep(0.001)
            else:
                wait_for_rows(folder / "run.norms.csv", rng.randint(1, 150))
                time.sleep(rng.uniform(0.0, 0.6))  # anywhere in the flush cycle
        finally:
            process.kill()
            process.communicate()
        log = check_readable(folder)
        frames = soundfile.info(folder / "run.wav").frames
        assert frames % STEP_SAMPLES == 0 and frames // STEP_SAMPLES <= len(log)  # whole steps up to the last flush
        rebuilt = run_sonify(
            "render", str(folder / "run.norms.csv"), "-o", str(folder / "rebuilt.wav"), "--no-progress"
        )
        assert rebuilt.returncode == 0, rebuilt.stderr  # the audio is recovered from the log
        assert soundfile.info(folder / "rebuilt.wav").frames == len(log) * STEP_SAMPLES


# -- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)


def read_or_explain(path: Path) -> None:
    try:
        log = sonify.load_norms(path)
    except SonifyError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert log.norms.shape == log.missing.shape and len(log.steps) == len(log.norms)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_log_reader_on_random_bytes(tmp_path, data):
    path = tmp_path / "fuzz.norms.csv"
    path.write_bytes(data)
    read_or_explain(path)


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "x", '"', "\ufeff", "0x10", "1_0"]),
    st.text(max_size=6),
)


@FUZZ
@given(
    header=st.lists(
        st.sampled_from(["step", "Global_Step", "iter", "a", "b", "c", "", "step"]), min_size=1, max_size=5
    ),
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=6), max_size=12),
    bom=st.booleans(),
    newline=st.booleans(),
)
def test_log_reader_on_random_csvs(tmp_path, header, rows, bom, newline):
    text = ("\ufeff" if bom else "") + "\n".join(",".join(row) for row in [header, *rows]) + ("\n" if newline else "")
    path = tmp_path / "fuzz.norms.csv"
    path.write_text(text)
    read_or_explain(path)


SOUND_OPTIONS = ["--tone-ms", "--gap-ms", "--amplitude", "--sample-rate", "--norm-range", "--duration"]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.sampled_from(["", "nan", "inf", "-inf", "1e308", "-0", "1:2", "0:1", "nan:1", "1e-300:1e300", "1m30s", "abc"]),
    st.text(max_size=8).filter(lambda text: not text.startswith("-")),
)


@FUZZ
@given(option=st.sampled_from(SOUND_OPTIONS), value=VALUES)
def test_every_numeric_render_option_is_parsed_at_the_boundary(tmp_path, option, value):
    log = tmp_path / "tiny.norms.csv"
    if not log.exists():
        log.write_text("step,a,b\n1,0.5,2\n2,nan,1\n")
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "out.wav").unlink()
    result = CliRunner().invoke(
        main, ["render", str(log), "-o", str(tmp_path / "out.wav"), "--no-progress", option, value]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), (option, value, result.exception)
    if result.exit_code != 0:
        lines = result.output.splitlines()
        assert result.exit_code in (1, 2) and len(lines) == 1 and lines[0].startswith("sonify: error:"), lines


TRAIN_OPTIONS = ["--lr", "--momentum", "--batch-size", "--steps", "--seed", "--latency", "--torch-device"]


@FUZZ
@given(option=st.sampled_from(TRAIN_OPTIONS), value=VALUES)
def test_every_numeric_train_option_is_parsed_at_the_boundary(option, value):
    import click

    from sonify.cli.train import train as train_command

    try:
        context = train_command.make_context("train", [option, value])
    except click.UsageError as exc:  # a bad value: click's one-line message, which the CLI prints as one line
        assert "\n" not in exc.format_message() and option in exc.format_message()
    else:
        values = context.params
        assert all(v is None or isinstance(v, (str, int, float, bool, tuple, Path)) for v in values.values())
        for name in ("lr", "momentum", "latency"):
            assert np.isfinite(values[name])


def test_shell_bad_values_never_hang(tmp_path):
    # The one that looped for ever: a batch larger than the data set never fills.
    started = time.monotonic()
    result = run_sonify(*TRAIN, "--batch-size", "1798", "-o", str(tmp_path / "run.wav"), timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 120
    assert result.stderr.strip() == (
        "sonify: error: batch size 1798 is larger than the data set "
        "(scikit-learn digits (1797 images, 8x8 upsampled)); give --batch-size 1797 or less"
    )
    assert not list(tmp_path.iterdir())  # checked before any file was made


def test_sigterm_during_train_prints_the_summary_and_records_it(tmp_path):
    process = start_sonify(*TRAIN, "--steps", "100000", "-o", str(tmp_path / "run.wav"))
    try:
        wait_for_rows(tmp_path / "run.norms.csv", 20)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert "sonify train: interrupted" in stdout
    log = check_readable(tmp_path)
    assert log.metadata["interrupted"] is True and log.metadata["summary"]["steps"] == len(log) >= 20
    assert os.path.getsize(tmp_path / "run.wav") > 0


@pytest.mark.parametrize("guard", ["checks the free space first", "writes until the disk is full"])
def test_a_disk_full_when_the_long_run_is_condensed_keeps_the_audio_written_so_far(tmpfs, guard, monkeypatch):
    """At close the bounded WAV is replaced by the condensed run; with no room left for it, the old file
    stays whole and readable, the failure is said once, and no partial file is left behind. sonify checks
    the free space first; where that check is fooled (the space goes during the write), the write fails."""
    if guard == "writes until the disk is full":
        import shutil

        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        son = sonify.Sonifier(model, optimizer, out=tmpfs / "run.wav", max_audio_seconds=0.3, flush_interval=0.01)
        train(model, optimizer, 40)  # 40 steps of 50 ms: more than the 0.3 s bound
        deadline = time.monotonic() + 60
        while len(sonify.load_norms(son.log_path, drop_incomplete=True)) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = soundfile.read(tmpfs / "run.wav", dtype="float32")[0]
        with contextlib.suppress(OSError), open(tmpfs / "filler", "wb") as filler:  # fill what is left of the disk
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        son.close()  # never raises
    messages = [str(w.message) for w in caught if issubclass(w.category, SonifyWarning)]
    reason = "No space left on device" if guard == "writes until the disk is full" else "not condensed: 0 MB free"
    assert len([m for m in messages if "audio" in m and reason in m]) == 1, messages
    assert "audio" in son.failures and son.audio_condensed is None
    np.testing.assert_array_equal(soundfile.read(tmpfs / "run.wav", dtype="float32")[0], before)
    assert not [p for p in tmpfs.iterdir() if p.name.startswith(".")]  # no partial condensed file left
    assert len(sonify.load_norms(son.log_path, drop_incomplete=True)) == 40
