import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

import sonify
from helpers import ROOT, decode_tones, frames_played, is_alarm, make_model, run_sonify, train
from sonify import SonifyError, SonifyWarning
from sonify.normfile import NormLogWriter


def test_records_each_optimizer_step_and_the_audio_encodes_the_log(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    # Linear-mapped small norms sit near 200 Hz: 40 ms tones give enough cycles to decode precisely.
    sound = sonify.SoundSettings(mapping="linear", tone_duration=0.04)
    reference = []
    with sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", sound=sound) as son:
        train(model, optimizer, 40, reference=reference)
    log = sonify.load_norms(tmp_path / "run.norms.csv")
    assert log.layer_names == ("0", "2", "4") and len(log) == 40 == son.stats.steps
    np.testing.assert_allclose(log.norms, reference, rtol=1e-6)
    audio, rate = soundfile.read(tmp_path / "run.wav", dtype="float32")
    synth = sound.synthesizer(3)
    assert len(audio) == 40 * synth.step_samples and soundfile.info(tmp_path / "run.wav").subtype == "FLOAT"
    decoded = decode_tones(audio, rate, 3, synth.tone_samples, synth.gap_samples)
    np.testing.assert_allclose(sound.pitch_map().inverse(decoded), log.norms, atol=0.01)
    assert np.abs(np.diff(audio)).max() <= 0.05


def test_default_log_map_decodes_too(tmp_path):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav") as son:
        train(model, optimizer, 20)
    audio, rate = soundfile.read(son.audio_path, dtype="float32")
    synth = son.sound.synthesizer(3)
    decoded = decode_tones(audio, rate, 3, synth.tone_samples, synth.gap_samples)
    log = sonify.load_norms(son.log_path)
    np.testing.assert_allclose(son.sound.pitch_map().inverse(decoded), log.norms, rtol=0.05)


def test_loop_without_optimizer_calls_step(tmp_path):
    model = make_model()
    with sonify.Sonifier(model, out=tmp_path / "manual.wav", audio=False) as son:
        for _ in range(3):
            model.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            son.step()
    assert len(sonify.load_norms(son.log_path)) == 3 and not son.audio_path.exists()


def test_misused_step_warns_once_and_never_raises_into_training(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "x.wav")
    with pytest.warns(SonifyWarning, match=r"optimizer\.step") as caught:
        son.step()
        son.step()
    assert len(caught) == 1 and son.steps == 0  # nothing recorded twice
    son.close()
    son.close()  # idempotent
    other = sonify.Sonifier(model, out=tmp_path / "y.wav")
    other.close()
    with pytest.warns(SonifyWarning, match="closed"):
        other.step()
    assert other.steps == 0


def test_closed_sonifier_leaves_model_and_optimizer_as_before(tmp_path):
    plain_model, model = make_model(), make_model()
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hooks_before = dict(optimizer._optimizer_step_pre_hooks), dict(optimizer._optimizer_step_post_hooks)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "same.wav"):
        train(model, optimizer, 10)
    train(plain_model, plain_opt, 10)
    assert (dict(optimizer._optimizer_step_pre_hooks), dict(optimizer._optimizer_step_post_hooks)) == hooks_before
    for mine, theirs in zip(model.parameters(), plain_model.parameters()):
        assert torch.equal(mine, theirs)
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())
    train(model, optimizer, 2)  # still usable, records nothing more
    assert len(sonify.load_norms(tmp_path / "same.norms.csv")) == 10


def test_nan_steps_warn_once_sound_the_alarm_and_are_summarised(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "nan.wav")
    with pytest.warns(SonifyWarning, match="step 4: gradient norm of 2 is NaN/Inf") as record, son:
        train(model, optimizer, 8, nan_at=4)
    assert sum("NaN/Inf" in str(w.message) for w in record) == 1
    assert son.stats.first_nonfinite_step == 4 and son.stats.nonfinite_steps == 5  # NaN weights from step 4 on
    audio, _ = soundfile.read(son.audio_path, dtype="float32")
    assert np.isfinite(audio).all()
    summary = sonify.load_norms(son.log_path).metadata["summary"]
    assert summary["first_nonfinite_step"] == 4 and summary["first_nonfinite_layers"] == ["2"]


