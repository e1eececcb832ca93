"""Norms recorded elsewhere: CSV files of other tools and TensorBoard event files, written by the tests."""

import numpy as np
import pytest

import sonify
from sonify import SonifyError, load_norms, load_tensorboard


def test_foreign_csv_with_the_step_column_anywhere(tmp_path):
    path = tmp_path / "wandb-export.csv"
    path.write_text("encoder,Global_Step,decoder\n0.5,10,2.0\n,20,4.0\n0.25,30,inf\n")
    log = load_norms(path)
    assert log.layer_names == ("encoder", "decoder") and log.steps.tolist() == [10, 20, 30]
    np.testing.assert_array_equal(log.missing[:, 0], [False, True, False])
    assert log.nonfinite[:, 1].tolist() == [False, False, True]
    assert sonify.render(log, tmp_path / "x.wav").nonfinite_steps == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layer,other\n1,2\n", r"x.csv:1: expected a header with a step column \(step, steps, global_step"),
        ("iteration,a\n1,0.5\n2,lots\n", r"x.csv:3: not a number"),
        ("iter,a\n2,0.5\n1,0.5\n", r"x.csv:3: step 1 does not follow step 2"),
        ("step,a\n1,-0.5\n", r"negative norms"),
    ],
)
def test_malformed_csv_names_file_line_and_problem(tmp_path, text, message):
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(SonifyError, match=message):
        load_norms(tmp_path / "x.csv")


def write_events(directory, rows):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(directory)) as writer:
        for step, values in rows:
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)


def test_tensorboard_scalars_become_a_norm_log(tmp_path):
    write_events(
        tmp_path,
        [
            (1, {"grad_norm/conv1": 0.5, "grad_norm/fc": 2.0, "train/loss": 3.0}),
            (2, {"grad_norm/conv1": 0.25, "train/loss": 2.5}),  # fc not logged at step 2
            (3, {"grad_norm/conv1": float("nan"), "grad_norm/fc": 8.0}),
        ],
    )
    log = load_norms(tmp_path)  # a run directory goes to the TensorBoard reader
    assert log.layer_names == ("conv1", "fc") and log.steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(log.norms[[0, 2], 1], [2.0, 8.0])
    assert log.missing[:, 1].tolist() == [False, True, False] and log.nonfinite[:, 0].tolist() == [False, False, True]
    custom = load_tensorboard(tmp_path, tags=r"train/(loss)")
    assert custom.layer_names == ("loss",) and len(custom) == 2


def test_tensorboard_errors_say_what_was_found(tmp_path):
    with pytest.raises(SonifyError, match="no TensorBoard event files"):
        load_tensorboard(tmp_path)
    write_events(tmp_path, [(1, {"train/loss": 1.0, "lr": 0.1})])
    with pytest.raises(SonifyError, match=r"no scalar tag matches .*scalars found: lr, train/loss"):
        load_tensorboard(tmp_path)
    write_events(tmp_path / "negative", [(1, {"grad_norm/a": -1.0})])
    with pytest.raises(SonifyError, match="negative values"):
        load_tensorboard(tmp_path / "negative")
