"""A TensorBoard event file of sonify's own, for audio summaries, written without holding up training.

TensorBoard's own writer checksums every record with a CRC-32C computed in
pure Python: over a second of the interpreter's lock for one minute of audio
(5 MB), in whatever thread writes it, so training stalls for that second. This
module writes the same records (TFRecord framing, ``Event`` and ``Summary``
protocol buffers, encoded by hand: five fields) with a CRC-32C computed by
NumPy across thousands of lanes at once, then combined (CRC is linear), in
tens of milliseconds.

The events go to a file of sonify's own in a sub-folder of the run
(``<log dir>/sonify``), never into the user's event file: TensorBoard shows it
as a run of its own beside the user's, and the user's writer is never
flushed or touched.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

__all__ = ["AudioEventFile", "crc32c", "masked_crc32c"]

_POLYNOMIAL = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ _POLYNOMIAL, table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()
#: Bytes per lane: the data is cut into lanes checksummed side by side, then their CRCs are combined.
_LANE = 1024
_SHIFT_TABLES: dict[int, list[list[int]]] = {}


def _raw(register: int, data: bytes | memoryview) -> int:
    """The CRC register after ``data``, one byte at a time (for short pieces)."""
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _shift_tables(length: int) -> list[list[int]]:
    """Tables of the linear map "run ``length`` zero bytes through the register", by register byte."""
    if length not in _SHIFT_TABLES:
        registers = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
        for _ in range(length):
            registers = _TABLE[registers & 0xFF] ^ (registers >> 8)
        _SHIFT_TABLES[length] = registers.reshape(4, 256).tolist()
    return _SHIFT_TABLES[length]


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data``.

    Examples
    --------
    >>> hex(crc32c(b"123456789"))  # the standard check value
    '0xe3069283'
    """
    data = memoryview(data).cast("B")
    lanes = len(data) // _LANE
    head = len(data) - lanes * _LANE
    register = _raw(0xFFFFFFFF, data[:head])
    if lanes:
        block = np.frombuffer(data[head:], dtype=np.uint8).reshape(lanes, _LANE)  # a view: no copy of the data
        lane_registers = np.zeros(lanes, dtype=np.uint32)
        for position in range(_LANE):  # every lane advances by one byte per pass
            lane_registers = _TABLE[(lane_registers ^ block[:, position]) & 0xFF] ^ (lane_registers >> 8)
        t0, t1, t2, t3 = _shift_tables(_LANE)
        for lane_register in lane_registers.tolist():
            shifted = (
                t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF] ^ t2[(register >> 16) & 0xFF] ^ t3[register >> 24]
            )
            register = shifted ^ lane_register
    return register ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """The masked CRC that TFRecord framing stores."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protocol buffer field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, wall_time: float, body: bytes) -> bytes:
    """An ``Event``: wall_time (1, double), step (2, varint), then ``body`` (its other fields, encoded)."""
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def audio_summary(tag: str, wav: bytes, sample_rate: int, frames: int) -> bytes:
    """The ``summary`` field (5) of an Event holding one ``Summary.Audio`` value (field 6 of a value)."""
    audio = (
        b"\x0d"
        + struct.pack("<f", float(sample_rate))  # sample_rate (1, float)
        + b"\x10\x01"  # num_channels (2) = 1
        + b"\x18"
        + _varint(frames)  # length_frames (3)
        + _field(4, wav)  # encoded_audio_string
        + _field(5, b"audio/wav")  # content_type
    )
    value = _field(1, tag.encode()) + _field(6, audio)
    return _field(5, _field(1, value))


class AudioEventFile:
    """An event file of sonify's own in ``folder`` (created when the first clip arrives).

    Parameters
    ----------
    folder : Path
        Where the file goes: ``<run log dir>/sonify``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.sonify"
        self.path = self.folder / name
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, self._record(_event(0, time.time(), _field(3, b"brain.Event:2"))))  # file_version
        finally:
            os.close(fd)

    @staticmethod
    def _record(data: bytes) -> bytes:
        header = struct.pack("<Q", len(data))
        return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))

    def add_audio(self, tag: str, wav: bytes, sample_rate: int, frames: int, step: int) -> Path:
        """Append one audio summary (``wav``: a WAV file's bytes) at ``step``; returns the file."""
        if self.path is None:
            self._open()
        assert self.path is not None
        record = self._record(_event(step, time.time(), audio_summary(tag, wav, sample_rate, frames)))
        with open(self.path, "ab") as file:  # whole records only: a reader never sees half of one
            file.write(record)
        return self.path
