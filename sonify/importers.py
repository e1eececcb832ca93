"""Norms recorded elsewhere, as a :class:`~sonify.NormLog`.

* CSV files with a step column and one column per layer are read by
  :func:`sonify.load_norms` directly.
* TensorBoard event files holding per-layer gradient-norm scalars are read by
  :func:`load_tensorboard` (needs ``pip install 'sonify[tensorboard]'``,
  imported only when used).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyError, SonifyParameterError, one_line
from ._optional import require
from .norms import NormLog

__all__ = ["DEFAULT_TAG_PATTERN", "ScalarTail", "check_tag_pattern", "layer_of", "load_tensorboard"]

#: Scalar tags taken as gradient norms by default; the first group names the layer:
#: ``grad_norm/<layer>`` (sonify's own, and ``gradient_norms/...`` and the like), Lightning's
#: ``grad_norm`` utility and ``log_grad_norm`` (``grad_2.0_norm/<parameter>``, ``grad_2.0_norm_total``),
#: and the Hugging Face Trainer's total ``grad_norm`` (one voice, named by its tag).
DEFAULT_TAG_PATTERN = r"(?i)(?:grad(?:ient)?[_ ]?norms?|grad_(?:\d+(?:\.\d+)?|inf)_norm)[/_.](.+)|(?:^|/)grad_norm$"


def layer_of(found: re.Match, tag: str) -> str:
    """The layer a matching tag names: the pattern's first group, or the whole tag when it has none."""
    return found.group(1) if found.re.groups and found.group(1) else tag


def check_tag_pattern(tags: str) -> str:
    """``tags`` if it is a valid regular expression, else a one-line error."""
    try:
        re.compile(tags)
    except re.error as exc:
        raise SonifyParameterError(f"tags {tags!r} is not a valid regular expression ({exc}); fix {{tags}}") from None
    return tags


def load_tensorboard(path: str | os.PathLike, tags: str = DEFAULT_TAG_PATTERN) -> NormLog:
    """Read per-layer gradient norms from TensorBoard event files.

    Parameters
    ----------
    path : str or PathLike
        A run directory (its event files are read) or one ``events.out.tfevents.*`` file.
    tags : str
        Regular expression selecting the scalar tags that hold norms; its first
        group, if any, is the layer name (default: ``grad_norm/<layer>``,
        ``gradient_norms/<layer>``, ...).

    Returns
    -------
    NormLog
        One row per step that any selected tag has; a layer without a value
        at a step is missing there.

    Raises
    ------
    SonifyError
        When the path holds no event files, no scalar matches ``tags`` (the
        message lists the scalars found), or a value is negative.
    """
    path = Path(path)
    if not path.exists():
        raise SonifyError(f"{path} does not exist; give a TensorBoard run directory or event file")
    files = [path] if path.is_file() else sorted(path.glob("events.out.tfevents.*"))
    if not files or not all("tfevents" in file.name for file in files):
        raise SonifyError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    accumulator = require(
        "tensorboard.backend.event_processing.event_accumulator",
        extra="tensorboard",
        purpose="reading TensorBoard logs",
    )
    pattern = re.compile(tags)
    series: dict[str, dict[int, float]] = {}
    for file in files:
        events = accumulator.EventAccumulator(str(file), size_guidance={accumulator.SCALARS: 0})
        try:
            events.Reload()
        except Exception as exc:
            raise SonifyError(f"{file}: cannot read this TensorBoard event file ({one_line(exc)})") from None
        available = events.Tags().get("scalars", [])
        for tag in available:
            found = pattern.search(tag)
            if found:
                name = layer_of(found, tag)
                series.setdefault(name, {}).update({event.step: event.value for event in events.Scalars(tag)})
    if not series:
        scalars = sorted({tag for file in files for tag in _scalar_tags(accumulator, file)})
        raise SonifyError(
            f"{path}: no scalar tag matches {tags!r}; scalars found: {', '.join(scalars[:10]) or 'none'}; "
            "pass a pattern that selects the gradient norms"
        )
    names = tuple(series)
    steps = np.array(sorted({step for values in series.values() for step in values}), dtype=np.int64)
    norms = np.full((len(steps), len(names)), np.nan)
    missing = np.ones(norms.shape, dtype=bool)
    row = {step: index for index, step in enumerate(steps)}
    for column, name in enumerate(names):
        for step, value in series[name].items():
            norms[row[step], column] = value
            missing[row[step], column] = False
    if (norms[~missing] < 0).any():
        raise SonifyError(f"{path}: negative values under {tags!r}; these are not gradient norms")
    return NormLog(norms, missing, steps, names, {"source": f"tensorboard {path}", "tags": tags}, None)


