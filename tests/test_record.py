import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonify import SonifyError, load_norms
from sonify.normfile import NormLogWriter, log_paths
from sonify.norms import NormLog
from sonify.stats import RunStats


def write_log(path, names=("conv1", "fc"), rows=None):
    writer = NormLogWriter(path, names, {"run": "test"})
    norms = np.array(rows if rows is not None else [[0.5, 1.25], [np.nan, 2.0], [np.inf, 3.0], [0.1, 0.0]], np.float32)
    missing = np.zeros(norms.shape, bool)
    missing[3, 1] = True
    writer.append(np.arange(1, len(norms) + 1), norms, missing)
    writer.close()
    return norms, missing


def test_round_trip_keeps_nan_inf_and_missing_apart(tmp_path):
    path = tmp_path / "run.norms.csv"
    _norms, missing = write_log(path)
    log = load_norms(path)
    assert log.layer_names == ("conv1", "fc")
    np.testing.assert_array_equal(log.steps, [1, 2, 3, 4])
    np.testing.assert_array_equal(log.missing, missing)
    assert np.isnan(log.norms[1, 0]) and np.isposinf(log.norms[2, 0])
    np.testing.assert_array_equal(log.nonfinite, [[False, False], [True, False], [True, False], [False, False]])
    assert np.float32(log.norms[3, 0]) == np.float32(0.1)  # float32 norms read back exactly
    assert log.metadata["run"] == "test" and log.metadata["layers"] == ["conv1", "fc"]
    assert load_norms(tmp_path / "run.wav").steps.size == 4  # the audio's path finds its log


def test_readable_without_sonify(tmp_path):
    path = tmp_path / "run.norms.csv"
    write_log(path)
    rows = list(csv.DictReader(path.open()))
    assert rows[0] == {"step": "1", "conv1": "0.5", "fc": "1.25"}
    assert rows[3]["fc"] == ""  # no gradient: an empty cell
    table = np.genfromtxt(path, delimiter=",", names=True)
    assert table["conv1"][0] == 0.5 and np.isinf(table["conv1"][2])
    assert json.loads(log_paths(path)[1].read_text())["layers"] == ["conv1", "fc"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("time,a\n1,2\n", ":1: expected a header"),
        ("step,a,a\n", "unique"),
        ("step,a,b\n1,0.5,0.1\n2,0.5\n3,1,1\n", ":3: expected 3 fields"),
        ("step,a\n1,abc\n", ":2: not a number"),
        ("step,a\n2,1\n1,1\n", ":3: step 1 does not follow step 2"),
        ("step,a\n1,-1\n", "negative"),
        ("step,a,b\n1,0.5,0.1\n2,0.5", ":3: last line is incomplete"),
    ],
)
def test_malformed_logs_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.norms.csv"
    path.write_text(content)
    with pytest.raises(SonifyError, match=message) as info:
        load_norms(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_incomplete_last_line_can_be_dropped(tmp_path):
    path = tmp_path / "cut.norms.csv"
    path.write_text("step,a,b\n1,0.5,0.1\n2,0.5")
    assert len(load_norms(path, drop_incomplete=True)) == 1


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(SonifyError, match="does not exist"):
        load_norms(tmp_path / "nothing.wav")
    binary = tmp_path / "noise.norms.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(SonifyError, match="not a text file"):
        load_norms(binary)
    good = tmp_path / "ok.norms.csv"
    write_log(good)
    log_paths(good)[1].write_text("{not json")
    with pytest.raises(SonifyError, match="metadata"):
        load_norms(good)


def test_stats_match_the_log():
    log = NormLog.from_array([[1.0, 5.0], [np.nan, 2.0], [0.5, np.inf]], ["a", "b"])
    stats = log.stats()
    assert stats.steps == 3 and stats.nonfinite_steps == 2
    assert stats.first_nonfinite_step == 2 and stats.first_nonfinite_layers == ("a",)
    assert stats.ranges() == {"a": (0.5, 1.0), "b": (2.0, 5.0)}
    split = RunStats(["a", "b"])
    for row in range(3):
        split.update(log.steps[row : row + 1], log.norms[row : row + 1], log.missing[row : row + 1])
    assert split.as_dict() == stats.as_dict()


def test_condense_combines_windows_and_keeps_every_alarm():
    norms = np.arange(1.0, 13.0).reshape(12, 1).repeat(2, axis=1)
    norms[4, 0] = np.nan  # window 2 (steps 4-6), layer 0
    norms[10, 1] = np.inf  # window 4 (steps 10-12), layer 1
    log = NormLog.from_array(norms)
    log.missing[0:3, 1] = True  # layer 1 had no gradient in the whole first window
    mean, peak = log.condense(4, "mean"), log.condense(4, "max")
    assert mean.steps.tolist() == [3, 6, 9, 12]
    np.testing.assert_array_equal(mean.norms[:, 0], [2.0, np.nan, 8.0, 11.0])
    np.testing.assert_array_equal(peak.norms[:, 0], [3.0, np.nan, 9.0, 12.0])
    assert mean.nonfinite[:, 1].tolist() == [False, False, False, True] and np.isposinf(mean.norms[3, 1])
    assert mean.missing[:, 1].tolist() == [True, False, False, False] and not mean.nonfinite[0, 1]
    assert log.condense(12) is log and log.condense(50) is log


def test_condense_rejects_unknown_combination():
    with pytest.raises(SonifyError, match="cannot combine steps by 'median'"):
        NormLog.from_array(np.ones((4, 1))).condense(2, "median")


def test_a_utf8_bom_in_the_header_is_not_part_of_the_step_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffstep,a\n1,0.5\n2,0.25\n".encode())
    assert load_norms(path).norms[:, 0].tolist() == [0.5, 0.25]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1e30,0.5", "step '1e30' is not a whole number"),
        ("99999999999999999999999999,0.5", "is not a whole number"),
        ("1.5,0.5", "step '1.5' is not a whole number"),
        ("inf,0.5", "not a number"),
    ],
)
def test_impossible_step_numbers_are_one_line_errors(tmp_path, body, message):
    path = tmp_path / "x.norms.csv"
    path.write_text(f"step,a\n{body}\n")
    with pytest.raises(SonifyError, match=message):
        load_norms(path)


