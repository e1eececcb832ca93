"""What the framework callbacks share: options in, one Sonifier per training run."""

from __future__ import annotations

import os
from typing import Any

from ..sonifier import Sonifier


class _SonifierHolder:
    """Keeps the Sonifier options and the Sonifier of the current run.

    Attributes
    ----------
    sonifier : Sonifier or None
        The Sonifier of the current (or last) run; kept after the run for its stats and files.
    """

    def _hold(self, out: str | os.PathLike | None, options: dict[str, Any]) -> None:
        self.out = out
        self.options = options
        self.sonifier: Sonifier | None = None

    def _start(self, model: Any, **metadata: Any) -> None:
        extra = {**metadata, **self.options.get("metadata", {})}
        options = {key: value for key, value in self.options.items() if key != "metadata"}
        self.sonifier = Sonifier(model, out=self.out, metadata=extra, **options)

    def _step(self) -> None:
        if self.sonifier is not None:
            self.sonifier.step()

    def _stop(self, drain: bool = True) -> None:
        if self.sonifier is not None:
            self.sonifier.close(drain=drain)
