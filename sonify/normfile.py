"""The norm log: the run's gradient norms on disk, the source of truth.

A norm log is two files side by side:

``<name>.norms.csv``
    A header ``step,<layer 1>,<layer 2>,...`` and one row per optimizer step
    (steps count from 1). A cell holds the L2 norm of the layer's gradient,
    ``nan``/``inf`` when it was not finite, and is **empty** when the layer
    had no gradient at that step (frozen or unused). Rows are appended in
    whole lines and flushed at least once a second, so a killed run keeps
    every row up to the last flush.
``<name>.norms.json``
    The run's metadata: layer names, settings, versions, and at the end a
    summary. Optional: the CSV alone is a complete log.

Both read without sonify::

    import csv, numpy as np
    rows = list(csv.DictReader(open("run.norms.csv")))
    norms = np.genfromtxt("run.norms.csv", delimiter=",", names=True)

(numpy reads empty cells as NaN; ``load_norms`` keeps them apart from real NaN.)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyError, SonifyIOError
from ._files import check_new_file, create_exclusive, os_error_reason
from .norms import NormLog, is_running

__all__ = ["STEP_COLUMNS", "NormLogWriter", "format_norms", "log_paths", "parse_row", "read_csv_log", "split_csv_line"]

_LOG_SUFFIX = ".norms.csv"
_META_SUFFIX = ".norms.json"


def log_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    """CSV and JSON paths of the norm log that belongs to ``base``.

    ``base`` may be the audio file (``run.wav``), the log (``run.norms.csv``)
    or the bare stem (``run``).

    Examples
    --------
    >>> [p.name for p in log_paths("audio_out/run.wav")]
    ['run.norms.csv', 'run.norms.json']
    """
    path = Path(base)
    name = path.name
    for suffix in (_LOG_SUFFIX, _META_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem if path.suffix.lower() in (".wav", ".flac", ".csv", ".json") else name
    return path.with_name(name + _LOG_SUFFIX), path.with_name(name + _META_SUFFIX)


class NormLogWriter:
    """Append rows of norms to a norm log.

    Rows are written as whole lines by one ``write`` call per batch on an
    unbuffered file, so the file never ends in half a row, even when the
    process is killed.

    The writer only ever touches files it created: the CSV is created
    exclusively (an existing file is an error unless ``overwrite``), and the
    JSON sidecar is replaced only while the file at its path is still the one
    this writer wrote (a later run that took the name is left alone).

    Parameters
    ----------
    path : str or PathLike
        The CSV path (``log_paths`` gives the conventional one).
    layer_names : sequence of str
    metadata : dict, optional
        Written to the JSON sidecar at once; :meth:`close` adds a summary.
    overwrite : bool
        Replace existing files of that name.

    Raises
    ------
    SonifyParameterError
        When the files exist (and not ``overwrite``).
    SonifyIOError
        When they cannot be created or written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layer_names: Sequence[str],
        metadata: dict | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.meta_path = log_paths(path)[1]
        self.layer_names = tuple(layer_names)
        self.metadata = {"layers": list(self.layer_names), **(metadata or {})}
        self.rows = 0
        self._size = 0  # bytes of whole rows in the CSV
        self._meta_identity: tuple[int, int] | None = None
        check_new_file(self.meta_path, overwrite=overwrite)
        self._fd: int | None = create_exclusive(self.path, overwrite=overwrite)
        try:
            self._write(_format_rows([("step", *self.layer_names)]))
            self.write_metadata()
        except OSError:
            self.close()
            raise

    def append(self, steps: Iterable[int], norms: np.ndarray, missing: np.ndarray) -> None:
        """Append one row per step (``norms`` and ``missing`` shaped (rows, layers))."""
        rows = [
            f"{step},{','.join(row)}\n" for step, row in zip(np.asarray(steps).tolist(), format_norms(norms, missing))
        ]
        if rows:
            self._write("".join(rows))
            self.rows += len(rows)

    def write_metadata(self, **extra: Any) -> None:
        """Rewrite the JSON sidecar atomically with ``extra`` merged in.

        Raises
        ------
        SonifyIOError
            When it cannot be written, or when the file at its path is no
            longer the one this writer created (then nothing is written).
        """
        self.metadata.update(extra)
        if self._meta_identity is not None and _identity(self.meta_path) != self._meta_identity:
            if _identity(self.meta_path) is None:
                gone = "its folder was deleted" if not self.meta_path.parent.exists() else "it was deleted"
                raise SonifyIOError(f"cannot update {self.meta_path}: {gone} during the run")
            raise SonifyIOError(f"{self.meta_path} was replaced by another program; sonify leaves it alone")
        temporary = self.meta_path.with_name(f".{self.meta_path.name}.{os.getpid()}.tmp")
        try:
            fd = create_exclusive(temporary, overwrite=True)
            with os.fdopen(fd, "w") as file:
                file.write(json.dumps(self.metadata, indent=2, default=str) + "\n")
            os.replace(temporary, self.meta_path)
            self._meta_identity = _identity(self.meta_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise SonifyIOError(f"cannot write {self.meta_path}: {os_error_reason(exc)}") from None

    def close(self) -> None:
        """Close the CSV (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, text: str) -> None:
        data = text.encode()
        start = self._size
        assert self._fd is not None, "written after close"
        try:
            while data:  # os.write may write less than asked (signals, full disk)
                written = os.write(self._fd, data)
                data = data[written:]
                self._size += written
        except OSError as exc:
            with contextlib.suppress(OSError):  # never leave half a row behind
                os.ftruncate(self._fd, start)
                self._size = start
            raise SonifyIOError(f"cannot write the norm log {self.path}: {os_error_reason(exc)}") from None


def format_norms(norms: np.ndarray, missing: np.ndarray) -> list[list[str]]:
    """CSV cells of a block of norms: the shortest text that reads back to the same value.

    A value that is exactly a float32 (what capture computes, normally) is
    written as the shortest float32 text (``0.10008452``); a larger or more
    precise float64 keeps all its digits, so a norm never overflows to
    ``inf`` on its way to disk. Missing values are empty cells.

    Examples
    --------
    >>> format_norms(np.array([[0.1, 1e300, np.nan]]), np.array([[False, False, False]]))
    [['0.1', '1e+300', 'nan']]
    """
    values = np.asarray(norms, dtype=np.float64)
    with np.errstate(over="ignore"):
        single = values.astype(np.float32)
    exact = (single.astype(np.float64) == values) | ~np.isfinite(values)
    cells = np.where(exact, single.astype(str), values.astype(str))
    cells[np.asarray(missing, dtype=bool)] = ""
    return cells.tolist()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _format_rows(rows: list[tuple]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def read_csv_log(path: Path, *, drop_incomplete: bool = False) -> NormLog:
    """Read a CSV norm log (see :func:`sonify.load_norms`, which also reads TensorBoard runs)."""
    csv_path, meta_path = _resolve_log(Path(path))
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # a BOM (Excel's UTF-8 CSV) is not part of the header
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not a text file"
        raise SonifyError(f"cannot read norm log {csv_path}: {reason}") from None
    if "\0" in text:
        raise SonifyError(f"{csv_path}: the file holds binary data (NUL bytes); it is not a norm log")
    lines = text.splitlines()
    if not lines:
        raise SonifyError(f"{csv_path}: the file is empty; it is not a norm log")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(split_csv_line(line))
        except ValueError as exc:
            raise SonifyError(f"{csv_path}:{number}: {exc}; repair or remove that line") from None
    header = [name.strip() for name in records[0]]
    step_column = next((i for i, name in enumerate(header) if name.lower() in STEP_COLUMNS), None)
    if step_column is None or len(header) < 2:
        raise SonifyError(
            f"{csv_path}:1: expected a header with a step column ({', '.join(STEP_COLUMNS)}) and one column per "
            f"layer; found {header[:6]}"
        )
    names = tuple(name for i, name in enumerate(header) if i != step_column)
    layer_columns = [i for i in range(len(header)) if i != step_column]
    if len(set(names)) != len(names) or not all(names):
        raise SonifyError(f"{csv_path}:1: layer names in the header must be unique and non-empty")
    body = records[1:]
    metadata = _read_metadata(meta_path)
    if body and not text.endswith("\n") and is_running(metadata):
        body = body[:-1]  # a run still being written: its last line may be cut short, even if it parses
    elif body and not text.endswith("\n") and len(body[-1]) != len(header):
        if not drop_incomplete:
            raise SonifyError(
                f"{csv_path}:{len(lines)}: last line is incomplete ({len(body[-1])} of {len(header)} fields); "
                "pass {drop_incomplete}True to ignore it"
            )
        body = body[:-1]
    steps = np.empty(len(body), dtype=np.int64)
    norms = np.empty((len(body), len(names)))
    missing = np.zeros(norms.shape, dtype=bool)
    for index, record in enumerate(body):
        number = index + 2
        if len(record) != len(header):
            raise SonifyError(
                f"{csv_path}:{number}: expected {len(header)} fields (step + {len(names)} layers), found {len(record)}"
            )
        try:
            steps[index], norms[index], missing[index] = parse_row(record, step_column, layer_columns)
        except ValueError as exc:
            raise SonifyError(f"{csv_path}:{number}: {exc} in {_shorten(record)}") from None
        if index and steps[index] <= steps[index - 1]:
            raise SonifyError(f"{csv_path}:{number}: step {steps[index]} does not follow step {steps[index - 1]}")
    if (norms[~missing] < 0).any():
        raise SonifyError(f"{csv_path}: negative norms found; a norm log holds L2 norms, which are >= 0")
    return NormLog(norms, missing, steps, names, metadata, csv_path)


def split_csv_line(line: str) -> list[str]:
    """The cells of one line of a CSV norm log. Raises ValueError for a line the csv module refuses.

    A norm log has one row per line, so a stray ``"`` never joins lines
    together, and a field over the csv module's limit (128 KiB) is a bad line,
    not a crash.

    Examples
    --------
    >>> split_csv_line('3,0.5,"1e-3"')
    ['3', '0.5', '1e-3']
    """
    line = line.removesuffix("\r")  # a CRLF file read line by line
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise ValueError(f"not a CSV row ({exc})") from None


def parse_row(cells: Sequence[str], step_column: int, layer_columns: Sequence[int]) -> tuple[int, list, list]:
    """One CSV row of a norm log: (step, norms, missing). Raises ValueError saying what is wrong.

    Examples
    --------
    >>> parse_row(["3", "0.5", ""], 0, [1, 2])
    (3, [0.5, nan], [False, True])
    """
    try:
        step = float(cells[step_column])
        if not (step == int(step) and 0 <= step < 2**53):
            raise ValueError(f"step {cells[step_column]!r} is not a whole number from 0 to 2**53")
        values = [cells[column].strip() for column in layer_columns]
        norms = [float(value) if value else math.nan for value in values]
    except (ValueError, OverflowError) as exc:
        if str(exc).startswith("step "):
            raise
        raise ValueError("not a number") from None
    return int(step), norms, [not value for value in values]


def _shorten(record: list[str], limit: int = 80) -> str:
    text = repr(record)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Header names recognised as the step column of a CSV of norms.
STEP_COLUMNS = ("step", "steps", "global_step", "iteration", "iter")


def _resolve_log(path: Path) -> tuple[Path, Path]:
    if path.suffix.lower() == ".csv":
        csv_path, meta_path = path, log_paths(path)[1]
    else:
        csv_path, meta_path = log_paths(path)
    if not csv_path.exists() and not path.exists():
        raise SonifyError(f"norm log {path} does not exist; give the .norms.csv written by a run")
    if not csv_path.exists():
        raise SonifyError(f"{path} has no norm log beside it ({csv_path.name}); give the .norms.csv file")
    return csv_path, meta_path


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    if not meta_path.exists():
        return {}
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise SonifyError(f"cannot read run metadata {meta_path}: {exc}; fix or delete the file") from None
    if not isinstance(metadata, dict):
        raise SonifyError(f"{meta_path}: expected a JSON object; fix or delete the file")
    return metadata
