"""Creating files safely: never truncate a file of another run, say why a write failed."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import SonifyIOError, SonifyParameterError


def check_new_file(path: Path, *, overwrite: bool = False) -> None:
    """Refuse a path that is a folder, or a file that exists (unless ``overwrite``)."""
    if path.is_dir():
        raise SonifyParameterError(f"{path} is a folder; give a file name for {{out}}")
    blocker = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        raise SonifyParameterError(f"cannot create {path}: {blocker} is a file, not a folder; choose another {{out}}")
    if path.exists() and not overwrite:
        raise SonifyParameterError(
            f"{path} already exists and sonify never overwrites a file unless asked: "
            "choose another {out} or pass {overwrite}True"
        )


def create_exclusive(path: Path, *, overwrite: bool = False) -> int:
    """Create ``path`` (and its folder) for writing and return the descriptor.

    Without ``overwrite`` the file must not exist (``O_EXCL``): a file of
    another run is never truncated, even by a race between two processes.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SonifyIOError(
            f"cannot create the folder {path.parent}: {os_error_reason(exc)}; choose another {{out}}"
        ) from None
    try:
        if overwrite and (path.is_symlink() or path.is_file()):
            # Replace, never write through: truncating would also empty what a symlink or a hard link
            # points at (another run's file), and a player still reading the old file keeps it whole.
            path.unlink()
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise SonifyParameterError(
            f"{path} already exists and sonify never overwrites a file unless asked: "
            "choose another {out} or pass {overwrite}True"
        ) from None
    except OSError as exc:
        raise SonifyIOError(f"cannot create {path}: {os_error_reason(exc)}; choose another {{out}}") from None


def write_new_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Create ``path`` holding ``data`` (as :func:`create_exclusive`: a link is replaced, never written through)."""
    with os.fdopen(create_exclusive(path, overwrite=overwrite), "wb") as file:
        file.write(data)


def os_error_reason(exc: OSError) -> str:
    """The cause of an OSError in words ("No space left on device")."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
