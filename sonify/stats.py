"""Summary figures of a run: steps, NaN/Inf steps, spikes, zero and off-scale cells, dead layers, norm ranges,
and their summary text.

Kept up to date block by block while a run records (:class:`RunStats`), or
computed from a whole log (:meth:`sonify.NormLog.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEAD_STEPS", "RunStats"]

#: A layer whose gradient norm is exactly zero at this many steps in a row (steps without gradient
#: aside) is dead: its ReLUs died, or it is cut off from the loss. One warning names it and the step it died.
DEAD_STEPS = 20


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
        #: Cells of each layer whose norm is exactly zero, above the map's top, below its bottom.
        self.zero_counts = np.zeros(count, dtype=np.int64)
        self.above_counts = np.zeros(count, dtype=np.int64)
        self.below_counts = np.zeros(count, dtype=np.int64)
        self._zero_run = np.zeros(count, dtype=np.int64)  # zeros in a row, up to the last step
        self._zero_since: list[int | None] = [None] * count  # the step that run began
        #: Layers dead now (zero at DEAD_STEPS steps in a row or more), with the step each died.
        self.dead_since: dict[str, int] = {}
        self._dead_news: list[tuple[str, int]] = []
        self._ever_dead: set[str] = set()

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
        self._count_zeros(steps, norms, missing, finite)
        self._low = np.fmin(self._low, np.where(finite, norms, np.inf).min(axis=0))
        self._high = np.fmax(self._high, np.where(finite, norms, -np.inf).max(axis=0))
        self.steps += len(steps)
        self.last_step = int(steps[-1])

    def _count_zeros(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, finite: np.ndarray) -> None:
        zero = finite & (norms == 0) & ~missing
        self.zero_counts += zero.sum(axis=0)
        for layer in np.flatnonzero(zero.any(axis=0) | (self._zero_run > 0)):
            self._zero_runs(int(layer), steps, zero[:, layer], missing[:, layer])

    def _zero_runs(self, layer: int, steps: np.ndarray, zero: np.ndarray, missing: np.ndarray) -> None:
        """Follow one layer's runs of zeros through a block (a step without gradient neither ends nor extends one)."""
        name = self.layer_names[layer]
        present = np.flatnonzero(~missing)
        if not present.size:
            return
        zeros = zero[present]
        # Runs of zeros among the steps with a gradient: where each starts and how long it is.
        edges = np.diff(np.concatenate([[0], zeros.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for start, end in zip(starts, ends):
            carried = start == 0 and self._zero_run[layer] > 0  # the run the last block ended in goes on
            length = end - start + (int(self._zero_run[layer]) if carried else 0)
            since = self._zero_since[layer] if carried else int(steps[present[start]])
            if length >= DEAD_STEPS and since is not None and name not in self._ever_dead:
                self._ever_dead.add(name)
                self._dead_news.append((name, since))
            if end == len(zeros):  # still zero at the block's last step
                self._zero_run[layer], self._zero_since[layer] = length, since
                if length >= DEAD_STEPS and since is not None:
                    self.dead_since[name] = since
                else:  # a new run of zeros, not long enough yet: the layer lived in between
                    self.dead_since.pop(name, None)
                return
        self._zero_run[layer], self._zero_since[layer] = 0, None  # alive at the block's last step
        self.dead_since.pop(name, None)

    def newly_dead(self) -> list[tuple[str, int]]:
        """Layers that died since the last call, each with the step it died (each layer once per run)."""
        news, self._dead_news = self._dead_news, []
        return news

    def count_off_scale(self, off_scale: np.ndarray) -> None:
        """Add a block's cells off the map: ``off_scale`` is +1 above its top, -1 below its bottom, else 0."""
        self.above_counts += (off_scale > 0).sum(axis=0)
        self.below_counts += (off_scale < 0).sum(axis=0)

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
            "zero_steps": dict(zip(self.layer_names, self.zero_counts.tolist())),
            "dead_since": dict(self.dead_since),
            "steps_above_map": dict(zip(self.layer_names, self.above_counts.tolist())),
            "steps_below_map": dict(zip(self.layer_names, self.below_counts.tolist())),
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
        if self.dead_since:
            dead = ", ".join(f"{name} since step {step}" for name, step in self.dead_since.items())
            lines.append(f"  dead layers (zero gradient): {dead}; a zero sounds as a muffled puff")
        above, below = int(self.above_counts.sum()), int(self.below_counts.sum())
        if above or below:
            lines.append(
                f"  off the map: {above} cells above its top, {below} below its bottom; they glide off the scale"
            )
        width = max(len(name) for name in self.layer_names)
        lines.append("  gradient norm range per layer:")
        for layer, (name, span) in enumerate(self.ranges().items()):
            text = f"{span[0]:.4g} .. {span[1]:.4g}" if span else "no finite norm"
            notes = [
                f"{label} at {count} steps{sound}"
                for label, count, sound in (
                    ("no gradient", self.missing_counts[layer], ": rests"),
                    ("zero", self.zero_counts[layer], ""),
                    ("above the map", self.above_counts[layer], ""),
                    ("below the map", self.below_counts[layer], ""),
                )
                if count
            ]
            lines.append(f"    {name:<{width}}  {text}" + (f"  ({'; '.join(notes)})" if notes else ""))
        lines.append("  files:" if files else f"  files: {no_files}")
        lines.extend(f"    {path}" for path in files)
        return "\n".join(lines)
