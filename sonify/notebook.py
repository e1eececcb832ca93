"""Inline audio players for Jupyter: a norm log or a Sonifier shows one when displayed.

``NormLog`` and ``Sonifier`` have ``_repr_html_`` (a summary line and an
HTML5 ``<audio>`` player with the WAV embedded), and ``.player()``, which
returns an ``IPython.display.Audio`` object. Long runs are condensed to at
most :data:`MAX_SECONDS` of sound (the alarm is kept), so the notebook stays
small.

Examples
--------
>>> import numpy as np
>>> log = NormLog.from_array(np.ones((4, 2)))
>>> html = log._repr_html_()
>>> html.count("<audio"), "data:audio/wav;base64," in html
(1, True)
"""

from __future__ import annotations

import base64
import html
from typing import Any

from ._optional import require
from .norms import NormLog, NormPresenter, set_presenter
from .output import wav_in_memory
from .rendering import condensed_audio
from .sound import SoundSettings
from .stats import RunStats

__all__ = ["MAX_SECONDS", "audio", "log_html", "player_html", "replay", "wav_bytes"]

#: Longest sound embedded in a notebook; longer runs are condensed.
MAX_SECONDS = 60.0


def wav_bytes(
    log: NormLog, sound: SoundSettings | None = None, max_seconds: float = MAX_SECONDS
) -> tuple[bytes, float]:
    """A 16-bit WAV of the log in memory, condensed to ``max_seconds``, and its duration."""
    samples, sample_rate = condensed_audio(log, sound, max_seconds)
    return wav_in_memory(samples, sample_rate), len(samples) / sample_rate


def player_html(data: bytes, caption: str) -> str:
    """A caption and an ``<audio controls>`` element with ``data`` (a WAV) embedded."""
    source = "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")
    return f'<div><div>{html.escape(caption)}</div><audio controls src="{source}"></audio></div>'


def audio(log: NormLog, sound: SoundSettings | None = None, max_seconds: float = MAX_SECONDS) -> Any:
    """The log's sound as an ``IPython.display.Audio`` object (needs IPython)."""
    display = require("IPython.display", extra="notebook", purpose="notebook audio")
    data, _ = wav_bytes(log, sound, max_seconds)
    return display.Audio(data=data)


def replay(log: NormLog, sound: SoundSettings | None = None, stats: RunStats | None = None) -> tuple[bytes, str]:
    """The log's sound as a WAV (condensed) and its summary line (``stats``: the run's exact totals, when ``log`` is condensed)."""
    data, seconds = wav_bytes(log, sound)
    stats = stats or log.stats()
    alarm = f", NaN/Inf from step {stats.first_nonfinite_step}" if stats.first_nonfinite_step is not None else ""
    return data, f"{stats.steps} steps x {len(log.layer_names)} layers{alarm}: {seconds:.1f} s of sound"


def log_html(log: NormLog, sound: SoundSettings | None = None, stats: RunStats | None = None) -> str:
    """Summary line and player for a norm log (``stats``: the run's exact totals, when ``log`` is condensed)."""
    return player_html(*replay(log, sound, stats))


class _NotebookPresenter(NormPresenter):
    """What :class:`~sonify.NormLog` shows in Jupyter (registered below, when sonify is imported)."""

    def audio(self, log: NormLog, sound: Any, max_seconds: float) -> Any:
        return audio(log, sound, max_seconds)

    def html(self, log: NormLog) -> str:
        return log_html(log)


set_presenter(_NotebookPresenter())
