"""sonify compare: the grid end to end on the offline digits, and comparisons of existing logs."""

import csv

import numpy as np
import pytest
import soundfile

import sonify
from helpers import run_sonify
from sonify.comparison import compare, comparison_figure, marker
from sonify.norms import NormLog


def bursts(samples, rate):
    """Number of separate noise bursts in a stretch of audio."""
    frames = np.abs(samples[: len(samples) // 441 * 441]).reshape(-1, 441).max(axis=1) > 1e-3  # 10 ms frames
    return int(np.sum(frames[1:] & ~frames[:-1]) + frames[0])


def test_grid_end_to_end_with_a_diverging_run(tmp_path):
    out = tmp_path / "grid"
    result = run_sonify(
        "compare",
        "--lr",
        "0.05",
        "--lr",
        "1.0",
        "--batch-size",
        "256",
        "--steps",
        "14",
        "--dataset",
        "digits",
        "-o",
        str(out),
        "--no-progress",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with open(out / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["first NaN/Inf step"] for row in rows] == ["", "13"]  # the diverging run is compared, not an error
    assert all(float(row["final loss"]) > 0 or row["final loss"] == "nan" for row in rows)
    listening, rate = soundfile.read(out / "listen.wav", dtype="float32")
    for index, row in enumerate(rows):
        start = round(float(row["starts at (s)"]) * rate)
        run_audio, _ = soundfile.read(row["audio"], dtype="float32")
        np.testing.assert_array_equal(listening[start : start + len(run_audio)], run_audio)  # the segment is the run
        sign = marker(index, rate)
        assert bursts(listening[start - len(sign) : start], rate) == index + 1  # run k is announced by k bursts
    assert (out / "compare.png").stat().st_size > 10_000 and "| run | steps |" in (out / "summary.md").read_text()
    assert "| run | steps | final loss |" in result.stdout


def two_logs():
    rng = np.random.default_rng(0)
    calm = NormLog.from_array(np.exp(rng.normal(0, 0.3, (40, 3))), ["a", "b", "c"])
    wild = np.exp(np.cumsum(rng.normal(0.4, 0.3, (40, 3)), axis=0))
    wild[30:, 1] = np.nan
    return [calm, NormLog.from_array(wild, ["a", "b", "c"])]


def test_ab_file_puts_one_run_on_each_channel(tmp_path):
    result = compare(two_logs(), tmp_path, names=["calm", "wild"], ab=True, figure=False)
    stereo, _ = soundfile.read(tmp_path / "listen-ab.wav", dtype="float32")
    calm, _ = soundfile.read(tmp_path / "calm.wav", dtype="float32")
    wild, _ = soundfile.read(tmp_path / "wild.wav", dtype="float32")
    np.testing.assert_array_equal(stereo[:, 0], calm)
    np.testing.assert_array_equal(stereo[:, 1], wild)
    assert result.listening.name == "listen-ab.wav" and [r.first_nonfinite_step for r in result.runs] == [None, 31]
    with pytest.raises(sonify.SonifyError, match="needs exactly two runs, not 3"):
        compare([*two_logs(), two_logs()[0]], tmp_path, ab=True)


def test_figure_has_curves_on_a_log_scale_and_spectrograms(tmp_path):
    logs = two_logs()
    result = compare(logs, tmp_path, names=["calm", "wild"], duration=1.0)
    assert result.runs[1].nonfinite_steps == 10 and result.figure.exists()
    fig = comparison_figure(logs, ["calm", "wild"], [run.audio for run in result.runs])
    axes = fig.axes
    assert len(axes) == 4  # (curves, spectrogram) per run
    for curves, spectrum in (axes[0:2], axes[2:4]):
        assert curves.get_yscale() == "log" and curves.get_ylabel() == "gradient norm"
        assert [line.get_label() for line in curves.get_lines()][:3] == ["a", "b", "c"]
        assert spectrum.get_ylabel() == "frequency (Hz)" and spectrum.images
    assert len(axes[0].collections) == 0  # the calm run: neither spikes nor NaN/Inf
    marks = {type(c).__name__: c for c in axes[2].collections}
    assert "LineCollection" in marks  # NaN/Inf steps marked in the wild run
    wild_spikes = logs[1].spikes()[0]
    if wild_spikes.any():  # and its spikes, one triangle each
        assert len(marks["PathCollection"].get_offsets()) == wild_spikes.sum()
    assert result.runs[1].spike_steps == int(wild_spikes.any(axis=1).sum())


def test_compare_existing_logs_from_the_command_line(tmp_path):
    from sonify.normfile import NormLogWriter

    paths = []
    for name, log in zip(["first", "second"], two_logs()):
        writer = NormLogWriter(tmp_path / f"{name}.norms.csv", log.layer_names)
        writer.append(log.steps, log.norms, log.missing)
        writer.close()
        paths.append(str(writer.path))
    result = run_sonify("compare", *paths, "-o", str(tmp_path / "out"), "--duration", "1s", "--no-figure")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").read_text().splitlines()))
    assert [row["run"] for row in rows] == ["first", "second"] and rows[1]["first NaN/Inf step"] == "31"
    both = run_sonify("compare", paths[0], "--lr", "0.1")
    assert both.returncode == 1 and "not both" in both.stderr


def test_the_summary_reports_spikes_like_nan(tmp_path):
    calm = np.exp(np.random.default_rng(4).normal(0, 0.1, (80, 2)))
    spiky = calm.copy()
    spiky[60, 1] *= 40
    result = compare(
        [NormLog.from_array(calm, ["a", "b"]), NormLog.from_array(spiky, ["a", "b"])],
        tmp_path,
        names=["calm", "spiky"],
        figure=False,
    )
    with open(result.table_csv) as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["first spike step (layers, x median)"] == "" and rows[0]["spike steps"] == "0"
    assert rows[1]["first spike step (layers, x median)"].startswith("61 (b, ") and rows[1]["spike steps"] == "1"


def test_public_functions_do_not_shadow_their_modules():
    import importlib
    import types

    for name in ("rendering", "playback", "comparison"):
        assert isinstance(importlib.import_module(f"sonify.{name}"), types.ModuleType)
    assert sonify.compare is importlib.import_module("sonify.comparison").compare  # README: sonify.compare(...)
    assert callable(sonify.render) and callable(sonify.play)


def test_logs_with_the_same_file_name_in_two_folders_each_get_their_own_audio(tmp_path):
    from sonify.normfile import NormLogWriter

    for folder, scale in (("A", 1.0), ("B", 50.0)):
        writer = NormLogWriter(tmp_path / folder / "run.norms.csv", ["conv", "fc"])
        writer.append(np.arange(1, 9), np.full((8, 2), scale), np.zeros((8, 2), bool))
        writer.close()
    logs = [str(tmp_path / "A" / "run.norms.csv"), str(tmp_path / "B" / "run.norms.csv")]
    for attempt in ("first", "again with --overwrite"):
        extra = ["--overwrite"] if attempt != "first" else []
        result = run_sonify("compare", *logs, "-o", str(tmp_path / "cmp"), "--no-figure", *extra)
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader((tmp_path / "cmp" / "summary.csv").read_text().splitlines()))
        audio = [row[next(key for key in row if "audio" in key.lower())] for row in rows]
        assert len(set(audio)) == 2 and {name.split("/")[-1] for name in audio} == {"A-run.wav", "B-run.wav"}
        a, b = (soundfile.read(path)[0] for path in audio)
        assert not np.allclose(a, b)  # each file holds its own run
    names = ["same", "same"]
    with pytest.raises(sonify.SonifyParameterError, match="names must differ"):
        compare([sonify.load_norms(path) for path in logs], tmp_path / "other", names=names, figure=False)
    assert not (tmp_path / "other").exists()


def test_zeros_are_marked_in_the_figure_and_dead_and_off_scale_cells_counted_in_the_tables(tmp_path):
    norms = np.exp(np.random.default_rng(0).normal(0, 0.1, (80, 2)))
    norms[10:, 0] = 0.0  # layer a dies at step 11
    norms[5:8, 1] = 1e20  # layer b leaves the top of the map for three steps
    log = NormLog.from_array(norms, ["a", "b"])
    result = compare([log], tmp_path, names=["dying"])
    run = result.runs[0]
    assert run.dead_since == {"a": 11} and run.zero_cells == 70 and (run.above_cells, run.below_cells) == (3, 0)
    table = result.table()
    assert "| dead layers (since step) | zero cells | cells above / below the map |" in table
    assert "| a (11) | 70 | 3 / 0 |" in table
    fig = comparison_figure([log], ["dying"], [run.audio])
    ticks = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 70]
    assert len(ticks) == 1  # one tick per zero of layer a: the dead stretch is drawn, not a gap
    np.testing.assert_array_equal(ticks[0].get_offsets()[:, 0], log.steps[10:])
    assert "zero (dead)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
