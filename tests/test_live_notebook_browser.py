"""The live notebook player in a real JupyterLab, in Debian's chromium, with its sound recorded.

A cell trains for about 10 s with ``live="notebook"``; Listen is clicked in the
cell's player; the private PulseAudio server's recording must hold the rows
the page played, sample for sample, in order, while the cell was still busy.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

import sonify
from helpers.audio import find_frames, frames_of_rows
from helpers.browser import eval_no_gesture, wait_in_page
from helpers.kernels import jupyter_lab, training_cell
from sonify.normfile import read_csv_log

README_MEDIA = os.environ.get("SONIFY_README_MEDIA")  # set: the player's screenshot goes to docs/notebook.png
TOKEN = "sonify-tests-token"
PLAYER = "window.sonifyPlayers && window.sonifyPlayers[0]"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a folder of notebooks, for the tests of this module."""
    root = tmp_path_factory.mktemp("notebooks")
    with jupyter_lab(root, TOKEN) as base:
        yield base, root


def open_and_run(browser, lab, name, code):
    """A notebook of one cell opened in JupyterLab, its cell run as a user does (click, Shift+Enter)."""
    base, root = lab
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / name)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(90_000)  # JupyterLab is heavy on two busy cores
    # A workspace of its own: JupyterLab would otherwise reopen the notebooks of the tests before it.
    page.goto(f"{base}lab/workspaces/{Path(name).stem}/tree/{name}?token={TOKEN}&reset")
    editor = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first
    editor.wait_for()
    wait_in_page(page, "jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'", 90)
    editor.click()
    page.keyboard.press("Shift+Enter")  # as a user runs a cell: this gives the page user activation
    page.locator(".sonify-listen").wait_for()
    wait_in_page(page, f"{PLAYER} && window.sonifyPlayers[0].state.instrument !== null", 60)
    return page


def test_jupyterlab_plays_the_run_in_the_cell_while_it_trains(browser, sound_server, lab, tmp_path):
    steps, alarms = 100, (70, 85)
    pause = 2 * sonify.SoundSettings().synthesizer(3).step_duration  # training slower than the sound
    code = training_cell(tmp_path / "run.wav", steps=steps, pause=pause, nan_at=alarms)
    page = open_and_run(browser, lab, "train.ipynb", code)
    # Silent until Listen, although the Shift+Enter would let the page play.
    assert eval_no_gesture(page, "window.sonifyPlayers[0].context.state") == "suspended"
    with sound_server.capture() as recording:
        page.click(".sonify-listen")
        wait_in_page(page, "window.sonifyPlayers[0].context.state === 'running'")
        wait_in_page(page, "window.sonifyPlayers[0].state.endedAt !== null", 120)  # the cell finished
        wait_in_page(page, "window.sonifyPlayers[0].state.queue.length === 0")
        # The scheduled sound has played, and gone through chromium's output buffer (2048 frames).
        wait_in_page(page, "window.sonifyPlayers[0].context.currentTime > window.sonifyPlayers[0].state.nextTime + 0.3")
    player = page.evaluate("(() => { const p = window.sonifyPlayers[0]; return { counts: p.counts(), "
                           "rows: p.state.playedRows, endedAt: p.state.endedAt, replay: "
                           "document.querySelector('.sonify-replay audio') !== null }; })()")  # fmt: skip
    if README_MEDIA:
        page.locator(".sonify-player").first.screenshot(path=str(Path(README_MEDIA) / "notebook.png"))
    page.close()

    counts, rows = player["counts"], player["rows"]
    assert counts["receivedSteps"] == list(range(1, steps + 1))  # every step reached the page, in order
    assert "the run ended" in counts["status"] and player["replay"]  # the player became the run's replay
    # What the page played is the run's score from the kernel: the norm log's rows by sonify's sound path.
    log = read_csv_log(tmp_path / "run.norms.csv")
    score = sonify.SoundSettings().sounder(3).score(log.norms, log.missing, steps=log.steps)
    for row in rows:
        index = row["step"] - 1
        if 2 not in row["kind"]:  # (a skipped alarm is carried by the next step played: its kinds change)
            assert row["kind"] == score.kind[index].tolist()
        np.testing.assert_allclose(
            np.array(row["frequency"], float), score.frequency[index], rtol=1e-12, equal_nan=True
        )
    # Listened from the click on: every step after it is due, and played unless the page fell behind.
    played = [row["step"] for row in rows]
    assert played == sorted(played) and played[-1] == steps
    due = steps - played[0] + 1
    assert counts["skipped"] <= due // 10
    assert due >= steps // 2, f"Listen was clicked after step {played[0]}: the player came late"
    found = find_frames(recording.samples, frames_of_rows(rows, sonify.SoundSettings()))
    heard = [row for row, place in zip(rows, found) if place is not None]
    while_busy = [row for row in heard if row["at"] < player["endedAt"]]
    print(
        f"heard {len(heard)} of {due} rows due ({len(while_busy)} before the cell ended); skipped {counts['skipped']}"
    )
    assert len(while_busy) >= 0.9 * due, f"heard {len(while_busy)} of {due} rows while the cell ran"
    places = [place for place in found if place is not None]
    assert places == sorted(places)
    heard_alarms = {row["step"] for row in heard if 2 in row["kind"]}
    assert len(heard_alarms) == len(alarms)  # every alarm (in its own step, or carried by the next one played)


def test_without_widgets_the_display_updates_feed_the_same_player(browser, lab, tmp_path):
    # A kernel told to use display updates (as for a front end without a widget manager): the player is an
    # HTML output whose module script JupyterLab runs, and each batch reaches it through a second output.
    steps = 40
    before = "import os; os.environ['SONIFY_NOTEBOOK_TRANSPORT'] = 'display'\n"
    code = training_cell(tmp_path / "run.wav", steps=steps, pause=0.1, before=before)
    page = open_and_run(browser, lab, "display.ipynb", code)
    wait_in_page(page, "window.sonifyPlayers[0].state.endedArrival !== null", 120)
    state = page.evaluate(
        "(() => { const p = window.sonifyPlayers[0]; return { counts: p.counts(), first: p.state.firstArrival, "
        "ended: p.state.endedArrival, replay: document.querySelector('audio[src^=\"data:audio/wav\"]') !== null }; })()"
    )
    page.close()
    assert state["counts"]["receivedSteps"] == list(range(1, steps + 1))
    assert state["ended"] - state["first"] > 2.0  # rows came while the cell ran (about 4 s), not at its end
    assert "the run ended" in state["counts"]["status"] and state["replay"]