def test_frozen_or_unused_selected_layer_warns_and_rests(tmp_path):
    model = make_model()
    model[4].requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "f.wav", layers=["0", "2", "4"])
    with pytest.warns(SonifyWarning, match="layer '4' has no gradient"), son:
        train(model, optimizer, 3)
    log = sonify.load_norms(son.log_path)
    assert log.missing[:, 2].all() and not log.nonfinite.any()
    assert son.stats.missing_counts.tolist() == [0, 0, 3]


def test_log_is_flushed_within_a_second(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "live.wav") as son:
        train(model, optimizer, 5)
        time.sleep(1.0)
        rows = son.log_path.read_text().splitlines()
    assert len(rows) == 1 + 5


def test_a_failing_disk_stops_recording_but_not_training(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = NormLogWriter.append

    def failing_append(self, *args):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return original(self, *args)

    monkeypatch.setattr(NormLogWriter, "append", failing_append)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with sonify.Sonifier(model, optimizer, out=tmp_path / "full.wav", flush_interval=0.05):
            train(model, optimizer, 3)
            time.sleep(0.3)
            train(model, optimizer, 3)
            time.sleep(0.3)
            train(model, optimizer, 3)
    messages = [str(w.message) for w in caught if "stopped its norm log" in str(w.message)]
    assert len(messages) == 1 and "No space left" in messages[0] and "training continues" in messages[0]
    # The log keeps its first block; the audio, another sink, goes on to the end.
    assert 1 <= len(sonify.load_norms(tmp_path / "full.norms.csv")) < 9
    assert soundfile.info(tmp_path / "full.wav").frames == 9 * sonify.SoundSettings().synthesizer(3).step_samples


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / "blocker").write_text("")
    with pytest.raises(SonifyError, match="is a file, not a folder"):
        sonify.Sonifier(make_model(), out=tmp_path / "blocker" / "run.wav")


KILLED_RUN = textwrap.dedent(
    """
    import sys, torch, sonify
    from torch import nn
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with sonify.Sonifier(model, opt, out=sys.argv[1], flush_interval=0.2):
        while True:
            opt.zero_grad()
            model(torch.randn(32, 8)).square().mean().backward()
            opt.step()
    """
)


def test_killed_run_keeps_its_log_and_render_rebuilds_the_audio(tmp_path):
    out = tmp_path / "killed.wav"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)], cwd=ROOT)
    log_file = tmp_path / "killed.norms.csv"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log_file.exists() and log_file.read_text().count("\n") > 200:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        rows_seen = log_file.read_text().count("\n") - 1
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL and rows_seen > 200
    log = sonify.load_norms(log_file)
    assert len(log) >= rows_seen and log.steps.tolist() == list(range(1, len(log) + 1))
    result = run_sonify("render", str(log_file), "-o", str(tmp_path / "rebuilt.wav"), "--no-progress")
    assert result.returncode == 0, result.stderr
    info = soundfile.info(tmp_path / "rebuilt.wav")
    assert info.frames == len(log) * sonify.SoundSettings().synthesizer(2).step_samples


# -- live sound -------------------------------------------------------------


