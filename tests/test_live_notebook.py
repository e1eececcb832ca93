"""The live notebook player (``Sonifier(..., live="notebook")``): real kernels driven by ``jupyter_client``.

The kernel's messages are what any front end (JupyterLab, Notebook 7, VS
Code, Colab) receives; the test in a real JupyterLab and chromium, with the
sound recorded, is in ``test_live_notebook_browser.py``.
"""

from __future__ import annotations

import re
import textwrap
from datetime import datetime

import numpy as np
import pytest

import sonify
from helpers.kernels import NAN_AT, Cell, in_process_kernel, kernel, training_cell
from sonify.live_notebook import SEND_INTERVAL, player_bundle
from sonify.normfile import read_csv_log
from sonify.score import ToneKind


def joined(batches):
    return {key: np.concatenate([b[key] for b in batches]) for key in ("steps", "frequency", "gain", "kind", "norms")}


def assert_decodes_to_the_log(batches, log_path):
    """The batches hold every step of the norm log once, in order, with the log's norms and the one sound path's score."""
    log = read_csv_log(log_path)
    got = joined(batches)
    np.testing.assert_array_equal(got["steps"], log.steps)
    finite = np.isfinite(log.norms) & ~log.missing
    np.testing.assert_allclose(got["norms"][finite], log.norms[finite], rtol=1e-9)
    assert np.isnan(got["norms"][~finite]).all()
    score = sonify.SoundSettings().sounder(len(log.layer_names)).score(log.norms, log.missing, steps=log.steps)
    np.testing.assert_array_equal(got["kind"], score.kind)
    np.testing.assert_allclose(got["frequency"], score.frequency, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["gain"], score.gain, rtol=1e-12)
    alarms = got["steps"][(got["kind"] == ToneKind.ALARM).any(axis=1)]
    assert alarms.tolist() == [NAN_AT]  # the NaN step sounds the alarm


def assert_live(cell: Cell, batches):
    """Batches came while the cell trained (before its halfway print), and at most about 10 a second."""
    assert cell.error is None, cell.error
    halfway = next(
        i for i, m in enumerate(cell.messages) if m["msg_type"] == "stream" and "halfway" in m["content"]["text"]
    )
    assert batches[0]["position"] < halfway, "no steps reached the front end before the cell was half done"
    assert all(b["position"] < cell.idle for b in batches)
    assert len(batches) >= 5, f"{len(batches)} messages: not a live stream"
    dates = [datetime.fromisoformat(str(b["date"])).timestamp() for b in batches]
    gaps = np.diff(dates[:-1])  # the last one is the run's end: sent at once
    assert gaps.min() >= 0.9 * SEND_INTERVAL, f"messages {gaps.min():.3f} s apart"


def test_the_player_code_is_one_module_built_from_the_pages_modules():
    for last, export in (
        ("widget.js", "export default { render };"),
        ("display.js", "export function mount(id, run) {"),
    ):
        code = player_bundle(last)
        assert not re.search(r"^\s*import\b", code, re.MULTILINE), "a relative import was left in the bundle"
        assert re.findall(r"^export .*", code, re.MULTILINE) == [export]
        assert "function createPlayer" in code and "class Synth" in code  # the serve page's own player and synth


def test_a_cell_streams_the_score_to_the_widget_while_it_trains(tmp_path):
    with kernel(tmp_path) as k:
        cell = k.run(training_cell(tmp_path / "run.wav"))
    assert "trained 40" in cell.stdout, cell.stderr + (cell.error or "")
    opened = [m for m in cell.of_type("comm_open") if m["content"]["data"]["state"].get("_model_name") == "AnyModel"]
    assert len(opened) == 1
    state = opened[0]["content"]["data"]["state"]
    assert state["run"]["layers"] == ["0", "2", "3"] and state["run"]["instrument"]["step_samples"] > 0
    assert "createPlayer" in state["_esm"]
    batches = cell.widget_steps()
    assert_live(cell, batches)
    assert_decodes_to_the_log(batches, tmp_path / "run.norms.csv")
    # At the end: the status says so, and the replay is the whole run as a WAV.
    updates = [m for m in cell.of_type("comm_msg") if m["content"]["data"].get("method") == "update"]
    final = updates[-1]
    assert final["content"]["data"]["state"]["status"]["state"] == "ended"
    assert bytes(final["buffers"][0])[:4] == b"RIFF" and "40 steps x 3 layers, NaN/Inf from step 25" in str(
        final["content"]
    )
    assert "sonify" not in cell.stderr  # no warning: nothing fell back