def test_norms_beyond_float32_keep_their_value_on_disk(tmp_path):
    path = tmp_path / "wide.norms.csv"
    writer = NormLogWriter(path, ["a", "b"])
    writer.append([1], np.array([[1e300, 0.1]]), np.zeros((1, 2), bool))
    writer.close()
    assert path.read_text().splitlines()[1] == "1,1e+300,0.1"
    assert load_norms(path).norms.tolist() == [[1e300, 0.1]]


def test_the_writer_creates_exclusively_and_cleans_up_after_itself(tmp_path):
    path = tmp_path / "run.norms.csv"
    path.write_text("step,theirs\n1,1\n")
    with pytest.raises(SonifyError, match="already exists"):
        NormLogWriter(path, ["a"])
    assert path.read_text() == "step,theirs\n1,1\n"
    (tmp_path / "run.norms.json").write_text("{}")
    with pytest.raises(SonifyError, match=r"run\.norms\.json already exists"):
        NormLogWriter(tmp_path / "run.norms.csv", ["a"], overwrite=False)
    other = NormLogWriter(tmp_path / "new.norms.csv", ["a"])
    other.write_metadata(summary={"steps": 0})
    other.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "new.norms.csv",
        "new.norms.json",
        "run.norms.csv",
        "run.norms.json",
    ]  # no temporary files left


def test_a_stray_quote_in_a_long_log_is_an_error_naming_its_line(tmp_path):
    rows = [f"{step},0.5,1.5" for step in range(1, 20_001)]
    rows[1233] = '1234,"0.5,1.5'  # one stray quote: the csv module would read the rest of the file as one field
    path = tmp_path / "run.norms.csv"
    path.write_text("step,conv,fc\n" + "\n".join(rows) + "\n")
    with pytest.raises(SonifyError, match=r"run.norms.csv:1235: expected 3 fields"):
        load_norms(path)
    rows[1233] = "1234," + "9" * 200_000 + ",1.5"  # a field over the csv module's 128 KiB limit
    path.write_text("step,conv,fc\n" + "\n".join(rows) + "\n")
    assert np.isinf(load_norms(path).norms[1233, 0])  # read as a number (an overflow), not a csv crash
    rows[1233] = '1234,"' + "9" * 200_000 + ",1.5"
    path.write_text("step,conv,fc\n" + "\n".join(rows) + "\n")
    with pytest.raises(SonifyError, match=r"run.norms.csv:1235: not a CSV row \(field larger than field limit"):
        load_norms(path)