def wav_frames(path, son):
    audio, _ = soundfile.read(path, dtype="float32")
    step = son._live.player.synth.step_samples if son._live else son.sound.synthesizer(len(son.layers)).step_samples
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def test_paced_live_run_plays_every_step_as_written_to_the_wav(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    out = tmp_path / "run.wav"
    with (
        pytest.warns(SonifyWarning, match="step 7"),  # outermost: the recorder thread warns before close returns
        sound_server.capture() as recording,
        sonify.Sonifier(model, optimizer, out=out, live=True, pace=True) as son,
    ):
        train(model, optimizer, steps=12, nan_at=7)
    assert son.live_report.played == 12 and son.live_report.skipped == 0 and son.live_report.underruns == 0
    frames = wav_frames(tmp_path / "run.wav", son)
    assert len(frames) == 12
    frames_played(recording.samples, frames)  # every step, in order, the same samples as the file
    log = sonify.load_norms(tmp_path / "run.norms.csv")
    assert log.metadata["summary"]["live"]["played"] == 12


def test_live_run_faster_than_the_sound_keeps_every_step_in_the_files(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live=True, output_device="pulse") as son:
        train(model, optimizer, steps=300)
    report = son.live_report
    assert report.played + report.skipped == 300 and report.skipped > 0 and report.underruns == 0
    assert len(sonify.load_norms(tmp_path / "run.norms.csv")) == 300
    assert len(wav_frames(tmp_path / "run.wav", son)) == 300


def test_live_only_writes_no_files(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live=True, audio=False, norm_log=False) as son:
        train(model, optimizer, steps=5)
    assert son.files == [] and not list(tmp_path.iterdir()) and son.stats.steps == 5


def test_live_errors_come_before_any_file_is_written(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(SonifyError, match="no output device matches 'nowhere'"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live=True, output_device="nowhere")
    with pytest.raises(SonifyError, match=r"pace=True .* needs live=True"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", pace=True)
    assert not list(tmp_path.iterdir())


def test_an_exception_in_the_loop_stops_the_sound_at_once_and_keeps_the_files(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with (
        pytest.raises(KeyboardInterrupt),
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live=True, pace=True) as son,
    ):
        train(model, optimizer, steps=30)
        raise KeyboardInterrupt
    assert son.live_report.played < 30  # the paced sound was cut, not played out
    assert len(sonify.load_norms(tmp_path / "run.norms.csv")) == 30
    assert len(wav_frames(tmp_path / "run.wav", son)) == 30


# -- accumulation, clipping, mixed precision ---------------------------------------


def layer_norms(model):
    return [
        torch.linalg.vector_norm(torch.cat([p.grad.flatten().double() for p in m.parameters()])).item()
        for m in (model[0], model[2], model[4])
    ]


def test_gradient_accumulation_gives_one_row_per_optimizer_step(tmp_path):
    model, reference = make_model(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(3)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "acc.wav"):
        for _ in range(4):
            optimizer.zero_grad()
            for _ in range(3):  # three micro-batches per step
                (model(torch.randn(8, 8, generator=generator)).square().mean() / 3).backward()
            reference.append(layer_norms(model))
            optimizer.step()
    np.testing.assert_allclose(sonify.load_norms(tmp_path / "acc.norms.csv").norms, reference, rtol=1e-5)


def test_norms_after_clipping_by_default_and_before_with_an_explicit_step(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before, after = [], []
    with (
        sonify.Sonifier(model, optimizer, out=tmp_path / "post.wav"),
        sonify.Sonifier(model, out=tmp_path / "pre.wav") as pre_clip,
    ):
        for _ in range(3):
            optimizer.zero_grad()
            (100 * model(torch.randn(8, 8)).square().mean()).backward()
            before.append(layer_norms(model))
            pre_clip.step()  # placed before clipping: the raw norms
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            after.append(layer_norms(model))
            optimizer.step()  # the optimizer's hook: the clipped norms it applies
    np.testing.assert_allclose(sonify.load_norms(tmp_path / "pre.norms.csv").norms, before, rtol=1e-5)
    np.testing.assert_allclose(sonify.load_norms(tmp_path / "post.norms.csv").norms, after, rtol=1e-5)
    assert np.linalg.norm(after, axis=1) == pytest.approx(0.5, rel=1e-4)


def test_amp_scaler_norms_are_unscaled_and_skipped_steps_sound_the_alarm(tmp_path):
    model, reference = make_model(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    applied = []
    optimizer.register_step_post_hook(lambda *_: applied.append(True))
    with (
        pytest.warns(SonifyWarning, match="step 3"),
        sonify.Sonifier(model, optimizer, out=tmp_path / "amp.wav", scaler=scaler) as son,
    ):
        for step in range(1, 6):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(torch.randn(8, 8)).float().square().mean()
            scaler.scale(loss).backward()
            if step == 3:
                model[2].weight.grad[0, 0] = float("inf")  # the scaler will skip this step
            reference.append([n / scaler.get_scale() for n in layer_norms(model)])
            scaler.step(optimizer)
            scaler.update()
    assert len(applied) == 4  # one step really was skipped by the scaler ...
    log = sonify.load_norms(tmp_path / "amp.norms.csv")
    assert len(log) == 5 and log.nonfinite.any(axis=1).tolist() == [False, False, True, False, False]  # ... and heard
    np.testing.assert_allclose(log.norms, reference, rtol=1e-4)
    assert "step" not in vars(scaler)  # closing restores the scaler
    assert son.stats.nonfinite_steps == 1


# -- the cases that once harmed a run (each a regression test) ----------------------------------


def test_float64_lstm_with_lbfgs_records_the_gradients_each_step_used(tmp_path):
    def make():
        torch.manual_seed(0)
        lstm = nn.LSTM(3, 5, batch_first=True).double()
        return lstm, torch.optim.LBFGS(lstm.parameters(), lr=0.5, max_iter=4)

    inputs = torch.randn(4, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def run(lstm, optimizer, first_calls):
        for _ in range(3):
            calls = []

            def closure(calls=calls):
                optimizer.zero_grad()
                loss = lstm(inputs)[0].square().mean()
                loss.backward()
                if not calls:  # the gradient at the start of the step: the one the step uses first
                    first_calls.append(
                        torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in lstm.parameters()])).item()
                    )
                calls.append(1)
                return loss

            optimizer.step(closure)

    reference = []
    run(*make(), reference)
    lstm, optimizer = make()
    with sonify.Sonifier(lstm, optimizer, out=tmp_path / "lbfgs.wav") as son:
        run(lstm, optimizer, [])
    log = sonify.load_norms(son.log_path)
    assert len(log) == 3 and not log.missing.any()  # one full row per optimizer.step(), the first one too
    np.testing.assert_allclose(log.norms[:, 0], reference, rtol=1e-6)  # float64 norms, no dtype error


def test_one_scaler_shared_by_two_optimizers(tmp_path):
    """PyTorch's multi-optimizer AMP pattern: each Sonifier hears only its own optimizer's steps."""
    g, d = make_model(1), make_model(2)
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.01), torch.optim.SGD(d.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    caught = pytest.warns(SonifyWarning, match="step 3: gradient norm")  # D's skipped step
    caught.__enter__()
    son_g = sonify.Sonifier(g, opt_g, out=tmp_path / "g.wav", scaler=scaler)
    son_d = sonify.Sonifier(d, opt_d, out=tmp_path / "d.wav", scaler=scaler)
    only_g = sonify.Sonifier(make_model(3), out=tmp_path / "unrelated.wav")  # no scaler: untouched by it
    for step in range(4):
        for model, optimizer in ((g, opt_g), (d, opt_d)):
            optimizer.zero_grad()
            scaler.scale(model(torch.randn(4, 8)).square().mean()).backward()
            if step == 2 and model is d:
                d[0].weight.grad[0, 0] = float("inf")  # the scaler skips D's step 3
        scaler.step(opt_g)
        scaler.step(opt_d)
        scaler.update()
    son_g.close()  # closing the first one must leave the second working
    assert callable(scaler.step)
    son_d.close()
    only_g.close()
    caught.__exit__(None, None, None)
    assert "step" not in vars(scaler)  # the class's own step shows through again
    log_g, log_d = sonify.load_norms(tmp_path / "g.norms.csv"), sonify.load_norms(tmp_path / "d.norms.csv")
    assert len(log_g) == 4 and not log_g.nonfinite.any()  # no fake "skipped" rows from D's steps
    assert len(log_d) == 4 and log_d.nonfinite.any(axis=1).tolist() == [False, False, True, False]


def test_a_path_that_holds_a_run_is_refused_and_left_intact(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "keep" / "run.wav"):
        train(model, optimizer, 5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "keep").iterdir()}
    for out, message in (
        ("run.norms.csv", r"\.wav or \.flac"),
        ("run", r"\.wav or \.flac"),
        ("run.wav", "already exists"),
        ("run.flac", "run.norms.csv already exists"),  # a new audio name whose log would take the old one's
    ):
        with pytest.raises(sonify.SonifyParameterError, match=message):
            sonify.Sonifier(model, optimizer, out=tmp_path / "keep" / out)
    assert {p.name: p.read_bytes() for p in (tmp_path / "keep").iterdir()} == before
    with sonify.Sonifier(model, optimizer, out=tmp_path / "keep" / "run.wav", overwrite=True) as son:  # on request
        train(model, optimizer, 2)
    assert son.stats.steps == 2 and len(sonify.load_norms(son.log_path)) == 2


def test_default_names_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g, d = make_model(1), make_model(2)
    with sonify.Sonifier(g) as first, sonify.Sonifier(d) as second:  # a GAN's two halves, in the same second
        for son, model in ((first, g), (second, d)):
            model(torch.randn(2, 8)).sum().backward()
            son.step()
    assert first.audio_path != second.audio_path
    assert len(list((tmp_path / "audio_out").glob("*.norms.csv"))) == 2
    assert all(len(sonify.load_norms(son.log_path)) == 1 for son in (first, second))


def test_a_stale_sonifier_never_touches_the_next_runs_files(tmp_path):
    from sonify.integrations._holder import _SonifierHolder

    holder = _SonifierHolder(tmp_path / "run.wav")
    model = make_model()
    holder._start(model)  # run 1 ... which dies without telling the callback (no exception event)
    stale = holder.sonifier
    for _ in range(3):
        model(torch.randn(2, 8)).sum().backward()
        holder._step()
    holder._start(model)  # the user re-runs training
    fresh = holder.sonifier
    assert stale._closed and fresh.audio_path == tmp_path / "run-2.wav"
    for _ in range(2):
        model(torch.randn(2, 8)).sum().backward()
        holder._step()
    holder._stop()
    stale.close()  # as at interpreter exit: nothing left to do, and nothing of run 2 is touched
    assert len(sonify.load_norms(tmp_path / "run.norms.csv")) == 3
    assert len(sonify.load_norms(tmp_path / "run-2.norms.csv")) == 2
    assert soundfile.info(tmp_path / "run-2.wav").frames == 2 * sonify.SoundSettings().synthesizer(3).step_samples


def test_a_summary_replaced_by_another_program_is_left_alone(tmp_path):
    model = make_model()
    with (
        pytest.warns(SonifyWarning, match="replaced by another program"),
        sonify.Sonifier(model, out=tmp_path / "run.wav") as son,
    ):
        (tmp_path / "other.json").write_text('{"theirs": true}')
        os.replace(tmp_path / "other.json", son.meta_path)
    assert son.meta_path.read_text() == '{"theirs": true}'


def test_parameters_replaced_by_load_state_dict_assign_are_followed(tmp_path):
    model, reference = make_model(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, optimizer, 1)
    son = sonify.Sonifier(model, out=tmp_path / "after.wav")
    # New Parameter objects; the old ones keep their (stale) gradients, which must not be heard.
    model.load_state_dict(make_model(5).state_dict(), assign=True)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(8, 8, generator=generator)).square().mean().backward()
        reference.append(
            [
                torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()])).item()
                for m in (model[0], model[2], model[4])
            ]
        )
        son.step()
    son.close()
    np.testing.assert_allclose(sonify.load_norms(son.log_path).norms, reference, rtol=1e-5)


