import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

import sonify
from helpers import ROOT, frames_played, run_sonify, start_sonify, wait_for_rows
from helpers.virtual_audio import SoundServer
from sonify.cli import main
from sonify.normfile import NormLogWriter


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_log(path, rows=5):
    writer = NormLogWriter(path, ["conv1", "fc"])
    norms = np.linspace(0.1, 3.0, rows * 2, dtype=np.float32).reshape(rows, 2)
    norms[2, 1] = np.nan
    writer.append(np.arange(1, rows + 1), norms, np.zeros(norms.shape, bool))
    writer.close()
    return path


def test_import_and_help_need_neither_portaudio_nor_torch(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['sounddevice'] = None  # as if PortAudio were missing\n")
    code = "import sys, sonify; print('torch' in sys.modules, sys.modules.get('sounddevice') is not None)"
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["False", "False"], result.stderr
    help_text = run_sonify("--help", env=env)
    assert help_text.returncode == 0 and "train" in help_text.stdout and "render" in help_text.stdout
    for command in ("train", "render"):
        assert run_sonify(command, "--help", env=env).returncode == 0


def test_train_end_to_end_in_a_real_process(tmp_path):
    result = run_sonify("train", "--steps", "12", "--dataset", "digits", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stem = "lenet-digits-sgd-lr0.01-bs10-m0.5-12steps-seed0-log"
    for suffix in (".wav", ".norms.csv", ".norms.json"):
        assert (tmp_path / "audio_out" / f"{stem}{suffix}").exists()
    out = result.stdout
    assert "steps: 12" in out and "NaN/Inf: none" in out and "final loss:" in out
    assert all(f"    {layer}" in out for layer in ("conv1", "conv2", "fc1", "fc2"))
    log = sonify.load_norms(tmp_path / "audio_out" / f"{stem}.norms.csv")
    assert log.metadata["experiment"]["lr"] == 0.01 and log.metadata["summary"]["steps"] == 12


def test_train_reports_the_first_nan_step(tmp_path):
    out = tmp_path / "boom.wav"
    result = invoke(
        "train",
        "--lr",
        "1.0",
        "--batch-size",
        "256",
        "--steps",
        "20",
        "--dataset",
        "digits",
        "--no-progress",
        "-o",
        str(out),
        "--map",
        "linear",
    )
    assert result.exit_code == 0
    log = sonify.load_norms(out)
    first = log.stats().first_nonfinite_step
    assert first is not None and f"first at step {first}" in result.output


def test_train_with_auto_range_renders_after_training(tmp_path):
    out = tmp_path / "auto.wav"
    result = invoke(
        "train", "--steps", "5", "--dataset", "digits", "--no-progress", "-o", str(out), "--norm-range", "auto"
    )
    assert result.exit_code == 0 and soundfile.info(out).frames > 0


def test_render_command_with_options(tmp_path):
    log = make_log(tmp_path / "run.norms.csv")
    result = invoke("render", str(log), "--map", "linear", "--format", "pcm16", "--tone-ms", "20", "--no-progress")
    assert result.exit_code == 0, result.output
    wav = tmp_path / "run.wav"
    info = soundfile.info(wav)
    assert info.subtype == "PCM_16" and "NaN/Inf: 1 steps, first at step 3 (fc)" in result.output
    assert info.frames == 5 * (2 * 882 + 2 * 882)
    assert (
        invoke(
            "render",
            str(log),
            "-o",
            str(tmp_path / "a.flac"),
            "--norm-range",
            "1e-3:10",
            "--scale",
            "major",
            "--no-progress",
        ).exit_code
        == 0
    )


def test_bad_input_is_one_line_without_traceback(tmp_path):
    log = str(make_log(tmp_path / "x.norms.csv"))
    (tmp_path / "bad.norms.csv").write_text("step,a\n1,2\n2,x\n")
    (tmp_path / "huge.norms.csv").write_text("step,a\n1,2\n1e30,3\n")
    usage = [  # bad option values: refused by the option's type, exit 2
        (("render", log, "--norm-range", "low"), "'--norm-range': 'low' is not understood"),
        (("render", log, "--norm-range", "10:1"), "0 < LOW < HIGH"),
        (("render", log, "--tone-ms", "nan"), "'--tone-ms': 'nan' is not a finite number"),
        (("render", log, "--gap-ms", "nan"), "'--gap-ms'"),
        (("render", log, "--amplitude", "inf"), "'--amplitude'"),
        (("render", log, "--duration", "soon"), "'--duration'"),
        (("render", log, "--duration", "0s"), "not a positive length"),
        (("train", "--momentum", "-1"), "'--momentum'"),
        (("train", "--momentum", "nan"), "'--momentum'"),
        (("train", "--seed", "99999999999999999999999"), "'--seed'"),
        (("train", "--lr", "1e308"), "'--lr'"),
        (("train", "--lr", "-1"), "'--lr'"),
        (("train", "--lr", "nan"), "'--lr'"),
        (("train", "--torch-device", "meta"), "holds no data"),
        (("train", "--torch-device", "cuda:7"), "'cuda:7' is not usable"),
        (("train", "--torch-device", "potato"), "not a torch device"),
        (("train", "--latency", "nan", "--live"), "'--latency'"),
        (("train", "--steps", "0"), "'--steps'"),
    ]
    errors = [  # sonify's own checks: exit 1
        (("render", str(tmp_path / "missing.norms.csv")), "does not exist"),
        (("render", log, "-o", str(tmp_path / "x.mp3")), ".wav or .flac file name for -o/--out"),
        (("train", "--optimizer", "adam", "--momentum", "0.9"), "--momentum does not apply to adam"),
        (("train", "--pace"), "--pace only applies to live sound; add --live"),
        (("train", "--device", "pulse"), "--device only applies to live sound; add --live"),
        (("render", str(tmp_path / "bad.norms.csv")), "bad.norms.csv:3: not a number"),
        (("render", str(tmp_path / "huge.norms.csv")), "huge.norms.csv:3: step '1e30' is not a whole number"),
    ]
    for cases, code in ((usage, 2), (errors, 1)):
        for args, message in cases:
            result = CliRunner().invoke(main, list(args))
            assert result.exit_code == code, (args, result.output)
            lines = result.output.splitlines()
            assert len(lines) == 1 and lines[0].startswith("sonify: error:") and message in lines[0], (args, lines)
            assert not any(tmp_path.glob("*.wav"))  # nothing created for bad input


@pytest.mark.parametrize("live", [False, True], ids=["files", "live"])
def test_ctrl_c_during_train_closes_the_files(tmp_path, request, live):
    import signal

    if live:
        request.getfixturevalue("sound_server")
    out = tmp_path / "stopped.wav"
    live_args = ["--live"] if live else []
    process = start_sonify(
        "train", "--steps", "100000", "--dataset", "digits", "--no-progress", "-o", str(out), *live_args
    )
    log_file = tmp_path / "stopped.norms.csv"
    wait_for_rows(log_file, 20)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "sonify train: interrupted" in stdout and "Traceback" not in stderr
    log = sonify.load_norms(log_file)
    assert len(log) >= 20 and log.metadata["interrupted"] is True
    assert soundfile.info(out).frames == len(log) * sonify.SoundSettings().synthesizer(4).step_samples


def test_train_live_plays_every_step_with_pace_and_reports_it(tmp_path, sound_server):
    with sound_server.capture() as recording:
        result = run_sonify(
            "train",
            "--steps",
            "6",
            "--dataset",
            "digits",
            "--no-progress",
            "--live",
            "--pace",
            "--device",
            "pulse",
            "-o",
            str(tmp_path / "run.wav"),
        )
    assert result.returncode == 0, result.stderr
    assert "live: 6 steps played on 'pulse', 0 underruns" in result.stdout
    audio, _ = soundfile.read(tmp_path / "run.wav", dtype="float32")
    step = len(audio) // 6
    frames_played(recording.samples, [audio[i : i + step] for i in range(0, len(audio), step)])


def test_devices_lists_the_virtual_card(sound_server):
    result = run_sonify("devices")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("  ") and " pulse, ALSA (" in line for line in lines)
    assert sum(line.startswith("* ") for line in lines) == 1


def test_sound_server_dying_mid_run_does_not_stop_training(tmp_path):
    server = SoundServer(tmp_path / "server")
    try:
        process = start_sonify(
            "train",
            "--steps",
            "40",
            "--batch-size",
            "256",
            "--dataset",
            "digits",
            "--no-progress",
            "--live",
            "-o",
            str(tmp_path / "run.wav"),
            env=server.env,
        )
        log_file = tmp_path / "run.norms.csv"
        wait_for_rows(log_file, 5)
    finally:
        server.stop()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    warnings_seen = [line for line in stderr.splitlines() if "live audio stopped" in line]
    assert (
        len(warnings_seen) == 1 and "training continues and the WAV and norm log are still written" in warnings_seen[0]
    )
    assert "Traceback" not in stderr and "stopped early" in stdout
    assert len(sonify.load_norms(log_file)) == 40
    assert soundfile.info(tmp_path / "run.wav").frames == 40 * sonify.SoundSettings().synthesizer(4).step_samples


def test_render_of_a_tensorboard_folder_names_its_output(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "runs" / "exp1")) as writer:
        for step in range(1, 4):
            writer.add_scalar("grad_norm/fc", 0.5 * step, step)
    result = CliRunner().invoke(main, ["render", str(tmp_path / "runs" / "exp1"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (
        soundfile.info(tmp_path / "runs" / "exp1.wav").frames == 3 * sonify.SoundSettings().synthesizer(1).step_samples
    )
    again = CliRunner().invoke(main, ["render", str(tmp_path / "runs" / "exp1"), "--no-progress"])
    assert again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output


def test_compare_without_matplotlib_says_so_before_training(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('No module named matplotlib', name='matplotlib')\n")
    result = run_sonify(
        "compare",
        "--steps",
        "3",
        "--dataset",
        "digits",
        "-o",
        str(tmp_path / "cmp"),
        env={"PYTHONPATH": f"{blocker}:{ROOT}"},
    )
    assert result.returncode == 1 and not (tmp_path / "cmp").exists()  # nothing trained, nothing written
    assert result.stderr.strip() == (
        "sonify: error: the comparison figure (skip it with --no-figure) needs matplotlib, "
        "which is not installed: pip install 'sonify[plot]'"
    )


def test_params_all_and_weight_runs_keep_their_own_files(tmp_path):
    for params in ("weight", "all", "weight"):
        result = run_sonify(
            "train", "--dataset", "digits", "--steps", "3", "--params", params, "--no-progress", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "audio_out").glob("*.norms.csv"))
    assert names == [
        "lenet-digits-sgd-lr0.01-bs10-m0.5-3steps-seed0-log-2.norms.csv",  # the repeated run gets its own name
        "lenet-digits-sgd-lr0.01-bs10-m0.5-3steps-seed0-log.norms.csv",
        "lenet-digits-sgd-lr0.01-bs10-m0.5-params-all-3steps-seed0-log.norms.csv",
    ]


def test_a_diverging_run_spikes_before_its_first_nan(tmp_path):
    result = run_sonify(
        "train", "--lr", "1.0", "--batch-size", "256", "--dataset", "digits", "--steps", "20", "--no-progress",
        "-o", str(tmp_path / "diverge.wav"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = sonify.load_norms(tmp_path / "diverge.norms.csv").metadata["summary"]
    assert summary["first_spike_step"] < summary["first_nonfinite_step"]  # the warning comes before the alarm
    assert "spikes:" in result.stdout and "they sound accented" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("sonify: warning:")]
    assert "spiked to" in warnings[0] and "NaN/Inf" in warnings[1]


def test_a_grid_says_its_data_notice_once_and_draws_no_bars_into_a_log(tmp_path):
    # stderr is a pipe here, as in CI logs or under nohup: no progress bars, and the MNIST fallback said once.
    result = run_sonify(
        "compare", "--lr", "0.01", "--lr", "0.02", "--steps", "3", "--dataset", "auto", "--no-figure",
        "-o", str(tmp_path / "grid"),
        env={"SONIFY_DATA": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("using scikit-learn's 8x8 digits") == 1
    assert "\r" not in result.stderr and "step/s" not in result.stderr and "it/s" not in result.stderr
    rendered = run_sonify("render", str(next((tmp_path / "grid").glob("*.norms.csv"))), "-o", str(tmp_path / "r.wav"))
    assert rendered.returncode == 0 and rendered.stderr == ""  # no bar without --no-progress either


def test_render_overwrite_onto_a_symlink_replaces_the_link_not_the_other_run(tmp_path):
    log = make_log(tmp_path / "run.norms.csv")
    other_run = tmp_path / "run-5.wav"
    other_run.write_bytes(b"RIFF of another run")
    (tmp_path / "latest.wav").symlink_to(other_run)
    result = run_sonify("render", str(log), "-o", str(tmp_path / "latest.wav"), "--overwrite", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert other_run.read_bytes() == b"RIFF of another run"
    assert not (tmp_path / "latest.wav").is_symlink() and soundfile.info(tmp_path / "latest.wav").frames > 0


def test_render_of_a_log_with_a_field_over_the_csv_limit_is_one_line(tmp_path):
    log = tmp_path / "run.norms.csv"
    log.write_text('step,a,b\n1,0.5,1.0\n2,"' + "7" * 200_000 + ",1.0\n3,0.5,1.0\n")
    result = run_sonify("render", str(log), "-o", str(tmp_path / "x.wav"), "--no-progress")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "run.norms.csv:3: not a CSV row" in result.stderr and not (tmp_path / "x.wav").exists()


def test_train_live_survives_pauses_of_the_whole_process(tmp_path, sound_server):
    """Soak: the training process is suspended (SIGSTOP, as a laptop asleep or a debugger does) for 1 to 4 s at
    random moments; after every pause the steps are heard again, and no stall is reported."""
    import random
    import signal

    rng = random.Random(17)
    out = tmp_path / "paused.wav"
    with sound_server.capture() as recording:
        process = start_sonify(
            "train", "--live", "--steps", "100000", "--dataset", "digits", "--no-progress", "-o", str(out)
        )
        try:
            wait_for_rows(tmp_path / "paused.norms.csv", 5)
            for _ in range(3):
                time.sleep(rng.uniform(0.2, 1.0))
                process.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(1.0, 4.0))
                process.send_signal(signal.SIGCONT)
                resumed = len(recording.samples)
                deadline = time.monotonic() + 60
                while not np.any(recording.samples[resumed:]):  # heard again after the pause
                    assert time.monotonic() < deadline, "nothing was heard after a pause"
                    time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "stopped early" not in stdout + stderr and "stopped taking samples" not in stdout + stderr
    assert "steps played on" in stdout


def test_train_max_audio_condenses_a_long_run_and_says_so(tmp_path):
    out = tmp_path / "long.wav"
    result = run_sonify(
        "train", "--steps", "60", "--dataset", "digits", "--no-progress", "-o", str(out), "--max-audio", "1s"
    )
    assert result.returncode == 0, result.stderr
    assert "condensed to 1 s" in result.stdout and f"sonify render {tmp_path / 'long.norms.csv'}" in result.stdout
    assert soundfile.info(out).duration <= 1.0 and len(sonify.load_norms(tmp_path / "long.norms.csv")) == 60
    both = run_sonify("train", "--steps", "5", "--max-audio", "1s", "--full-audio", "-o", str(tmp_path / "x.wav"))
    assert both.returncode != 0 and "give one of them" in both.stderr and not (tmp_path / "x.wav").exists()
    zero = run_sonify("train", "--steps", "5", "--max-audio", "0", "-o", str(tmp_path / "y.wav"))
    assert zero.returncode != 0 and "not a positive length of time" in zero.stderr
