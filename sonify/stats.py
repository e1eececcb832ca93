"""Summary figures of a run: steps, NaN/Inf steps, spikes, norm ranges, and their summary text.

Kept up to date block by block while a run records (:class:`RunStats`), or
computed from a whole log (:meth:`sonify.NormLog.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunStats"]


class RunStats:
    """Running totals of a run's norms: what the end-of-run summary reports.

    Updated block by block, so it costs nothing to keep during training.

    Examples
    --------
    >>> stats = RunStats(["a", "b"])
    >>> stats.update(np.array([1, 2]), np.array([[0.5, np.nan], [2.0, 1.0]]), np.zeros((2, 2), bool))
    >>> stats.steps, stats.nonfinite_steps, stats.first_nonfinite_step, stats.ranges()["a"]
    (2, 1, 1, (0.5, 2.0))
    """

    def __init__(self, layer_names: Sequence[str]) -> None:
        self.layer_names = tuple(layer_names)
        count = len(self.layer_names)
        self.steps = 0
        self.last_step: int | None = None
        self.nonfinite_steps = 0
        self.first_nonfinite_step: int | None = None
        self.first_nonfinite_layers: tuple[str, ...] = ()
        self.missing_counts = np.zeros(count, dtype=np.int64)
        self.spike_steps = 0
        self.first_spike_step: int | None = None
        self.first_spike_layers: tuple[str, ...] = ()
        self.first_spike_factor: float | None = None
        self._low = np.full(count, np.inf)
        self._high = np.full(count, -np.inf)

    def update(
        self,
        steps: np.ndarray,
        norms: np.ndarray,
        missing: np.ndarray,
        spikes: np.ndarray | None = None,
        ratios: np.ndarray | None = None,
    ) -> None:
        """Add a block of rows (with their spikes and ratios to the running median, if known)."""
        if len(steps) == 0:
            return
        if spikes is not None:
            spiking = np.flatnonzero(spikes.any(axis=1))
            if spiking.size and self.first_spike_step is None:
                first = spiking[0]
                self.first_spike_step = int(steps[first])
                self.first_spike_layers = tuple(n for n, s in zip(self.layer_names, spikes[first]) if s)
                if ratios is not None:
                    self.first_spike_factor = float(np.nanmax(np.where(spikes[first], ratios[first], np.nan)))
            self.spike_steps += int(spiking.size)
        finite = np.isfinite(norms)
        bad_rows = np.flatnonzero((~finite & ~missing).any(axis=1))
        if bad_rows.size and self.first_nonfinite_step is None:
            first = bad_rows[0]
            self.first_nonfinite_step = int(steps[first])
            bad = ~finite[first] & ~missing[first]
            self.first_nonfinite_layers = tuple(n for n, b in zip(self.layer_names, bad) if b)
        self.nonfinite_steps += int(bad_rows.size)
        self.missing_counts += missing.sum(axis=0)
        self._low = np.fmin(self._low, np.where(finite, norms, np.inf).min(axis=0))
        self._high = np.fmax(self._high, np.where(finite, norms, -np.inf).max(axis=0))
        self.steps += len(steps)
        self.last_step = int(steps[-1])

    def ranges(self) -> dict[str, tuple[float, float] | None]:
        """(min, max) of each layer's finite norms; None for a layer that had none."""
        return {
            name: (float(lo), float(hi)) if lo <= hi else None
            for name, lo, hi in zip(self.layer_names, self._low, self._high)
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "steps": self.steps,
            "last_step": self.last_step,
            "nonfinite_steps": self.nonfinite_steps,
            "first_nonfinite_step": self.first_nonfinite_step,
            "first_nonfinite_layers": list(self.first_nonfinite_layers),
            "spike_steps": self.spike_steps,
            "first_spike_step": self.first_spike_step,
            "first_spike_layers": list(self.first_spike_layers),
            "first_spike_factor": self.first_spike_factor,
            "steps_without_gradient": dict(zip(self.layer_names, self.missing_counts.tolist())),
            "norm_ranges": {k: list(v) if v else None for k, v in self.ranges().items()},
        }

    def summary(
        self, title: str, files: Sequence[Path], extra: dict[str, str] | None = None, no_files: str = "none"
    ) -> str:
        """The run's summary as lines of text: ``title``, the steps, ``extra`` lines, spikes, NaN/Inf, ranges, files.

        Examples
        --------
        >>> stats = RunStats(["fc"])
        >>> stats.update(np.array([1, 2]), np.array([[0.5], [np.nan]]), np.zeros((2, 1), bool))
        >>> print(stats.summary("run: done", []))
        run: done
          steps: 2
          spikes: none
          NaN/Inf: 1 steps, first at step 2 (fc); they sound as the alarm
          gradient norm range per layer:
            fc  0.5 .. 0.5
          files: none
        """
        lines = [title, f"  steps: {self.steps}"]
        for key, value in (extra or {}).items():
            lines.append(f"  {key}: {value}")
        if self.first_spike_step is None:
            lines.append("  spikes: none")
        else:
            factor = f", {self.first_spike_factor:.3g}x its running median" if self.first_spike_factor else ""
            lines.append(
                f"  spikes: {self.spike_steps} steps, first at step {self.first_spike_step} "
                f"({', '.join(self.first_spike_layers)}{factor}); they sound accented"
            )
        if self.first_nonfinite_step is None:
            lines.append("  NaN/Inf: none")
        else:
            lines.append(
                f"  NaN/Inf: {self.nonfinite_steps} steps, first at step {self.first_nonfinite_step} "
                f"({', '.join(self.first_nonfinite_layers)}); they sound as the alarm"
            )
        width = max(len(name) for name in self.layer_names)
        lines.append("  gradient norm range per layer:")
        for name, span in self.ranges().items():
            text = f"{span[0]:.4g} .. {span[1]:.4g}" if span else "no finite norm"
            gaps = self.missing_counts[self.layer_names.index(name)]
            lines.append(f"    {name:<{width}}  {text}" + (f"  (no gradient at {gaps} steps: rests)" if gaps else ""))
        lines.append("  files:" if files else f"  files: {no_files}")
        lines.extend(f"    {path}" for path in files)
        return "\n".join(lines)