def test_a_param_group_added_after_attaching_is_reported_once(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "grow.wav"):
        model.add_module("head", nn.Linear(2, 2))
        optimizer.add_param_group({"params": model.head.parameters()})
        with pytest.warns(
            SonifyWarning, match=r"add_param_group added 2 parameters .*head\.weight, head\.bias"
        ) as caught:
            train(model, optimizer, 3)
    assert len([w for w in caught if "add_param_group" in str(w.message)]) == 1


def test_a_wrapped_optimizer_is_looked_through(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    model, reference = make_model(), []
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    generator = torch.Generator().manual_seed(0)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "accelerate.wav") as son:
        for micro in range(6):
            with accelerator.accumulate(model):
                accelerator.backward(model(torch.randn(4, 8, generator=generator)).square().mean())
                if micro % 2 == 1:  # the accumulated gradient the optimizer applies
                    reference.append(layer_norms(model))
                optimizer.step()
                optimizer.zero_grad()
    log = sonify.load_norms(son.log_path)
    assert len(log) == 3  # one row per real step: the micro-steps Accelerate skips are not recorded
    np.testing.assert_allclose(log.norms, reference, rtol=1e-5)


@pytest.mark.parametrize(
    ("option", "value"), [("flush_interval", 0), ("flush_interval", float("nan")), ("latency", -1.0)]
)
def test_bad_timing_options_are_refused_before_anything_is_created(tmp_path, option, value):
    with pytest.raises(sonify.SonifyParameterError, match=option):
        sonify.Sonifier(make_model(), out=tmp_path / "x.wav", **{option: value})
    assert not list(tmp_path.iterdir())


