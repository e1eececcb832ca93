"""What the framework callbacks share: options in, one Sonifier per training run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import SonifyParameterError, one_line, warn
from ..output import check_audio_path
from ..sonifier import Sonifier, unique_out
from ..trackers import check_options, tracker


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

    def __init__(
        self,
        out: str | os.PathLike | None = None,
        *,
        log_audio: bool = True,
        log_audio_every_n_steps: int | None = None,
        log_norms: bool = False,
        audio_seconds: float = 60.0,
        **options: Any,
    ) -> None:
        if out is not None:
            check_audio_path(out, overwrite=True)  # the name now; whether it is free, when a run starts
        if "trackers" in options:
            raise SonifyParameterError(
                "the callback finds the trackers itself (the trainer's loggers); leave trackers= out"
            )
        check_options(log_audio_every_n_steps, audio_seconds)
        self.out = Path(out) if out is not None else None
        self.options = options
        self.tracker_options = {
            "log_audio_every_n_steps": log_audio_every_n_steps,
            "log_norms": log_norms,
            "audio_seconds": audio_seconds,
        }
        self.log_audio = log_audio or log_norms
        self.sonifier: Sonifier | None = None
        self._hooked = False  # the Sonifier records at the optimizer's steps itself (DeepSpeed)

    def _start(
        self, model: Any, trackers: list[Any] | None = None, zero_optimizer: Any = None, **metadata: Any
    ) -> None:
        """A Sonifier for this run; with DeepSpeed ZeRO, hooked to its optimizer (the framework's step event
        comes too late or too early there: the gradients are DeepSpeed's pieces only inside its step)."""
        self._stop(drain=False)  # a run that died without telling us
        self._hooked = zero_optimizer is not None
        extra = {**metadata, **self.options.get("metadata", {})}
        options = {key: value for key, value in self.options.items() if key != "metadata"}
        if trackers and self.log_audio:
            options.update(self.tracker_options, trackers=trackers)
        out = self.out
        if out is not None and not options.get("overwrite"):
            out = unique_out(out)
        try:
            self.sonifier = Sonifier(model, zero_optimizer, out=out, metadata=extra, **options)
        except Exception as exc:  # inside the framework's loop: never stop the training
            self.sonifier = None
            reason = one_line(exc)
            warn(f"sonify is off for this run: {reason}", stacklevel=3)

    def _step(self) -> None:
        if self.sonifier is not None and not self._hooked:
            self.sonifier.step()

    def _stop(self, drain: bool = True) -> None:
        if self.sonifier is not None:
            self.sonifier.close(drain=drain)

    @staticmethod
    def _usable(candidates: list[Any]) -> list[Any]:
        """The candidates sonify can log to; one notice for each it cannot."""
        usable = []
        for candidate in candidates:
            try:
                tracker(candidate)
                usable.append(candidate)
            except Exception as exc:  # inside the framework's loop: never stop the training
                reason = one_line(exc)
                warn(f"{reason}; the sound is in sonify's own files", stacklevel=4)
        return usable
