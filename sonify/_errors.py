"""Errors and warnings that sonify raises.

Every message is one line that names the problem and the fix; the CLI prints
it as ``sonify: error: <message>`` without a traceback.

The hierarchy lets callers catch what they expect::

    SonifyError                      every error of sonify's own
    ├── SonifyParameterError         a bad argument (also a ValueError)
    └── SonifyIOError                a file that cannot be read or written (also an OSError)

Library messages name Python parameters (``out=``); where a message names a
parameter through ``{out}``-style fields, the CLI shows its option
(``--out``) instead (see :meth:`SonifyError.for_cli`).
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from typing import Any


class SonifyError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Parameters
    ----------
    message : str
        The text; ``{name}`` fields stand for parameters (``{out}``), shown
        as ``out=`` by ``str()`` and as the CLI's option by :meth:`for_cli`.

    Examples
    --------
    >>> error = SonifyError("the file exists; pass {overwrite}True or choose another {out}")
    >>> str(error)
    'the file exists; pass overwrite=True or choose another out='
    >>> error.for_cli({"overwrite": "--overwrite", "out": "-o/--out"})
    'the file exists; pass --overwrite or choose another -o/--out'
    """

    def __init__(self, message: str) -> None:
        self.template = message
        super().__init__(_fill(message, {}))

    def for_cli(self, options: dict[str, str]) -> str:
        """The message with parameters named as the command line's options."""
        return _fill(self.template, options, cli=True)


class SonifyParameterError(SonifyError, ValueError):
    """An argument that sonify cannot use (checked before anything is created)."""


class SonifyIOError(SonifyError, OSError):
    """A file that cannot be read or written (full disk, no permission, removed folder...)."""


class SonifyWarning(UserWarning):
    """Something the user should know about that does not stop the run."""


_FIELD = re.compile(r"\{([a-z_]+)\}(True|False)?")


def _fill(template: str, options: dict[str, str], cli: bool = False) -> str:
    def name_of(found: re.Match) -> str:
        name, flag = found.group(1), found.group(2) or ""
        if cli and name in options:
            return options[name]  # a flag ("--overwrite", "--no-figure") stands for "overwrite=True"...
        return f"{name}={flag}"

    return _FIELD.sub(name_of, template)


def warn(message: str, stacklevel: int = 2) -> None:
    """Give a :class:`SonifyWarning`; where warnings are turned into errors, print it instead.

    A monitor never raises into the training loop, not even through ``-W error``.
    """
    try:
        warnings.warn(message, SonifyWarning, stacklevel=stacklevel + 1)
    except Exception:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"sonify: warning: {message}\n")


def one_line(exc: BaseException, *, named: bool = False) -> str:
    """An exception as one line for a warning or a summary: sonify's own message, or ``Type: first line``.

    Examples
    --------
    >>> one_line(OSError(28, "No space left on device"))
    'OSError: [Errno 28] No space left on device'
    >>> one_line(SonifyError("the disk is full; free space"))
    'the disk is full; free space'
    >>> one_line(RuntimeError())
    'RuntimeError'
    >>> one_line(SonifyError("the disk is full"), named=True)  # where several kinds of failure meet (trackers)
    'SonifyError: the disk is full'
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SonifyError) and not named:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def renamed_keyword(
    old: str,
    old_value: Any,
    new: str,
    new_value: Any,
    why: str = "the sound card, not the torch device",
    default: Any = None,
) -> Any:
    """The value of a keyword that was renamed, from either name (the old one with a deprecation warning).

    The old keyword defaults to None (not given); ``default`` is the new one's default.
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise SonifyParameterError(f"{old}= is the old name of {new}=; give only {new}=")
    warnings.warn(f"{old}= is now {new}= ({why})", DeprecationWarning, stacklevel=3)
    return old_value