def test_live_stereo_closes_cleanly(tmp_path, sound_server):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with sonify.Sonifier(
        model, optimizer, out=tmp_path / "stereo.wav", live=True, sound=sonify.SoundSettings(stereo=True)
    ) as son:
        train(model, optimizer, 5)
    assert son.failures == {} and son.live_report.failure is None and son.live_report.played >= 1
    assert soundfile.info(son.audio_path).channels == 2


def test_warnings_turned_into_errors_never_raise_into_training(tmp_path, capsys):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under `python -W error` or a strict test suite
        with sonify.Sonifier(model, optimizer, out=tmp_path / "strict.wav", flush_interval=0.01) as son:
            train(model, optimizer, 3, nan_at=2)
            time.sleep(0.2)  # the recorder finds the NaN; the next step would report it
            train(model, optimizer, 2)
            son.step()  # misuse too: ignored with a warning, not an exception
    assert son.stats.steps == 5 and son.stats.first_nonfinite_step == 2
    printed = capsys.readouterr().err
    assert "sonify: warning: step 2: gradient norm" in printed and "son.step() ignored" in printed


def test_the_old_device_keyword_still_works_with_a_deprecation_warning(tmp_path):
    model = make_model()
    with pytest.warns(DeprecationWarning, match="device= is now output_device="):
        son = sonify.Sonifier(model, out=tmp_path / "a.wav", device="pulse")  # not live: the card is not opened
    son.close()
    with pytest.raises(sonify.SonifyParameterError, match="give only output_device="):
        sonify.Sonifier(model, out=tmp_path / "b.wav", device=1, output_device=2)