def test_a_slow_step_is_sent_at_once_not_when_the_next_step_comes(tmp_path):
    # A large model's step takes seconds; sending only at the next step would delay every step's sound by a
    # step. Outside Colab the recorder's thread sends what the cell's thread has left waiting.
    code = textwrap.dedent(
        f"""
        import time, torch, sonify
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        made = {{}}
        with sonify.Sonifier(model, optimizer, out={str(tmp_path / "slow.wav")!r}, live="notebook"):
            for step in range(1, 6):
                optimizer.zero_grad()
                model(torch.randn(8, 4)).sum().backward()
                optimizer.step()
                made[step] = time.time()
                time.sleep(1.5)
        print("made", made)
        """
    )
    with kernel(tmp_path) as k:
        cell = k.run(code)
    assert cell.error is None, cell.error
    made = eval(cell.stdout.split("made", 1)[1])
    delays = {}
    for batch in cell.widget_steps():
        sent = datetime.fromisoformat(str(batch["date"])).timestamp()
        for step in batch["steps"].tolist():
            delays[step] = sent - made[step]
    assert sorted(delays) == list(range(1, 6))
    assert max(delays.values()) < 1.0, delays  # the recorder's half second, not the next step's 1.5 s


def test_without_anywidget_the_display_updates_play_with_one_notice(tmp_path):
    # The kernel cannot import anywidget (as on a front end without the widget machinery, or before the extra
    # is installed): the player is an HTML output, and each batch an update of a second output.
    with kernel(tmp_path) as k:
        cell = k.run(training_cell(tmp_path / "run.wav", before="import sys; sys.modules['anywidget'] = None"))
    assert "trained 40" in cell.stdout, cell.stderr + (cell.error or "")
    notices = [line for line in cell.stderr.splitlines() if "SonifyWarning" in line and "anywidget" in line]
    assert len(notices) == 1 and "pip install 'sonify[notebook]'" in notices[0] and "restart the kernel" in notices[0]
    assert not cell.of_type("comm_open")
    players = [m for m in cell.of_type("display_data") if "mount(" in m["content"]["data"].get("text/html", "")]
    assert len(players) == 1 and "function createPlayer" in players[0]["content"]["data"]["text/html"]
    batches = cell.display_steps()
    assert_live(cell, batches)
    assert_decodes_to_the_log(batches, tmp_path / "run.norms.csv")
    final = cell.of_type("update_display_data")[-1]["content"]["data"]["text/html"]
    assert "data:audio/wav;base64," in final and '"state":"ended"' in final


def test_colab_gets_its_widget_manager_and_every_send_comes_from_the_cells_thread(tmp_path):
    # A stand-in for google.colab.output, as anywidget's own tests use: Colab shows third-party widgets only
    # through its custom widget manager, and renders no widget update sent from another thread.
    stand_in = textwrap.dedent(
        """
        import sys, types, threading
        colab = types.ModuleType("google.colab.output")
        colab.enabled = 0
        def enable_custom_widget_manager():
            colab.enabled += 1
        colab.enable_custom_widget_manager = enable_custom_widget_manager
        colab._widgets = types.SimpleNamespace(_installed_url="https://colab.example/widgets.js")
        sys.modules["google"] = types.ModuleType("google")
        sys.modules["google.colab"] = types.ModuleType("google.colab")
        sys.modules["google.colab.output"] = colab
        import ipykernel.comm.comm as kernel_comm
        senders = set()
        original_publish = kernel_comm.BaseComm.publish_msg
        def publish_msg(self, *args, **kwargs):
            senders.add(threading.current_thread().name)
            return original_publish(self, *args, **kwargs)
        kernel_comm.BaseComm.publish_msg = publish_msg
        """
    )
    with kernel(tmp_path) as k:
        cell = k.run(
            training_cell(tmp_path / "run.wav", before=stand_in)
            + "print('senders', sorted(senders), 'enabled', colab.enabled)"
        )
    assert "trained 40" in cell.stdout, cell.stderr + (cell.error or "")
    assert "senders ['MainThread'] enabled 1" in cell.stdout
    shown = [
        m for m in cell.of_type("display_data") if "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
    ]
    assert shown[0]["content"]["metadata"]["application/vnd.jupyter.widget-view+json"] == {
        "colab": {"custom_widget_manager": {"url": "https://colab.example/widgets.js"}}
    }
    assert_decodes_to_the_log(cell.widget_steps(), tmp_path / "run.norms.csv")


