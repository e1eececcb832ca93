"""What the framework callbacks share: options in, one Sonifier per training run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import SonifyError
from ..output import check_audio_path
from ..sonifier import Sonifier, unique_out, warn


class _SonifierHolder:
    """Keeps the Sonifier options and the Sonifier of the current run.

    The framework calls the callback from inside its training loop, so
    nothing here raises: a Sonifier that cannot start gives one warning and
    the run trains without sound. A new run closes the Sonifier of a run that
    ended by an exception the framework did not report (the Hugging Face
    ``Trainer`` has no exception event), and a repeated run with the same
    ``out`` gets its own files (``run-2.wav``, ...): a run never touches
    another run's files.

    Attributes
    ----------
    sonifier : Sonifier or None
        The Sonifier of the current (or last) run; kept after the run for its stats and files.
    """

    def _hold(self, out: str | os.PathLike | None, options: dict[str, Any]) -> None:
        if out is not None:
            check_audio_path(out, overwrite=True)  # the name now; whether it is free, when a run starts
        self.out = Path(out) if out is not None else None
        self.options = options
        self.sonifier: Sonifier | None = None

    def _start(self, model: Any, **metadata: Any) -> None:
        self._stop(drain=False)  # a run that died without telling us
        extra = {**metadata, **self.options.get("metadata", {})}
        options = {key: value for key, value in self.options.items() if key != "metadata"}
        out = self.out
        if out is not None and not options.get("overwrite"):
            out = unique_out(out)
        try:
            self.sonifier = Sonifier(model, out=out, metadata=extra, **options)
        except Exception as exc:  # inside the framework's loop: never stop the training
            self.sonifier = None
            reason = str(exc) if isinstance(exc, SonifyError) else f"{type(exc).__name__}: {exc}"
            warn(f"sonify is off for this run: {reason}", stacklevel=3)

    def _step(self) -> None:
        if self.sonifier is not None:
            self.sonifier.step()

    def _stop(self, drain: bool = True) -> None:
        if self.sonifier is not None:
            self.sonifier.close(drain=drain)