def test_a_lightning_optimizer_is_looked_through(tmp_path, working_torchvision):
    from lightning.pytorch.core import optimizer as lightning

    model, reference = make_model(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = lightning.LightningOptimizer(optimizer)
    with sonify.Sonifier(model, wrapped, out=tmp_path / "lightning.wav") as son:
        train(model, optimizer, 3, reference=reference)  # Lightning's strategy steps the real optimizer
    np.testing.assert_allclose(sonify.load_norms(son.log_path).norms, reference, rtol=1e-5)


ZERO = textwrap.dedent(
    """
    import sys, numpy as np, torch, torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    import sonify
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.SGD, lr=0.1)
    reference = []
    with sonify.Sonifier(model, optimizer, out=sys.argv[1]) as son:
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(4, 8)).square().mean().backward()
            reference.append([torch.cat([p.grad.flatten() for p in m.parameters()]).norm().item() for m in (model[0], model[2])])
            optimizer.step()
    log = sonify.load_norms(son.log_path)
    np.testing.assert_allclose(log.norms, reference, rtol=1e-5)
    print("rows", len(log))
    dist.destroy_process_group()
    """
)


def test_a_zero_redundancy_optimizer_is_heard(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", ZERO, str(tmp_path / "zero.wav"), str(port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "rows 3" in result.stdout, result.stderr[-2000:]


def test_a_compiled_optimizer_step_is_heard_with_exact_norms(tmp_path):
    model, reference = make_model(), []
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    class CompiledStep:  # what the loop sees: optimizer.step compiled with torch.compile
        zero_grad = optimizer.zero_grad
        step = staticmethod(torch.compile(optimizer.step))

    with sonify.Sonifier(model, optimizer, out=tmp_path / "compiled.wav") as son:
        train(model, CompiledStep(), 4, reference=reference)
    assert son.failures == {}
    np.testing.assert_allclose(sonify.load_norms(son.log_path).norms, reference, rtol=1e-5)


@pytest.mark.parametrize("during_backward", [True, False])
def test_norms_during_backward_or_at_the_step_are_those_the_step_applies(tmp_path, during_backward):
    model, reference = make_model(), []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(3)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", during_backward=during_backward)
    assert son._capture.early is during_backward
    with son:
        for _ in range(4):
            optimizer.zero_grad()
            for _ in range(2):  # gradient accumulation: two backward passes per step
                model(torch.randn(8, 8, generator=generator)).square().mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)  # in place, after the hooks ran
            reference.append([torch.cat([p.grad.flatten() for p in m.parameters()]).norm().item() for m in model[::2]])
            optimizer.step()
    np.testing.assert_allclose(sonify.load_norms(son.log_path).norms, reference, rtol=1e-5)
    assert not any(p._post_accumulate_grad_hooks for p in model.parameters())  # detached at close


def test_live_sound_survives_pauses_in_training(tmp_path, sound_server):
    """Evaluation and checkpoints pause a run for seconds: silence then, and the steps after it are heard."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pauses = {4: 3.0, 9: 1.0, 13: 5.5}  # seconds of pause after these steps (longer than the 2 s stall limit)
    with (
        sound_server.capture() as recording,
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live=True, output_device="pulse") as son,
    ):
        generator = torch.Generator().manual_seed(1)
        for step in range(1, 17):
            optimizer.zero_grad()
            model(torch.randn(32, 8, generator=generator)).square().mean().backward()
            optimizer.step()
            time.sleep(0.1)  # slower than the sound: every step is played
            time.sleep(pauses.get(step, 0.0))
    report = son.live_report
    assert report.failure is None and son.failures == {}
    assert report.played == 16 and report.skipped == 0
    frames_played(recording.samples, wav_frames(tmp_path / "run.wav", son))  # the steps after each pause too


def test_a_run_longer_than_max_audio_seconds_is_condensed_into_it_at_the_end(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    out = tmp_path / "run.wav"
    with (
        pytest.warns(SonifyWarning, match="step 150"),
        sonify.Sonifier(model, optimizer, out=out, max_audio_seconds=1.0, flush_interval=0.01) as son,
    ):
        train(model, optimizer, steps=120)
        deadline = time.monotonic() + 60
        while len(sonify.load_norms(son.log_path, drop_incomplete=True)) < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert soundfile.info(out).duration <= 1.0  # while training: full resolution, up to the bound
        train(model, optimizer, steps=80, nan_at=30)  # step 150 is NaN
    assert len(sonify.load_norms(son.log_path)) == 200  # the norm log keeps every step
    audio, rate = soundfile.read(out, dtype="float32")
    assert 0.5 <= len(audio) / rate <= 1.0 and son.audio_condensed["steps"] == 200
    windows = len(audio) // son._audio.pipeline.sounder.synth.step_samples
    assert son.audio_condensed["steps_per_tone"] * windows >= 200  # the whole run, condensed
    slots = audio.reshape(windows, -1)[:, : 3 * son._audio.pipeline.sounder.synth.tone_samples].reshape(windows * 3, -1)
    assert sum(is_alarm(slot) for slot in slots) >= 1  # the NaN of step 150 is heard in the condensed file
    assert sonify.load_norms(son.log_path).metadata["summary"]["audio_condensed"]["steps"] == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.norms.csv", "run.norms.json", "run.wav"]


def test_max_audio_seconds_none_keeps_every_step_and_bad_values_are_refused(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with sonify.Sonifier(model, optimizer, out=tmp_path / "full.wav", max_audio_seconds=None) as son:
        train(model, optimizer, steps=40)
    assert soundfile.info(tmp_path / "full.wav").frames == 40 * son._audio.pipeline.sounder.synth.step_samples
    assert son.audio_condensed is None
    with pytest.raises(sonify.SonifyParameterError, match="max_audio_seconds=0 is invalid"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "bad.wav", max_audio_seconds=0)
    assert not (tmp_path / "bad.wav").exists()


def test_norm_range_auto_makes_the_audio_from_the_whole_log_at_close(tmp_path):
    """The one two-pass of a fitted range: record the log, render it once when the run ends (CLI and library)."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    sound = sonify.SoundSettings(norm_range="auto")
    with sonify.Sonifier(model, optimizer, out=tmp_path / "fit.wav", sound=sound) as son:
        assert not (tmp_path / "fit.wav").exists()  # nothing to fit to yet
        train(model, optimizer, 30)
    assert son.files == [tmp_path / "fit.norms.csv", tmp_path / "fit.norms.json", tmp_path / "fit.wav"]
    written, _ = soundfile.read(tmp_path / "fit.wav", dtype="float32")
    sonify.render(tmp_path / "fit.norms.csv", tmp_path / "again.wav", sound=sound)
    expected, _ = soundfile.read(tmp_path / "again.wav", dtype="float32")
    np.testing.assert_array_equal(written, expected)
    fitted = sound.pitch_map(sonify.load_norms(tmp_path / "fit.norms.csv").norms)
    assert fitted.norm_range != sonify.SoundSettings().pitch_map().norm_range  # really fitted to this run
    with pytest.raises(sonify.SonifyParameterError, match="norm log when the run ends"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "x.wav", sound=sound, norm_log=False)
    assert not (tmp_path / "x.wav").exists()


def test_a_dead_layer_warns_once_naming_the_step_it_died(tmp_path):
    from sonify.stats import DEAD_STEPS

    model = make_model()
    with torch.no_grad():
        model[0].bias.fill_(-1e3)  # every unit of the first layer saturates: tanh' = 0, its gradient is exactly 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "dead.wav", live=False)
    with warnings.catch_warnings(record=True) as record, son:
        warnings.simplefilter("always")
        train(model, optimizer, DEAD_STEPS + 10)
    dead = [str(w.message) for w in record if "is dead" in str(w.message)]
    assert len(dead) == 1 and "layer '0' is dead" in dead[0] and "since step 1 " in dead[0]
    summary = sonify.load_norms(son.log_path).metadata["summary"]
    assert summary["dead_since"] == {"0": 1} and summary["zero_steps"]["0"] == DEAD_STEPS + 10


def test_live_sound_plays_every_new_cue(tmp_path, sound_server):
    from helpers import decode_cells

    model = make_model()
    with torch.no_grad():
        model[0].bias.fill_(-1e3)  # layer 0 is dead: its norm is exactly zero at every step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: each step's scale alone decides
    scale = {3: 1e9, 5: 1e-10}  # step 3 off the top of the map, step 5 below its bottom
    with (
        warnings.catch_warnings(),
        sound_server.capture() as recording,
        sonify.Sonifier(model, optimizer, out=tmp_path / "cues.wav", live=True, pace=True) as son,
    ):
        warnings.simplefilter("ignore")  # the NaN and the dead layer warn; that is tested elsewhere
        generator = torch.Generator().manual_seed(0)
        for step in range(1, 9):
            optimizer.zero_grad()
            loss = model(torch.randn(32, 8, generator=generator)).square().mean() * scale.get(step, 1.0)
            loss.backward()
            if step == 8:  # the last step: lr 0 times NaN would make every later step NaN
                model[4].weight.grad[0, 0] = float("nan")
            optimizer.step()
    assert son.live_report.played == 8 and son.live_report.skipped == 0
    frames = wav_frames(tmp_path / "cues.wav", son)
    starts = frames_played(recording.samples, frames)  # the sound card got the file's samples, step for step
    heard = np.concatenate([recording.samples[s : s + len(f)] for s, f in zip(starts, frames)])
    states, _ = decode_cells(heard, son.sound.synthesizer(3))
    assert (states[:, 0] == "ZERO").all()
    assert states[2, 1:].tolist() == ["ABOVE", "ABOVE"] and states[4, 1:].tolist() == ["BELOW", "BELOW"]
    assert states[7, 2] == "ALARM"
    assert set(states[[0, 1, 3, 5, 6], 1:].ravel()) <= {"TONE", "ACCENT"}


def test_the_relative_map_sounds_the_same_while_training_as_rendered_afterwards(tmp_path):
    """Homes are learnt from the run in order: the recorder's blocks and a whole-log render agree exactly."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    sound = sonify.SoundSettings(mapping="relative")
    with sonify.Sonifier(model, optimizer, out=tmp_path / "home.wav", sound=sound, flush_interval=0.01) as son:
        train(model, optimizer, 60)  # in several blocks on the recorder's thread (it wakes every 10 ms)
    written, _ = soundfile.read(tmp_path / "home.wav", dtype="float32")
    sonify.render(tmp_path / "home.norms.csv", tmp_path / "again.wav", sound=sound)
    expected, _ = soundfile.read(tmp_path / "again.wav", dtype="float32")
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-6)
    summary = sonify.load_norms(son.log_path).metadata["summary"]
    assert summary["steps_above_map"] == {name: 0 for name in summary["steps_above_map"]}  # a calm run stays home