def _scalar_tags(accumulator: Any, file: Path) -> list[str]:
    events = accumulator.EventAccumulator(str(file))
    events.Reload()
    return events.Tags().get("scalars", [])


class ScalarTail:
    """The scalars added to a TensorBoard run folder (or event file) since the last look, read incrementally.

    Each event file is read from where the last :meth:`read` stopped, so a
    look costs what is new, however long the run; new event files (a second
    run in the same folder, a writer restarted) are picked up as they appear;
    a record still being written is left for the next look. Only the record
    framing is parsed here (the event itself by TensorBoard's own protocol
    buffer classes); checksums are not verified, as a follower reads records
    whole or not at all.

    Examples
    --------
    Follow a run that Lightning's TensorBoardLogger writes::

        tail = ScalarTail(Path("lightning_logs/version_0"))
        for tag, step, value in tail.read():  # everything so far; then only what is new
            ...
    """

    #: Bytes read at a time from an event file (bounds memory on a long run's first look).
    chunk = 1 << 20

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._event = require(
            "tensorboard.compat.proto.event_pb2", extra="tensorboard", purpose="following TensorBoard logs"
        )
        self._offsets: dict[Path, int] = {}

    def files(self) -> list[Path]:
        """The event files, in the order they were created (their names start with a timestamp)."""
        if self.path.is_file():
            return [self.path]
        return sorted(self.path.glob("events.out.tfevents.*"))

    def read(self) -> Iterator[tuple[str, int, float]]:
        """``(tag, step, value)`` of every scalar written since the last call, file by file, as they are read."""
        for file in self.files():
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                continue
            offset = self._offsets.get(file, 0)
            if size < offset:  # truncated and rewritten: read it again from the start
                offset = 0
            while offset < size:
                with open(file, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read(min(self.chunk, size - offset))
                found, used = self._records(data)
                if used == 0:
                    if len(data) < size - offset:  # one record larger than a chunk
                        self.chunk *= 2
                        continue
                    break  # a record still being written
                offset += used
                self._offsets[file] = offset
                yield from found
            self._offsets[file] = offset

    def _records(self, data: bytes) -> tuple[list[tuple[str, int, float]], int]:
        """The scalars in the whole records of ``data``, and the bytes those records used."""
        found = []
        position = 0
        event = self._event.Event()
        while position + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, position)
            end = position + 12 + length + 4
            if end > len(data):
                break
            event.ParseFromString(data[position + 12 : position + 12 + length])
            for value in event.summary.value:
                number = _scalar(value)
                if number is not None:
                    found.append((value.tag, int(event.step), number))
            position = end
        return found, position


def _scalar(value: object) -> float | None:
    """A summary value's number: ``simple_value`` (PyTorch's writer), or a one-element float tensor (TF2's)."""
    if value.HasField("simple_value"):  # type: ignore[attr-defined]
        return float(value.simple_value)  # type: ignore[attr-defined]
    if value.HasField("tensor"):  # type: ignore[attr-defined]
        tensor = value.tensor  # type: ignore[attr-defined]
        if tensor.float_val:
            return float(tensor.float_val[0])
        if tensor.double_val:
            return float(tensor.double_val[0])
        if len(tensor.tensor_content) in (4, 8):
            return float(np.frombuffer(tensor.tensor_content, "<f4" if len(tensor.tensor_content) == 4 else "<f8")[0])
    return None