def test_live_true_without_an_output_device_plays_in_the_notebook_with_one_notice(tmp_path):
    # No PortAudio in this kernel (as on Colab): live=True cannot reach a sound card.
    with kernel(tmp_path) as k:
        cell = k.run(
            training_cell(tmp_path / "run.wav", live="True", before="import sys; sys.modules['sounddevice'] = None")
        )
    assert "trained 40" in cell.stdout, cell.stderr + (cell.error or "")
    notices = [line for line in cell.stderr.splitlines() if "SonifyWarning" in line and "NaN" not in line]
    assert len(notices) == 1 and "no audio output device" in notices[0] and "live='notebook'" in notices[0]
    assert re.match(r"/\S*ipykernel_\d+/\d+\.py:\d+: SonifyWarning", notices[0]), notices[0]  # points at the cell
    assert_decodes_to_the_log(cell.widget_steps(), tmp_path / "run.norms.csv")


def test_live_notebook_outside_a_kernel_is_a_clear_error_before_any_file(tmp_path):
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(sonify.SonifyError, match=r"live='notebook' .* not a notebook kernel; use live=True"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live="notebook")
    with pytest.raises(sonify.SonifyError, match=r"live='speakers' is invalid; give True .*'notebook'"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live="speakers")
    with pytest.raises(sonify.SonifyError, match=r"pace=True .* needs live=True"):
        sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live="notebook", pace=True)
    assert list(tmp_path.iterdir()) == []


# -- in this process, with an in-process kernel (ipykernel's own, for tests): the parts that can fail --


@pytest.fixture
def notebook_kernel():
    """This process as a notebook kernel (real comms, no front end), until the test ends."""
    with in_process_kernel() as started:
        yield started


def small_run(tmp_path, steps=30, **options):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    son = sonify.Sonifier(model, optimizer, out=tmp_path / "run.wav", live="notebook", **options)
    return model, optimizer, son


def train_steps(model, optimizer, steps, pause=0.0):
    import time

    import torch

    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
        time.sleep(pause)


def test_a_front_end_that_goes_away_stops_the_player_alone_with_one_warning(notebook_kernel, tmp_path):
    model, optimizer, son = small_run(tmp_path)
    calls = []

    def gone(*args, **kwargs):
        calls.append(1)
        raise OSError("comm closed")

    stopped = (
        r"live audio stopped at step \d+: the notebook player stopped \(OSError: comm closed\); training continues"
    )
    with pytest.warns(sonify.SonifyWarning, match=stopped) as warned, son:
        train_steps(model, optimizer, 10, pause=0.02)
        son._notebook.transport.widget.send = gone
        train_steps(model, optimizer, 30, pause=0.02)
    assert len(calls) == 1  # tried once, then never again
    assert sum("notebook player" in str(w.message) for w in warned) == 1
    log = read_csv_log(tmp_path / "run.norms.csv")
    assert len(log) == 40 and son.failures == {}  # the files have every step
    assert log.metadata["summary"]["notebook"]["failure"].startswith("the notebook player stopped")


def test_a_player_that_cannot_be_shown_is_one_warning_and_the_run_goes_on(notebook_kernel, tmp_path, monkeypatch):
    import sonify.live_notebook as live_notebook

    def broken(self, run):
        raise RuntimeError("no output area")

    monkeypatch.setattr(live_notebook.WidgetTransport, "open", broken)
    with pytest.warns(
        sonify.SonifyWarning,
        match=r"the notebook player could not be shown \(RuntimeError: no output area\); training goes on",
    ):
        model, optimizer, son = small_run(tmp_path)
    with son:
        train_steps(model, optimizer, 5)
    assert len(read_csv_log(tmp_path / "run.norms.csv")) == 5 and son._notebook is None


