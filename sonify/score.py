"""The score: what a block of steps sounds like, before any sample is made.

For every step and voice a :class:`Score` holds when the tone starts, how
long it lasts, its frequency, its gain and its kind (:class:`ToneKind`:
tone, rest, alarm, accent, above or below the map, zero), as arrays. A :class:`~sonify.sound.Sounder`
writes it (pitch map, spikes and loudness are decided there); the
synthesizer, the MIDI writer and every other output read it. It is plain
data: :meth:`Score.as_dict` is JSON-ready and :meth:`Score.from_dict` reads
it back, so a synthesizer written elsewhere (a browser's) never repeats the
mapping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["Score", "ToneKind"]


class ToneKind(enum.IntEnum):
    """What one voice does at one step."""

    #: A sine at the mapped pitch.
    TONE = 0
    #: Silence: the layer had no gradient this step.
    REST = 1
    #: The NaN/Inf alarm (a chord no finite norm can make).
    ALARM = 2
    #: A spike: the tone at its pitch, brighter and with a sharp attack.
    ACCENT = 3
    #: A norm above the top of the map: from the clamped (top) pitch, a glide up (off the scale).
    ABOVE = 4
    #: A norm below the bottom of the map: from the clamped (bottom) pitch, a glide down.
    BELOW = 5
    #: A norm of exactly zero (a dead layer): a short, muffled noise puff, no pitch.
    ZERO = 6


@dataclass(frozen=True, eq=False)
class Score:
    """What a block of steps sounds like, before any sample is made: one entry per step and voice.

    Attributes
    ----------
    steps : ndarray of int64, shape (steps,)
        The optimizer step of each row.
    start : ndarray of float64, shape (steps, voices)
        When each tone starts, in seconds from the sounder's first step.
    duration : ndarray of float64, same shape
        How long each tone lasts, in seconds.
    frequency : ndarray of float64, same shape
        The pitch in Hz (already within the playable band; where a glide
        starts for ``ABOVE`` and ``BELOW``); NaN for rests, alarms and zeros.
    gain : ndarray of float64, same shape
        Loudness relative to ``amplitude``: below 1 where the equal-loudness
        contour turns a pitch down; 1 for alarms, 0 for rests.
    kind : ndarray of uint8, same shape
        A :class:`ToneKind` per entry.
    tone_duration, gap : float
        Seconds per tone, and of silence after each step.
    mode : str
        ``"sequence"`` (voices one after another) or ``"chord"`` (together).
    amplitude : float
        Peak amplitude of a tone at gain 1.
    pan : tuple of float or None
        Each voice's place from left (0) to right (1) in stereo; None for mono.
    glide : float
        Semitones an ``ABOVE`` tone glides up (and a ``BELOW`` tone down),
        exponentially over the tone, from its frequency; the synthesizer
        stops a glide short of the playable band's edges.
    """

    steps: np.ndarray
    start: np.ndarray
    duration: np.ndarray
    frequency: np.ndarray
    gain: np.ndarray
    kind: np.ndarray
    tone_duration: float
    gap: float
    mode: str
    amplitude: float
    pan: tuple[float, ...] | None = None
    glide: float = 12.0

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def step_duration(self) -> float:
        """Seconds of sound per step (its tones and the gap)."""
        return (1 if self.mode == "chord" else self.kind.shape[1]) * self.tone_duration + self.gap

    def is_kind(self, kind: ToneKind) -> np.ndarray:
        """True where an entry is of ``kind``."""
        return self.kind == kind

    def counts(self) -> np.ndarray:
        """Entries of each kind per voice: shape (kinds, voices), indexed by :class:`ToneKind`."""
        voices = self.kind.shape[1]
        flat = self.kind.astype(np.int64) * voices + np.arange(voices)
        return np.bincount(flat.ravel(), minlength=len(ToneKind) * voices).reshape(len(ToneKind), voices)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as nested lists (NaN as None), the rest as is.

        Examples
        --------
        >>> import json, numpy as np
        >>> from sonify import SoundSettings
        >>> score = SoundSettings().sounder(1).score(np.array([[1.0]]), np.zeros((1, 1), bool))
        >>> Score.from_dict(json.loads(json.dumps(score.as_dict()))).frequency.tolist() == score.frequency.tolist()
        True
        """
        values: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                value = (
                    [[None if v != v else v for v in row] for row in value.tolist()]
                    if value.ndim == 2 and value.dtype.kind == "f"
                    else value.tolist()
                )
            values[item.name] = list(value) if isinstance(value, tuple) else value
        return values

    def player_rows(self, norms: np.ndarray, missing: np.ndarray) -> dict[str, Any]:
        """What a browser player (``sonify serve``'s page, the notebook player) gets for these steps, JSON-ready.

        Per row: the step, and per voice the frequency, gain and kind (what
        to play: the score, never samples), and the norm for the curves (None
        where a layer had no gradient or its norm is NaN/Inf).
        """
        finite = np.isfinite(norms) & ~missing
        curves = [[float(v) if ok else None for v, ok in zip(row, oks)] for row, oks in zip(norms.tolist(), finite)]
        return {
            "steps": self.steps.tolist(),
            "frequency": [[None if f != f else f for f in row] for row in self.frequency.tolist()],
            "gain": self.gain.tolist(),
            "kind": self.kind.tolist(),
            "norms": curves,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Score:
        """A score from :meth:`as_dict`'s output."""
        arrays: dict[str, np.ndarray] = {
            "steps": np.asarray(values["steps"], np.int64),
            "kind": np.asarray(values["kind"], np.uint8),
            **{
                name: np.asarray(values[name], dtype=float).reshape(len(values["steps"]), -1)
                for name in ("start", "duration", "frequency", "gain")
            },
        }
        pan = values.get("pan")
        return cls(
            **arrays,
            tone_duration=float(values["tone_duration"]),
            gap=float(values["gap"]),
            mode=str(values["mode"]),
            amplitude=float(values["amplitude"]),
            pan=tuple(pan) if pan is not None else None,
            glide=float(values.get("glide", 12.0)),
        )
