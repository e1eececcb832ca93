"""Helpers the tests share (fixtures stay in ``conftest.py``): import them from ``helpers``."""

from helpers.audio import (
    CELL_STATES,
    decode_cells,
    decode_tones,
    decoded,
    frames_played,
    is_alarm,
    refine_tones,
    spectral_peaks,
)
from helpers.processes import ROOT, complete_rows, run_sonify, start_sonify, wait_for_rows
from helpers.trackers import tensorboard_events, wandb_history
from helpers.training import make_model, train
from helpers.virtual_audio import SoundServer

__all__ = [
    "CELL_STATES",
    "ROOT",
    "SoundServer",
    "complete_rows",
    "decode_cells",
    "decode_tones",
    "decoded",
    "frames_played",
    "is_alarm",
    "make_model",
    "refine_tones",
    "run_sonify",
    "spectral_peaks",
    "start_sonify",
    "tensorboard_events",
    "train",
    "wait_for_rows",
    "wandb_history",
]
