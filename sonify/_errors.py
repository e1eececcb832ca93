"""Errors and warnings that sonify raises for bad input.

Every message is one line that names the problem and the fix; the CLI prints
it as ``sonify: error: <message>`` without a traceback.
"""

from __future__ import annotations


class SonifyError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class SonifyWarning(UserWarning):
    """Something the user should know about that does not stop the run."""
