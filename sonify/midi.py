"""Write a run as a standard MIDI file, to play on your own instruments.

The same events as the audio, as notes (needs ``pip install 'sonify[midi]'``,
which brings mido; imported only when a ``.mid`` file is written):

* one track per voice (layer), on its own channel (channel 10 is left to
  the drums); each step's tone is a note at the mapped pitch: the nearest
  semitone plus a pitch bend for the cents (bend range set to +/-2
  semitones on every channel), or exactly the note when a ``scale`` is set;
* a layer without gradient is a rest (no note);
* NaN/Inf is a crash cymbal (General MIDI percussion note 49) on channel
  10, in a track of its own;
* a norm of exactly zero (a dead layer) is a soft side stick (percussion
  note 37, velocity 40) in that drum track: a sound without pitch;
* a spike is the same note, louder: velocity 127 instead of 80;
* a norm off the scale (above the map's top, below its bottom) is the
  note at the clamped pitch whose pitch wheel glides, over the second half
  of the note, to the end of its range: 2 semitones up, or down;
* beyond 15 voices channels are shared; in chord mode, where voices that
  share a channel sound at once and a channel has one pitch bend, their
  notes are the nearest semitone (no bend), never another voice's bend;
* time follows the sound settings: one tone is 120 ticks (a sixteenth note
  at 480 per beat; twice or four times that for tones over 4 s, which the
  slowest MIDI tempo cannot hold), the tempo is set so that it lasts ``tone_duration``, and
  the gap after each step lasts ``gap``; in chord mode a step's notes start
  together.

Examples
--------
>>> import numpy as np, tempfile, sonify
>>> out = tempfile.mkdtemp() + "/run.mid"
>>> sonify.render(np.array([[0.5, 2.0], [np.nan, 1.0]]), out).steps
2
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ._errors import SonifyIOError
from ._files import check_new_file, create_exclusive, os_error_reason
from ._optional import require
from .score import Score, ToneKind

__all__ = [
    "ALARM_NOTE",
    "MIDI_SUFFIXES",
    "SPIKE_VELOCITY",
    "TICKS_PER_BEAT",
    "TICKS_PER_TONE",
    "ZERO_NOTE",
    "write_midi",
]

#: File suffixes written as MIDI.
MIDI_SUFFIXES = (".mid", ".midi")
TICKS_PER_BEAT = 480
TICKS_PER_TONE = 120
#: General MIDI percussion: Crash Cymbal 1, on channel 10 (index 9).
ALARM_NOTE = 49
#: General MIDI percussion: Side Stick, soft: a norm of exactly zero.
ZERO_NOTE = 37
ZERO_VELOCITY = 40
#: Pitch-wheel steps of a glide off the scale, over the second half of the note.
GLIDE_STEPS = 4
_DRUMS = 9
VELOCITY = 80
SPIKE_VELOCITY = 127
BEND_RANGE = 2.0  # semitones either way
#: The slowest tempo a MIDI file can state, in microseconds per beat (a 24-bit field).
MAX_TEMPO = 0xFFFFFF


def write_midi(
    path: str | os.PathLike,
    score: Score,
    *,
    layer_names: tuple[str, ...] = (),
    overwrite: bool = False,
) -> float:
    """Write a :class:`~sonify.score.Score` as a MIDI file; returns its length in seconds.

    Parameters
    ----------
    path : path
        The ``.mid`` file (created exclusively unless ``overwrite``).
    score : Score
        The run's tones, rests, alarms and accents, as the synthesizer gets them.
    layer_names : tuple of str
        Track names.
    """
    mido = require("mido", extra="midi", purpose="writing MIDI files")
    path = Path(path)
    check_new_file(path, overwrite=overwrite)
    freqs, kind = score.frequency, score.kind
    tone_duration, gap, chord = score.tone_duration, score.gap, score.mode == "chord"
    steps, voices = kind.shape
    tone = TICKS_PER_TONE
    while tone_duration * 1e6 * TICKS_PER_BEAT / tone > MAX_TEMPO:  # long tones: more ticks each, same beat
        tone *= 2
    gap_ticks = round(gap / tone_duration * tone)
    step_ticks = (1 if chord else voices) * tone + gap_ticks
    tempo = max(1, round(tone_duration * 1e6 * TICKS_PER_BEAT / tone))  # microseconds per beat
    channels = [_channel(voice) for voice in range(voices)]
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    midi.tracks.append(conductor)
    alarms: list[int] = []
    zeros: list[int] = []
    for voice in range(voices):
        channel = _channel(voice)
        name = layer_names[voice] if voice < len(layer_names) else f"voice {voice}"
        events: list[tuple[int, int, Any]] = []  # (tick, order, mido message)
        for control, value in ((101, 0), (100, 0), (6, int(BEND_RANGE)), (38, 0)):  # RPN 0: bend range
            events.append((0, 0, mido.Message("control_change", channel=channel, control=control, value=value)))
        offset = 0 if chord else voice * tone
        for step in range(steps):
            start = step * step_ticks + offset
            if kind[step, voice] == ToneKind.REST:
                continue
            if kind[step, voice] == ToneKind.ALARM:
                alarms.append(start)
                continue
            if kind[step, voice] == ToneKind.ZERO:
                zeros.append(start)
                continue
            note, bend = _note_and_bend(float(freqs[step, voice]))
            if chord and channels.count(channel) > 1:  # one bend per channel: notes that share it keep none
                note, bend = min(127, max(0, note + round(bend / 8192 * BEND_RANGE))), 0
            velocity = SPIKE_VELOCITY if kind[step, voice] == ToneKind.ACCENT else VELOCITY
            events.append((start, 1, mido.Message("pitchwheel", channel=channel, pitch=bend)))
            events.append((start, 2, mido.Message("note_on", channel=channel, note=note, velocity=velocity)))
            events.append((start + tone, 0, mido.Message("note_off", channel=channel, note=note, velocity=0)))
            glide = {ToneKind.ABOVE: 8191, ToneKind.BELOW: -8192}.get(ToneKind(kind[step, voice]))
            if glide is not None and not (
                chord and channels.count(channel) > 1
            ):  # off the scale: the wheel moves from the note's bend to the end of its range
                for k in range(1, GLIDE_STEPS + 1):
                    tick = start + tone // 2 + k * (tone - tone // 2) // (GLIDE_STEPS + 1)
                    pitch = round(bend + (glide - bend) * k / GLIDE_STEPS)
                    events.append((tick, 1, mido.Message("pitchwheel", channel=channel, pitch=pitch)))
        midi.tracks.append(_track(mido, name, events))
    drums = []
    for hits, note, velocity in ((alarms, ALARM_NOTE, SPIKE_VELOCITY), (zeros, ZERO_NOTE, ZERO_VELOCITY)):
        for start in sorted(set(hits)):
            drums.append((start, 1, mido.Message("note_on", channel=_DRUMS, note=note, velocity=velocity)))
            drums.append((start + tone, 0, mido.Message("note_off", channel=_DRUMS, note=note, velocity=0)))
    midi.tracks.append(_track(mido, "NaN/Inf alarm" + (", zero" if zeros else ""), drums))
    fd = create_exclusive(path, overwrite=overwrite)
    try:
        with os.fdopen(fd, "wb") as file:
            midi.save(file=file)
    except OSError as exc:
        raise SonifyIOError(f"cannot write MIDI file {path}: {os_error_reason(exc)}") from None
    return steps * step_ticks * tone_duration / tone


def _channel(voice: int) -> int:
    """Channels 0-15 without the drums' 9; beyond 15 voices channels are shared (and so are their bends)."""
    melodic = [c for c in range(16) if c != _DRUMS]
    return melodic[voice % len(melodic)]


def _note_and_bend(freq: float) -> tuple[int, int]:
    """Nearest MIDI note and the pitch-wheel value (-8192..8191) for the rest, at +/-2 semitones."""
    exact = 69.0 + 12.0 * math.log2(freq / 440.0)
    note = min(127, max(0, round(exact)))
    bend = round((exact - note) / BEND_RANGE * 8192)
    return note, max(-8192, min(8191, bend))


def _track(mido: Any, name: str, events: list) -> Any:
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, message in sorted(events, key=lambda event: (event[0], event[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    return track
