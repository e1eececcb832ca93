"""The words a Sonifier says while a run trains: every warning's text, and the parts that can fail.

Kept apart from the code that decides when to say them, so that the texts
read as one voice (what happened, what still works, what to do) and can be
checked together.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Part"]


class Part(str, enum.Enum):
    """A part of a run's recording that can fail alone (the keys of ``Sonifier.failures``)."""

    CAPTURE = "capture"
    HOOKS = "hooks"
    NORM_LOG = "norm log"
    AUDIO = "audio"
    SUMMARY = "summary"
    LIVE = "live sound"
    NOTEBOOK = "notebook player"
    TRACKERS = "trackers"

    def __str__(self) -> str:
        return self.value

    @staticmethod
    def tracker(name: str) -> str:
        """The key under which one tracker's failure is kept (``"tracker wandb"``)."""
        return f"tracker {name}"


def parts_stopped(parts: Sequence[str], paths: dict[str, Path | None], causes: Sequence[str], step: int | None,
                  still_going: Sequence[str]) -> str:  # fmt: skip
    """Parts that stopped together (a full disk), at a step while training or while closing (``step`` None)."""
    named = " and ".join(str(part) + (f" ({paths[part]})" if paths.get(part) is not None else "") for part in parts)
    cause = "; ".join(dict.fromkeys(causes))
    if step is None:
        return f"sonify could not finish its {named}: {cause}; what was written stays readable"
    going = [str(part) for part in still_going]
    rest = f"; the {' and '.join(going)} {'go' if len(going) > 1 else 'goes'} on" if going else ""
    return f"sonify stopped its {named} at step {step}: {cause}; training continues{rest}, and what was written stays readable"


def first_spike(step: int, layers: Sequence[str], factor: float) -> str:
    return (
        f"step {step}: gradient norm of {', '.join(layers)} spiked to {factor:.3g}x its running median; spikes "
        "sound accented and the summary counts them"
    )


def first_nonfinite(step: int, layers: Sequence[str]) -> str:
    return (
        f"step {step}: gradient norm of {', '.join(layers)} is NaN/Inf; the alarm sounds at each such step and "
        "the summary counts them"
    )


def no_gradient(layer: str) -> str:
    return (
        f"layer {layer!r} has no gradient (frozen or unused); it is logged as an empty cell and sounds as a rest; "
        "select other layers to silence this warning"
    )


def dead_layer(layer: str, step: int, steps: int) -> str:
    return (
        f"layer {layer!r} is dead: its gradient norm has been exactly zero since step {step} ({steps}+ steps; "
        "dead ReLUs, or the layer is cut off from the loss); zeros sound as a muffled puff and the summary names it"
    )


def capture_failed(reason: str) -> str:
    return f"reading the gradients failed ({reason})"


def trackers_stopped(reason: str) -> str:
    return f"sonify stopped logging to the trackers: {reason}"


def tracker_failed(kind: str, reason: str) -> str:
    return f"sonify could not log to {kind}: {reason}"


def live_stopped(step: int, failure: str, files_kept: bool) -> str:
    saved = "the WAV and norm log are still written" if files_kept else "nothing is saved (no files asked for)"
    return f"live audio stopped at step {step}: {failure}; training continues and {saved}"


def notebook_not_shown(reason: str, files_kept: bool) -> str:
    saved = "the WAV and norm log are still written" if files_kept else "nothing is saved (no files asked for)"
    return f"the notebook player could not be shown ({reason}); training goes on and {saved}"


def step_misused(closed: bool) -> str:
    why = (
        "this Sonifier is closed; create a new one to record more steps"
        if closed
        else "this Sonifier records at every optimizer.step() already; call son.step() only when no optimizer was given"
    )
    return f"son.step() ignored: {why}"


def new_parameters(count: int, shown: Sequence[str]) -> str:
    more = ", ..." if count > len(shown) else ""
    return (
        f"optimizer.add_param_group added {count} parameters that sonify does not record ({', '.join(shown)}{more}): "
        "the layers were chosen when the Sonifier was created; create it after the model is complete to hear them"
    )


def not_condensed(free_mb: float, needed_mb: float, seconds: float, log_path: Path) -> str:
    return (
        f"not condensed: {free_mb:.0f} MB free, and condensing needs {needed_mb:.0f} MB; it holds the first "
        f"{seconds:g} s, and `sonify render {log_path}` makes the whole run"
    )
