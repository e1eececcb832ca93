"""Where norms come from: the one place that decides what a path is, and opens it.

A source of norms is a :class:`~sonify.NormLog`, a (steps, layers) array, a
norm log written by sonify (or any CSV of norms), or a TensorBoard run. What
a path is (:func:`source_kind`) is decided here only: ``render``, ``play``,
``compare``, ``follow`` and the CLI all ask this module.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

from ._errors import SonifyError, SonifyParameterError
from .importers import load_tensorboard
from .normfile import log_paths, read_csv_log
from .norms import NormLog

__all__ = ["AUDIO_SUFFIXES", "SourceKind", "as_norm_log", "load_norms", "source_kind"]

#: Files that ``play`` streams as they are, rather than reading the norm log beside them.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")


class SourceKind(enum.Enum):
    """What a path given as a source of norms is."""

    CSV = "norm log (CSV)"
    RUNS = "folder of norm logs"
    TENSORBOARD = "TensorBoard run"
    STDIN = "standard input"
    PIPE = "pipe"
    AUDIO = "audio file"


def source_kind(path: str | os.PathLike, *, audio: bool = False) -> SourceKind:
    """What ``path`` holds, from its name and what exists there (nothing is read).

    ``-`` is standard input; a FIFO or ``<(...)`` a pipe; a folder that
    holds ``.norms.csv`` files and no TensorBoard events a folder of runs;
    any other folder or an ``events.out.tfevents.*`` file a TensorBoard run;
    a ``.csv`` a norm log.
    With ``audio=True`` (playing) an audio file is itself; otherwise a WAV or
    a run's stem means the norm log beside it. A path with no suffix that
    does not exist yet, and has no log beside it, is a TensorBoard run folder
    that training has not made yet.

    Examples
    --------
    >>> source_kind("runs/x.norms.csv").name, source_kind("-").name, source_kind("run.wav", audio=True).name
    ('CSV', 'STDIN', 'AUDIO')
    >>> source_kind("/nonexistent/runs/fit").name
    'TENSORBOARD'
    """
    if str(path) == "-":
        return SourceKind.STDIN
    path = Path(path)
    if path.exists() and not (path.is_file() or path.is_dir()):
        return SourceKind.PIPE
    if path.is_dir() and any(path.glob("*.norms.csv")) and not any(path.glob("**/*tfevents*")):
        return SourceKind.RUNS
    if path.is_dir() or "tfevents" in path.name:
        return SourceKind.TENSORBOARD
    if path.name.lower().endswith(".csv"):
        return SourceKind.CSV
    if audio and (path.suffix.lower() in AUDIO_SUFFIXES or path.is_file()):
        return SourceKind.AUDIO
    if not path.suffix and not path.exists() and not log_paths(path)[0].exists():
        return SourceKind.TENSORBOARD
    return SourceKind.CSV


def load_norms(path: str | os.PathLike, *, drop_incomplete: bool = False) -> NormLog:
    """Read a norm log written by sonify, any CSV of norms recorded elsewhere, or a TensorBoard run.

    The CSV needs a header with a step column (``step``, ``steps``,
    ``global_step``, ``iteration`` or ``iter``, in any position, any case)
    and one column per layer; an empty cell means the layer had no gradient.
    A TensorBoard run directory or event file is read with
    :func:`sonify.load_tensorboard`.

    Parameters
    ----------
    path : str or PathLike
        The ``.norms.csv`` file, or the WAV / stem it belongs to; or a TensorBoard run.
    drop_incomplete : bool
        Ignore a last line that stops short (a file cut off by hand or by a
        full disk) instead of raising.

    Returns
    -------
    NormLog

    Raises
    ------
    SonifyError
        When the file is missing, unreadable or malformed; the message names
        the file and line.

    Examples
    --------
    A log of the reference experiment::

        log = load_norms("audio_out/run.norms.csv")
        log.norms.shape      # (200, 4)
        log.layer_names      # ('conv1', 'conv2', 'fc1', 'fc2')
    """
    kind = source_kind(path)
    if kind is SourceKind.TENSORBOARD:
        if not Path(path).exists():
            raise SonifyError(
                f"{path} does not exist; give the .norms.csv written by a run, or a TensorBoard run folder"
            )
        return load_tensorboard(path)
    if kind is not SourceKind.CSV:
        raise SonifyParameterError(f"cannot read norms from {path} (a {kind.value}); give a .norms.csv file")
    return read_csv_log(Path(path), drop_incomplete=drop_incomplete)


def as_norm_log(source: Any, *, drop_incomplete: bool = False) -> NormLog:
    """Any source of norms as a :class:`NormLog`: the one door into rendering and playing.

    Parameters
    ----------
    source : NormLog, path or array
        A ``NormLog``; a path to a norm log (CSV, or the WAV / stem it belongs
        to), a TensorBoard run folder or event file; or a (steps, layers)
        array of norms.
    drop_incomplete : bool
        For a CSV: ignore a cut-off last line.

    Examples
    --------
    >>> as_norm_log([[0.5, 2.0], [1.0, float("nan")]]).norms.shape
    (2, 2)
    """
    if isinstance(source, NormLog):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_norms(source, drop_incomplete=drop_incomplete)
    try:
        return NormLog.from_array(source)
    except SonifyError:  # an array of the wrong shape: its own message
        raise
    except (TypeError, ValueError):
        raise SonifyParameterError(
            f"cannot read norms from a {type(source).__name__}; give a NormLog, a path or a (steps, layers) array"
        ) from None
