"""Write audio to files.

WAV is written as 32-bit IEEE float by default (format tag 3, which every
player decodes correctly); 16- and 24-bit PCM on request. FLAC is written as
24-bit PCM unless asked otherwise (FLAC has no float samples). Files are
written incrementally, block by block, so memory does not grow with the run.

WAV files are written by sonify itself, so that they stay readable whatever
happens to the process:

* the header is brought up to date at every :meth:`AudioFileWriter.flush`
  (the norm log's flush interval while training), so after ``kill -9`` or a
  power cut any reader (soundfile, ``scipy.io.wavfile``, players) sees every
  sample up to the last flush;
* a file that grows past 4 GiB becomes RF64 (the EBU's 64-bit WAV: a
  ``JUNK`` chunk reserved at the start turns into ``ds64``), instead of a
  header that silently caps the length;
* files are created exclusively: an existing file is never truncated unless
  ``overwrite=True``.

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

import errno
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._choices import SAMPLE_FORMATS
from ._errors import SonifyIOError, SonifyParameterError
from ._files import check_new_file, create_exclusive, os_error_reason

__all__ = ["AUDIO_SUFFIXES", "SAMPLE_FORMATS", "AudioFileWriter", "check_audio_path", "wav_in_memory"]

#: Sample formats (by the names options accept) as soundfile subtypes.
_SUBTYPES = dict(zip(SAMPLE_FORMATS, ("FLOAT", "PCM_16", "PCM_24")))

#: Audio containers sonify writes, by file suffix.
AUDIO_SUFFIXES = {".wav": "WAV", ".flac": "FLAC"}

# Bytes per sample and WAV format tag of each sample format.
_WAV_SAMPLES = {"float": (4, 3), "pcm16": (2, 1), "pcm24": (3, 1)}


def check_audio_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that ``path`` can become a new audio file, without creating anything.

    Raises
    ------
    SonifyParameterError
        For a suffix other than ``.wav``/``.flac``, a folder, or an existing
        file (unless ``overwrite``).

    Examples
    --------
    >>> check_audio_path("audio_out/run.mp3")
    Traceback (most recent call last):
    ...
    sonify._errors.SonifyParameterError: cannot write audio to audio_out/run.mp3: use a .wav or .flac file name for out=
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise SonifyParameterError(f"cannot write audio to {path}: use a .wav or .flac file name for {{out}}")
    check_new_file(path, overwrite=overwrite)
    return path


def wav_in_memory(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit WAV file of ``samples`` as bytes (for notebooks and experiment trackers).

    Examples
    --------
    >>> wav_in_memory(np.zeros(10, np.float32), 8000)[:4]
    b'RIFF'
    """
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


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
    overwrite : bool
        Replace an existing file; otherwise an existing file is an error.

    Raises
    ------
    SonifyParameterError
        For a bad name, format or rate, or an existing file.
    SonifyIOError
        When the file cannot be created, or (from :meth:`write`) written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int,
        channels: int = 1,
        sample_format: str = "float",
        *,
        overwrite: bool = False,
    ) -> None:
        self.path = check_audio_path(path, overwrite=overwrite)
        if sample_format not in SAMPLE_FORMATS:
            raise SonifyParameterError(
                f"unknown sample format {sample_format!r}; choose one of {', '.join(SAMPLE_FORMATS)}"
            )
        if not (isinstance(sample_rate, int) and sample_rate > 0) or channels not in (1, 2):
            raise SonifyParameterError(f"cannot write {channels} channel(s) at {sample_rate} Hz; use 1 or 2 channels")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0
        container = AUDIO_SUFFIXES[self.path.suffix.lower()]
        fd = create_exclusive(self.path, overwrite=overwrite)
        if container == "WAV":
            self._file: _WavFile | _SoundfileFile = _WavFile(fd, self.path, sample_rate, channels, sample_format)
        else:
            os.close(fd)  # reserved exclusively; soundfile reopens it by name
            subtype = "PCM_24" if sample_format == "float" else _SUBTYPES[sample_format]
            self._file = _SoundfileFile(self.path, sample_rate, channels, container, subtype)

    def write(self, samples: np.ndarray) -> None:
        """Append samples (shape (frames,) or (frames, channels))."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[:, None]
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise SonifyParameterError(f"expected {self.channels} channel(s), got samples of shape {samples.shape}")
        self._file.write(samples)
        self.frames += len(samples)

    def flush(self) -> None:
        """Make everything written so far readable by any reader (the header is updated)."""
        self._file.flush()

    @property
    def duration(self) -> float:
        """Seconds of audio written so far."""
        return self.frames / self.sample_rate

    def close(self) -> None:
        """Finish the file header and close (idempotent)."""
        self._file.close()

    def __enter__(self) -> AudioFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _WavFile:
    """A WAV (or, past 4 GiB, RF64) file whose header is rewritten in place at each flush.

    Layout: ``RIFF size WAVE``, ``JUNK`` (28 bytes, the room ``ds64`` needs),
    ``fmt``, ``fact`` (float only), ``data``. Only whole frames are ever
    counted in the header, so a write cut short by a full disk leaves a
    readable file.
    """

    #: Largest RIFF size a plain WAV can state; beyond it the file becomes RF64.
    riff_limit = 0xFFFFFFFF

    def __init__(self, fd: int, path: Path, sample_rate: int, channels: int, sample_format: str) -> None:
        self.fd, self.path = fd, path
        width, tag = _WAV_SAMPLES[sample_format]
        self.sample_format = sample_format
        self.block_align = width * channels
        fmt = struct.pack(
            "<HHIIHH", tag, channels, sample_rate, sample_rate * self.block_align, self.block_align, 8 * width
        )
        if tag == 3:
            fmt += struct.pack("<H", 0)  # cbSize: non-PCM formats have one
        header = b"RIFF\0\0\0\0WAVE" + b"JUNK" + struct.pack("<I", 28) + bytes(28)
        header += b"fmt " + struct.pack("<I", len(fmt)) + fmt
        self.fact_offset = None
        if tag == 3:
            self.fact_offset = len(header) + 8
            header += b"fact" + struct.pack("<I", 4) + bytes(4)
        self.data_size_offset = len(header) + 4
        header += b"data" + bytes(4)
        self.header_size = len(header)
        # Valid from the first byte: an empty WAV whose RIFF size covers its header, so a run killed
        # before its first flush leaves a file every reader opens (scipy refuses a RIFF size of 0).
        header = header[:4] + struct.pack("<I", self.header_size - 8) + header[8:]
        self.data_bytes = 0  # bytes of samples on disk (possibly a partial frame after a failed write)
        self.closed = False
        self._written_header: list[tuple[int, bytes]] | None = None
        try:
            _write_all(fd, header)
        except _PartialWrite as partial:
            os.close(fd)
            raise SonifyIOError(
                f"cannot write audio file {path}: {os_error_reason(partial.cause)}; free space or choose another {{out}}"
            ) from None

    def write(self, samples: np.ndarray) -> None:
        data = _encode(samples, self.sample_format)
        try:
            self.data_bytes += _write_all(self.fd, data)
        except _PartialWrite as partial:
            self.data_bytes += partial.done
            self._update_header()  # keep what did reach the disk readable
            raise SonifyIOError(
                f"cannot write audio file {self.path}: {os_error_reason(partial.cause)}; the file holds "
                f"{self.data_bytes // self.block_align} frames"
            ) from None

    def flush(self) -> None:
        try:
            self._update_header()
        except OSError as exc:
            raise SonifyIOError(f"cannot update the header of {self.path}: {os_error_reason(exc)}") from None

    def _update_header(self) -> None:
        frames = self.data_bytes // self.block_align
        data = frames * self.block_align
        riff = self.header_size - 8 + data + (data & 1)
        if riff <= self.riff_limit:
            fields = [
                (0, b"RIFF" + struct.pack("<I", riff)),
                (12, b"JUNK"),
                (self.data_size_offset, struct.pack("<I", data)),
            ]
            fact = frames
        else:  # RF64: the 64-bit sizes live in ds64, the 32-bit fields say "see ds64"
            ds64 = b"ds64" + struct.pack("<IQQQI", 28, riff, data, frames, 0)
            fields = [(0, b"RF64" + struct.pack("<I", 0xFFFFFFFF)), (12, ds64), (self.data_size_offset, b"\xff" * 4)]
            fact = 0xFFFFFFFF
        if self.fact_offset is not None:
            fields.append((self.fact_offset, struct.pack("<I", min(fact, 0xFFFFFFFF))))
        if fields == self._written_header:
            return
        for offset, value in fields:
            os.pwrite(self.fd, value, offset)
        self._written_header = fields

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if (self.data_bytes // self.block_align * self.block_align) & 1:
                # RIFF chunks are padded to even sizes; the pad byte is not data.
                os.pwrite(self.fd, b"\0", self.header_size + self.data_bytes)
            self._update_header()
        except OSError as exc:
            raise SonifyIOError(f"cannot finish audio file {self.path}: {os_error_reason(exc)}") from None
        finally:
            os.close(self.fd)


class _SoundfileFile:
    """FLAC (and any other container) through soundfile."""

    def __init__(self, path: Path, sample_rate: int, channels: int, container: str, subtype: str) -> None:
        import soundfile

        self.path = path
        try:
            self._file = soundfile.SoundFile(
                path, "w", samplerate=sample_rate, channels=channels, format=container, subtype=subtype
            )
        except (OSError, RuntimeError) as exc:  # soundfile reports open failures as LibsndfileError
            raise SonifyIOError(f"cannot write audio file {path}: {exc}; choose another {{out}}") from None

    def write(self, samples: np.ndarray) -> None:
        try:
            self._file.write(samples)
        except (OSError, RuntimeError) as exc:
            raise SonifyIOError(f"cannot write audio file {self.path}: {_soundfile_reason(self.path, exc)}") from None

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.close()
        except (OSError, RuntimeError) as exc:
            raise SonifyIOError(f"cannot finish audio file {self.path}: {_soundfile_reason(self.path, exc)}") from None


def _soundfile_reason(path: Path, exc: Exception) -> str:
    """libsndfile says "System error."; find the real cause where we can."""
    try:
        stats = os.statvfs(path.parent)
        if stats.f_bavail == 0:
            return os.strerror(errno.ENOSPC)
    except OSError as folder_error:
        return os_error_reason(folder_error)
    return str(exc)


class _PartialWrite(Exception):
    def __init__(self, done: int, cause: OSError) -> None:
        self.done, self.cause = done, cause


def _write_all(fd: int, data: Any) -> int:
    """Write everything (``os.write`` may write less); on failure say how much got through."""
    if len(data) == 0:
        return 0
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except OSError as exc:
            raise _PartialWrite(done, exc) from None
    return done


def _encode(samples: np.ndarray, sample_format: str) -> bytes | np.ndarray:
    """Little-endian sample bytes, interleaved by frame."""
    if sample_format == "float":
        return np.ascontiguousarray(samples, dtype="<f4")
    if sample_format == "pcm16":
        return np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2")
    ints = np.clip(np.rint(samples * 8388607.0), -8388608, 8388607).astype("<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