def test_the_users_exception_is_theirs_and_the_player_still_ends_with_the_replay(notebook_kernel, tmp_path):
    model, optimizer, son = small_run(tmp_path)
    with pytest.raises(KeyError, match="the user's own"), son:
        train_steps(model, optimizer, 12)
        raise KeyError("the user's own")
    widget = son._notebook.transport.widget
    assert widget.status["state"] == "ended" and widget.replay[:4] == b"RIFF" and widget.caption.startswith("12 steps")
    assert son._notebook.report()["sent_steps"] == 12


def test_a_cell_thread_that_never_comes_by_keeps_a_bounded_backlog(notebook_kernel, monkeypatch):
    # Display updates are sent from the cell's thread only: one busy for minutes in a C call leaves the
    # scored blocks waiting, at most OUTBOX_MESSAGES of them; the oldest go, counted.
    import sonify.live_notebook as live_notebook

    monkeypatch.setattr(live_notebook, "OUTBOX_MESSAGES", 4)
    sent = []

    class Recording:
        name = "display"

        def open(self, run):
            pass

        def send(self, batches):
            sent.extend(step for score, _, _ in batches for step in score.steps.tolist())

        def finish(self, status, wav, caption):
            sent.append(status["state"])

    feed = live_notebook.NotebookFeed(sonify.SoundSettings().sounder(2), ["a", "b"], Recording())
    for block in range(10):  # ten flushes of the recorder, five steps each, and no poll
        steps = np.arange(1, 6) + 5 * block
        feed.add(steps, np.ones((5, 2)), np.zeros((5, 2), bool), np.zeros((5, 2), bool))
    assert sent == []  # nothing left the recorder's thread
    feed.close()
    assert feed.dropped_steps == 30 and sent == [*range(31, 51), "ended"]  # the newest, in order


def test_a_bad_transport_choice_is_one_line_before_any_file(notebook_kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("SONIFY_NOTEBOOK_TRANSPORT", "carrier-pigeon")
    with pytest.raises(
        sonify.SonifyError, match=r"SONIFY_NOTEBOOK_TRANSPORT='carrier-pigeon' is invalid; give 'widget', 'display'"
    ):
        small_run(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_lightning_and_hugging_face_callbacks_play_in_the_notebook(notebook_kernel, tmp_path, working_torchvision):
    import lightning.pytorch as pl
    import torch
    import transformers

    from sonify.integrations.lightning import SonifyCallback
    from sonify.integrations.transformers import SonifyTrainerCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

        def training_step(self, batch, _):
            return self.net(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(48, 4))
    callback = SonifyCallback(out=tmp_path / "pl.wav", live="notebook")
    trainer = pl.Trainer(
        max_steps=6, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=8))
    assert callback.sonifier._notebook.report() == {
        "transport": "widget",
        "sent_steps": 6,
        "dropped_steps": 0,
        "failure": None,
    }

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

        def forward(self, inputs, labels=None):
            logits = self.net(inputs)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, index):
            return {"inputs": torch.randn(4), "labels": torch.tensor(index % 2)}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=5, per_device_train_batch_size=4, report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    hf = SonifyTrainerCallback(out=tmp_path / "hf.wav", live="notebook")
    transformers.Trainer(model=Classifier(), args=args, train_dataset=Rows(), callbacks=[hf]).train()
    assert hf.sonifier._notebook.report()["sent_steps"] == 5


def test_a_package_installed_after_the_kernel_started_is_told_apart(tmp_path, monkeypatch):
    # anywidget pip-installed into a running kernel imports, but the page's widget manager has not loaded it:
    # sonify then plays through display updates and says a restart is needed. Told by the install's RECORD.
    from sonify.live_notebook import _installed_after_start

    info = tmp_path / "latecomer-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: latecomer\nVersion: 1.0\n")
    (info / "RECORD").write_text("latecomer-1.0.dist-info/METADATA,,\nlatecomer-1.0.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _installed_after_start("latecomer")  # written just now, long after this process started
    assert not _installed_after_start("anywidget")  # installed before the tests ran
    assert not _installed_after_start("no-such-package")
