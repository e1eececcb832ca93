"""Sound and norms in experiment trackers: the real libraries, offline, read back.

TensorBoard event files are decoded with TensorBoard's own reader, Weights &
Biases runs offline (``WANDB_MODE=offline``), MLflow uses a ``file:`` store;
nothing reaches the network.
"""

import time
import warnings

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

import sonify
from helpers import decoded, tensorboard_events, wandb_history
from sonify.rendering import condensed_audio
from sonify.trackers import AUDIO_TAG, log_audio, tracker


def a_log(steps=300, layers=("conv1", "fc.weight", "odd:name")):
    rng = np.random.default_rng(0)
    norms = np.abs(rng.normal(size=(steps, len(layers)))) + 0.1
    norms[steps // 2, 1] = np.nan  # an alarm
    return sonify.NormLog.from_array(norms, layers)


def expected_mono(log, seconds=60.0):
    samples, rate = condensed_audio(log, max_seconds=seconds)
    return (samples if samples.ndim == 1 else samples.mean(axis=1)), rate


def train(model, opt, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()


def small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


# -- one call, every tracker ---------------------------------------------------------


def test_tensorboard_audio_decodes_to_the_rendered_sound_and_norms_are_scalars(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    log = a_log()
    with SummaryWriter(tmp_path / "tb") as writer:
        where = log_audio(writer, log, norms=True)
    assert where == [f"TensorBoard {AUDIO_TAG} at step 300 ({tmp_path / 'tb' / 'sonify'})"]
    events = tensorboard_events(tmp_path / "tb")
    assert "audio" not in events.Tags() or not events.Tags()["audio"]  # never in the user's own event file
    (clip,) = tensorboard_events(tmp_path / "tb" / "sonify").Audio(AUDIO_TAG)  # a run of its own beside it
    expected, rate = expected_mono(log)
    assert clip.step == 300 and clip.sample_rate == rate
    np.testing.assert_allclose(decoded(clip.encoded_audio_string), expected, atol=1.5 / 32767)
    scalars = events.Scalars("sonify/grad_norm/fc.weight")
    assert [s.step for s in scalars] == list(range(1, 301))
    np.testing.assert_allclose([s.value for s in scalars], log.norms[:, 1].astype(np.float32), equal_nan=True)
    assert "sonify/grad_norm/odd_name" in events.Tags()["scalars"]  # a name MLflow would refuse, made safe


def test_long_runs_are_condensed_with_the_alarm_kept(tmp_path):
    log = sonify.NormLog.from_array(np.ones((200_000, 2)))
    log.norms[123_456, 0] = np.inf
    (path,) = log_audio(tmp_path, log, max_seconds=5)
    samples, rate = soundfile.read(path)
    assert len(samples) / rate <= 5
    alarm_only, _ = condensed_audio(sonify.NormLog.from_array([[np.inf, 1.0]]))
    short, _ = condensed_audio(log.condense(len(samples) // len(alarm_only)))
    assert np.isinf(log.condense(len(samples) // len(alarm_only)).norms).any()  # the window kept its alarm
    np.testing.assert_allclose(samples, short.astype(np.float64), atol=1.5 / 32767)


def test_wandb_offline_run_holds_a_media_file_that_decodes(offline):
    wandb = pytest.importorskip("wandb")
    log = a_log()
    run = wandb.init(project="sonify-test", dir=str(offline))
    try:
        assert log_audio(run, log, norms=True) == [f"Weights & Biases {AUDIO_TAG} at step 300"]
    finally:
        run.finish()
    (media,) = list(offline.glob("wandb/offline-run-*/files/media/audio/sonify/*.wav"))
    expected, rate = condensed_audio(log)
    samples, media_rate = soundfile.read(media, dtype="float32")
    assert media_rate == rate
    np.testing.assert_allclose(samples, expected, atol=1.5 / 32767)
    (row,) = wandb_history(offline)  # sonify committed nothing: its values joined the one row finish() wrote
    assert {"sonify/grad_norm/conv1", "sonify/step"} <= set(row) and row["sonify/step"] == "300"
    assert any(key.startswith(AUDIO_TAG) for key in row)  # the media (W&B stores it as nested keys)


def test_wandb_users_own_metrics_and_step_are_never_touched(offline):
    """The user logs loss with step=i at every step while sonify logs norms and clips to the same run."""
    wandb = pytest.importorskip("wandb")
    run = wandb.init(project="sonify-test", dir=str(offline))
    model, opt = small_model()
    with (
        pytest.warns(sonify.SonifyWarning, match="asks for clips closer together than sonify sends them"),
        sonify.Sonifier(
            model,
            opt,
            out=offline / "run.wav",
            trackers=run,
            log_norms=True,
            log_audio_every_n_steps=50,
            flush_interval=0.01,
        ),
    ):
        for step in range(300):
            opt.zero_grad()
            loss = model(torch.randn(16, 4)).square().mean()
            loss.backward()
            opt.step()
            run.log({"loss": loss.item()}, step=step)
    run.finish()
    rows = wandb_history(offline)
    assert [int(row["_step"]) for row in rows if "loss" in row] == list(range(300))  # every point of the user's
    sonify_steps = [int(row["sonify/step"]) for row in rows if "sonify/grad_norm/0" in row]
    assert len(sonify_steps) > 100 and sonify_steps == sorted(sonify_steps) and sonify_steps[-1] == 300


def test_mlflow_file_store_holds_the_artifact_and_metrics(offline):
    mlflow = pytest.importorskip("mlflow")
    log = a_log()
    with mlflow.start_run() as run:
        (where,) = log_audio(mlflow, log, norms=True)
    assert where.endswith("artifact sonify/audio-step300.wav")
    client = mlflow.MlflowClient()
    local = client.download_artifacts(run.info.run_id, "sonify/audio-step300.wav", str(offline / "got"))
    np.testing.assert_allclose(soundfile.read(local, dtype="float32")[0], condensed_audio(log)[0], atol=1.5 / 32767)
    history = client.get_metric_history(run.info.run_id, "sonify/grad_norm/conv1")
    assert sorted(m.step for m in history) == list(range(1, 301))
    np.testing.assert_allclose([m.value for m in sorted(history, key=lambda m: m.step)], log.norms[:, 0])


def test_folder_never_replaces_a_file(tmp_path):
    (tmp_path / "audio-step300.wav").write_bytes(b"another run's file")
    (where,) = log_audio(tmp_path, a_log())
    assert where.endswith("audio-step300-2.wav")
    assert (tmp_path / "audio-step300.wav").read_bytes() == b"another run's file"


@pytest.mark.parametrize(
    "target, message",
    [
        (object(), "sonify cannot log to a object: give a TensorBoard SummaryWriter"),
        ((1, 2, 3), "an MLflow tracker given as a pair must be (MlflowClient, run_id)"),
    ],
)
def test_a_target_it_cannot_use_is_one_clear_line(target, message):
    with pytest.raises(sonify.SonifyParameterError) as error:
        tracker(target)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# -- a running Sonifier ----------------------------------------------------------------


def test_sonifier_sends_the_sound_while_training_and_at_the_end(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.setattr(sonify.trackers, "MIN_CLIP_SECONDS", 0.0)  # a clip every 20 steps, however fast
    monkeypatch.setattr(sonify.trackers, "CLIP_SPACING", 0.0)

    model, opt = small_model()
    writer = SummaryWriter(tmp_path / "tb")
    with sonify.Sonifier(
        model,
        opt,
        out=tmp_path / "run.wav",
        trackers=[writer, tmp_path / "clips"],
        log_audio_every_n_steps=20,
        log_norms=True,
        flush_interval=0.01,
    ) as son:
        for chunk in range(1, 11):
            train(model, opt, 10)
            if chunk % 2 == 0 and chunk < 10:  # a clip was asked for at this step: wait until it is sent
                deadline = time.monotonic() + 60
                while len(son._trackers.logged) < chunk and time.monotonic() < deadline:
                    time.sleep(0.01)
    writer.close()
    events = tensorboard_events(tmp_path / "tb")
    clips = tensorboard_events(tmp_path / "tb" / "sonify").Audio(AUDIO_TAG)
    steps = [clip.step for clip in clips]
    assert len(clips) >= 3 and steps == sorted(set(steps)) and steps[-1] == 100  # periodic, then the whole run
    log = sonify.load_norms(tmp_path / "run.norms.csv")
    np.testing.assert_allclose(decoded(clips[-1].encoded_audio_string), expected_mono(log)[0], atol=1.5 / 32767)
    scalars = events.Scalars("sonify/grad_norm/0")
    assert [s.step for s in scalars] == list(range(1, 101))  # every row once, in order
    np.testing.assert_allclose([s.value for s in scalars], log.norms[:, 0].astype(np.float32), rtol=1e-6)
    files = {p.name for p in (tmp_path / "clips").iterdir()}
    assert "audio-step100.wav" in files and len(files) == len(clips)  # the folder got the same clips


def test_log_audio_of_a_sonifier(tmp_path):
    model, opt = small_model()
    with sonify.Sonifier(model, opt, out=tmp_path / "run.wav") as son:
        train(model, opt, 30)
    (where,) = son.log_audio(tmp_path / "clips")
    log = sonify.load_norms(tmp_path / "run.norms.csv")
    np.testing.assert_allclose(soundfile.read(where, dtype="float32")[0], condensed_audio(log)[0], atol=1.5 / 32767)
    with pytest.raises(sonify.SonifyParameterError, match="sonify cannot log to a int"):
        son.log_audio(3)


def test_a_failing_tracker_warns_once_and_the_others_and_training_go_on(tmp_path):
    class BrokenWriter:
        log_dir = tmp_path / "tb"

        def add_audio(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

        def add_scalar(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    model, opt = small_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with sonify.Sonifier(
            model, opt, out=tmp_path / "run.wav", trackers=[BrokenWriter(), tmp_path / "clips"], log_norms=True
        ) as son:
            train(model, opt, 25)
    messages = [str(w.message) for w in caught if issubclass(w.category, sonify.SonifyWarning)]
    assert messages == ["sonify stopped logging to TensorBoard: OSError: [Errno 28] No space left on device"]
    assert son.stats.steps == 25 and (tmp_path / "clips" / "audio-step25.wav").exists()
    reason = "OSError: [Errno 28] No space left on device"
    assert son.failures == {"tracker TensorBoard": reason}  # said where the user looks: failures and the JSON
    assert sonify.load_norms(son.log_path).metadata["summary"]["lost"] == {"tracker TensorBoard": reason}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"trackers": "x", "log_audio_every_n_steps": 0}, "log_audio_every_n_steps=0 is invalid"),
        ({"trackers": "x", "audio_seconds": float("nan")}, "audio_seconds=nan is invalid"),
        ({"trackers": "x", "tracker_prefix": "a b"}, "tracker_prefix='a b' is invalid"),
        ({"tracker_prefix": "mine"}, "log_audio_every_n_steps=, log_norms= and tracker_prefix= need trackers="),
        ({"log_norms": True}, "log_audio_every_n_steps=, log_norms= and tracker_prefix= need trackers="),
        ({"trackers": 5}, "sonify cannot log to a int"),
    ],
)
def test_bad_tracker_options_are_refused_before_any_file_exists(tmp_path, options, message):
    model, opt = small_model()
    with pytest.raises(sonify.SonifyParameterError, match=message.replace("(", r"\(")):
        sonify.Sonifier(model, opt, out=tmp_path / "run.wav", **options)
    assert list(tmp_path.iterdir()) == []


def test_callback_tracker_options_are_checked_when_the_callback_is_made(tmp_path):
    from sonify.integrations._holder import _SonifierHolder

    with pytest.raises(sonify.SonifyParameterError, match="log_audio_every_n_steps=-5 is invalid"):
        _SonifierHolder(tmp_path / "run.wav", log_audio_every_n_steps=-5)
    with pytest.raises(sonify.SonifyParameterError, match="the callback finds the trackers itself"):
        _SonifierHolder(tmp_path / "run.wav", trackers=[tmp_path])
    assert list(tmp_path.iterdir()) == []


def test_tracker_libraries_are_imported_only_when_used():
    import subprocess
    import sys

    code = (
        "import sys, sonify, sonify.trackers\n"
        "print(sorted(m for m in ('torch', 'wandb', 'mlflow', 'tensorboard', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_folder_that_cannot_be_created_warns_once_and_the_run_is_intact(tmp_path):
    (tmp_path / "blocker").write_text("a file where the folder should go")
    model, opt = small_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with sonify.Sonifier(
            model, opt, out=tmp_path / "run.wav", trackers=[tmp_path / "blocker" / "clips", tmp_path / "ok"]
        ) as son:
            train(model, opt, 12)
    messages = [str(w.message) for w in caught if issubclass(w.category, sonify.SonifyWarning)]
    assert len(messages) == 1 and messages[0].startswith("sonify stopped logging to folder: SonifyIOError: cannot")
    assert "Not a directory" in messages[0] and (tmp_path / "ok" / "audio-step12.wav").exists()
    assert son.stats.steps == 12 and len(sonify.load_norms(son.log_path)) == 12
    assert (tmp_path / "blocker").read_text() == "a file where the folder should go"


def test_two_sonifiers_on_one_run_never_share_names(offline):
    """The README's pattern: one Sonifier hears the norms before clipping (step() by hand), one at the step."""
    mlflow = pytest.importorskip("mlflow")
    from torch.utils.tensorboard import SummaryWriter

    model, opt = small_model()
    writer = SummaryWriter(offline / "tb")
    trackers = [mlflow, writer, offline / "clips"]
    with mlflow.start_run() as run:
        before = sonify.Sonifier(model, out=offline / "before.wav", trackers=trackers, log_norms=True)
        with pytest.warns(sonify.SonifyWarning, match="this one logs as 'sonify-2'"):
            after = sonify.Sonifier(model, opt, out=offline / "after.wav", trackers=trackers, log_norms=True)
        mine = sonify.Sonifier(model, out=offline / "mine.wav", trackers=trackers, tracker_prefix="mine")
        with before, after, mine:
            for _ in range(20):
                opt.zero_grad()
                model(torch.randn(16, 4)).square().mean().backward()
                before.step()
                mine.step()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
                opt.step()
    writer.close()
    client = mlflow.MlflowClient()
    for prefix, sonifier in (("sonify", before), ("sonify-2", after)):
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, prefix)]
        assert artifacts == [f"{prefix}/audio-step20.wav"]
        history = sorted(client.get_metric_history(run.info.run_id, f"{prefix}/grad_norm/0"), key=lambda m: m.step)
        log = sonify.load_norms(sonifier.log_path)
        np.testing.assert_allclose([m.value for m in history], log.norms[:, 0])  # each its own series, whole
    assert [a.path for a in client.list_artifacts(run.info.run_id, "mine")] == ["mine/audio-step20.wav"]
    assert tensorboard_events(offline / "tb" / "sonify").Audio("sonify/audio")
    assert tensorboard_events(offline / "tb" / "sonify-2").Audio("sonify-2/audio")
    scalars = tensorboard_events(offline / "tb").Tags()["scalars"]
    assert {"sonify/grad_norm/0", "sonify-2/grad_norm/0"} <= set(scalars)
    assert {p.name for p in (offline / "clips").iterdir()} == {
        "audio-step20.wav",
        "sonify-2-audio-step20.wav",
        "mine-audio-step20.wav",
    }