@pytest.mark.parametrize("steps", [1, 7, 64, 1000, 4097])
def test_a_run_digest_is_the_run_condensed_into_whole_windows(steps):
    from sonify.norms import RunDigest

    rng = np.random.default_rng(steps)
    norms = np.abs(rng.normal(size=(steps, 3))) + 0.1
    norms[rng.random(norms.shape) < 0.01] = np.nan
    norms[rng.random(norms.shape) < 0.01] = np.inf
    missing = rng.random(norms.shape) < 0.05
    missing[:, 2] = True  # a layer that never has a gradient
    accents = rng.random(norms.shape) < 0.02
    digest = RunDigest(["a", "b", "c"], rows=8)
    for block in np.array_split(np.arange(steps), max(1, steps // 37)):  # blocks of any size, as flushes come
        digest.add(block + 1, norms[block], missing[block], accents[block])
    got = digest.log()
    assert digest.steps_seen == steps and len(got) <= 16 and got.steps[-1] == steps
    window = digest.window
    for row, end in enumerate(got.steps):
        part = slice(row * window, end)  # each row is one whole window (the last may be partial)
        finite = np.isfinite(norms[part]) & ~missing[part]
        with np.errstate(invalid="ignore"):
            mean = np.where(finite, norms[part], 0).sum(0) / finite.sum(0)
        alarm = (~np.isfinite(norms[part]) & ~missing[part]).any(0)
        present = (~missing[part]).any(0)
        np.testing.assert_array_equal(got.missing[row], ~present)
        np.testing.assert_array_equal(~np.isfinite(got.norms[row]) & present, alarm)  # the alarm is kept
        np.testing.assert_allclose(got.norms[row][~alarm & present], mean[~alarm & present])
        np.testing.assert_array_equal(got.accents[row], (accents[part]).any(0) & present)


def test_a_run_digest_of_200_000_steps_stays_bounded_and_keeps_the_alarm():
    from sonify.norms import RunDigest

    digest = RunDigest(["a", "b"], rows=1000)
    for start in range(0, 200_000, 500):  # a long run, flush by flush
        steps = np.arange(start + 1, start + 501)
        norms = np.ones((500, 2))
        if start <= 123_456 < start + 500:
            norms[123_456 - start - 1, 1] = np.nan
        digest.add(steps, norms, np.zeros((500, 2), bool))
    log = digest.log()
    assert digest.steps_seen == 200_000 and log.steps[-1] == 200_000
    assert 1000 <= len(log) <= 2000 and digest.window in (128, 256)  # memory bounded, windows a power of two
    assert np.isnan(log.norms[:, 1]).sum() == 1 and np.isfinite(log.norms[:, 0]).all()  # the one alarm is kept


def test_zero_cells_are_counted_and_a_layer_that_stays_zero_is_dead_from_the_step_it_died():
    from sonify.stats import DEAD_STEPS

    norms = np.ones((60, 3))
    norms[11:, 0] = 0.0  # dies at step 12 and stays dead
    norms[5 : 5 + DEAD_STEPS - 1, 1] = 0.0  # zero for a while, one step short of dead, then alive again
    norms[30:, 2] = 0.0  # dies at step 31 ...
    log = NormLog.from_array(norms, ["a", "b", "c"])
    log.missing[40:45, 2] = True  # ... and steps without gradient do not revive it
    log.norms[40:45, 2] = np.nan
    split = RunStats(log.layer_names)
    news = []
    for start in range(0, 60, 7):  # block by block, as a recorder sees it
        block = slice(start, start + 7)
        split.update(log.steps[block], log.norms[block], log.missing[block])
        news += split.newly_dead()
    assert news == [("a", 12), ("c", 31)]  # each once, with the step it died
    whole = log.stats()
    assert whole.dead_since == split.dead_since == {"a": 12, "c": 31}
    assert whole.zero_counts.tolist() == [49, DEAD_STEPS - 1, 25]
    assert whole.as_dict() == split.as_dict()
    assert "dead layers (zero gradient): a since step 12, c since step 31" in whole.summary("run", [])
    revived = np.ones((60, 2))
    revived[11:59] = 0.0  # dead from step 12 ... and back at the last step: no longer dead
    revived[11:, 1] = 0.0
    assert NormLog.from_array(revived, ["a", "b"]).stats().dead_since == {"b": 12}


def dead_layers_one_step_at_a_time(states):
    """The plain definition: (layer, step it died) once per layer, and who is dead at the end.

    ``states``: (steps, layers) of "z" (zero), "a" (alive: a non-zero norm) or "m" (no gradient).
    """
    from sonify.stats import DEAD_STEPS

    news, dead, run, since = [], {}, {}, {}
    for step, row in enumerate(states, start=1):
        for layer, state in enumerate(row):
            if state == "z":
                if not run.get(layer, 0):
                    since[layer] = step
                run[layer] = run.get(layer, 0) + 1
                if run[layer] >= DEAD_STEPS:
                    dead[layer] = since[layer]
                    if layer not in {n for n, _ in news}:
                        news.append((layer, since[layer]))
            elif state == "a":
                run[layer] = 0
                dead.pop(layer, None)
    return news, dead


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("zzzam"), min_size=2, max_size=2), min_size=1, max_size=90),
    st.lists(st.integers(1, 30), min_size=1, max_size=10),
)
def test_dead_layers_do_not_depend_on_how_the_run_is_cut_into_blocks(states, cuts):
    norms = np.array([[{"z": 0.0, "a": 1.0, "m": np.nan}[s] for s in row] for row in states])
    missing = np.array([[s == "m" for s in row] for row in states])
    stats, news, start = RunStats(["a", "b"]), [], 0
    steps = np.arange(1, len(states) + 1)
    for size in cuts * (len(states) // sum(cuts) + 1):
        block = slice(start, start + size)
        stats.update(steps[block], norms[block], missing[block])
        news += stats.newly_dead()
        start += size
    expected_news, expected_dead = dead_layers_one_step_at_a_time(states)
    assert news == [("ab"[layer], step) for layer, step in expected_news]
    assert stats.dead_since == {"ab"[layer]: step for layer, step in expected_dead.items()}
