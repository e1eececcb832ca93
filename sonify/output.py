"""Write audio to files.

WAV is written as 32-bit IEEE float by default (format tag 3, which every
player decodes correctly); 16- and 24-bit PCM on request. FLAC is written as
24-bit PCM unless asked otherwise (FLAC has no float samples). Files are
written incrementally, block by block, so memory does not grow with the run.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
>>> with AudioFileWriter(path, 44100) as wav:
...     wav.write(np.zeros(441, dtype=np.float32))
>>> wav.frames
441
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from ._errors import SonifyError

__all__ = ["SAMPLE_FORMATS", "AudioFileWriter"]

#: Sample formats by the names the CLI accepts, as soundfile subtypes.
SAMPLE_FORMATS = {"float": "FLOAT", "pcm16": "PCM_16", "pcm24": "PCM_24"}

_CONTAINERS = {".wav": "WAV", ".flac": "FLAC"}


class AudioFileWriter:
    """An audio file open for appending float32 samples in [-1, 1].

    Parameters
    ----------
    path : str or PathLike
        ``.wav`` or ``.flac``; parent folders are created.
    sample_rate : int
    channels : int
    sample_format : str
        ``"float"``, ``"pcm16"`` or ``"pcm24"`` (see :data:`SAMPLE_FORMATS`).
        FLAC cannot hold float samples: ``"float"`` there means 24-bit PCM.
    """

    def __init__(
        self, path: str | os.PathLike, sample_rate: int, channels: int = 1, sample_format: str = "float"
    ) -> None:
        self.path = Path(path)
        container = _CONTAINERS.get(self.path.suffix.lower())
        if container is None:
            raise SonifyError(f"cannot write audio to {self.path}: use a .wav or .flac file name")
        if sample_format not in SAMPLE_FORMATS:
            raise SonifyError(f"unknown sample format {sample_format!r}; choose one of {', '.join(SAMPLE_FORMATS)}")
        subtype = SAMPLE_FORMATS[sample_format]
        if container == "FLAC" and subtype == "FLOAT":
            subtype = "PCM_24"
        self.sample_rate = sample_rate
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = soundfile.SoundFile(
                self.path, "w", samplerate=sample_rate, channels=channels, format=container, subtype=subtype
            )
        except (OSError, RuntimeError) as exc:  # soundfile reports open failures as LibsndfileError
            raise SonifyError(f"cannot write audio file {self.path}: {exc}; choose another --out") from None

    def write(self, samples: np.ndarray) -> None:
        """Append samples (shape (frames,) or (frames, channels))."""
        self._file.write(samples)
        self.frames += len(samples)

    def flush(self) -> None:
        """Push written samples to the operating system."""
        self._file.flush()

    @property
    def duration(self) -> float:
        """Seconds of audio written so far."""
        return self.frames / self.sample_rate

    def close(self) -> None:
        """Finish the file header and close (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> AudioFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
