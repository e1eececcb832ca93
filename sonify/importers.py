"""Norms recorded elsewhere, as a :class:`~sonify.record.NormLog`.

* CSV files with a step column and one column per layer are read by
  :func:`sonify.load_norms` directly.
* TensorBoard event files holding per-layer gradient-norm scalars are read by
  :func:`load_tensorboard` (needs ``pip install 'sonify[tensorboard]'``,
  imported only when used).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._errors import SonifyError, SonifyParameterError
from ._optional import require
from .record import NormLog

__all__ = ["DEFAULT_TAG_PATTERN", "check_tag_pattern", "layer_of", "load_tensorboard"]

#: Scalar tags taken as gradient norms by default; the first group names the layer:
#: ``grad_norm/<layer>`` (sonify's own, and ``gradient_norms/...`` and the like), Lightning's
#: ``grad_norm`` utility and ``log_grad_norm`` (``grad_2.0_norm/<parameter>``, ``grad_2.0_norm_total``),
#: and the Hugging Face Trainer's total ``grad_norm`` (one voice, named by its tag).
DEFAULT_TAG_PATTERN = r"(?i)(?:grad(?:ient)?[_ ]?norms?|grad_(?:\d+(?:\.\d+)?|inf)_norm)[/_.](.+)|(?:^|/)grad_norm$"


def layer_of(found: re.Match, tag: str) -> str:
    """The layer a matching tag names: the pattern's first group, or the whole tag when it has none."""
    return found.group(1) if found.re.groups and found.group(1) else tag


def check_tag_pattern(tags: str) -> str:
    """``tags`` if it is a valid regular expression, else a one-line error."""
    try:
        re.compile(tags)
    except re.error as exc:
        raise SonifyParameterError(f"tags {tags!r} is not a valid regular expression ({exc}); fix {{tags}}") from None
    return tags


def load_tensorboard(path: str | os.PathLike, tags: str = DEFAULT_TAG_PATTERN) -> NormLog:
    """Read per-layer gradient norms from TensorBoard event files.

    Parameters
    ----------
    path : str or PathLike
        A run directory (its event files are read) or one ``events.out.tfevents.*`` file.
    tags : str
        Regular expression selecting the scalar tags that hold norms; its first
        group, if any, is the layer name (default: ``grad_norm/<layer>``,
        ``gradient_norms/<layer>``, ...).

    Returns
    -------
    NormLog
        One row per step that any selected tag has; a layer without a value
        at a step is missing there.

    Raises
    ------
    SonifyError
        When the path holds no event files, no scalar matches ``tags`` (the
        message lists the scalars found), or a value is negative.
    """
    path = Path(path)
    if not path.exists():
        raise SonifyError(f"{path} does not exist; give a TensorBoard run directory or event file")
    files = [path] if path.is_file() else sorted(path.glob("events.out.tfevents.*"))
    if not files or not all("tfevents" in file.name for file in files):
        raise SonifyError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    accumulator = require(
        "tensorboard.backend.event_processing.event_accumulator",
        extra="tensorboard",
        purpose="reading TensorBoard logs",
    )
    pattern = re.compile(tags)
    series: dict[str, dict[int, float]] = {}
    for file in files:
        events = accumulator.EventAccumulator(str(file), size_guidance={accumulator.SCALARS: 0})
        try:
            events.Reload()
        except Exception as exc:
            raise SonifyError(
                f"{file}: cannot read this TensorBoard event file ({type(exc).__name__}: {exc})"
            ) from None
        available = events.Tags().get("scalars", [])
        for tag in available:
            found = pattern.search(tag)
            if found:
                name = layer_of(found, tag)
                series.setdefault(name, {}).update({event.step: event.value for event in events.Scalars(tag)})
    if not series:
        scalars = sorted({tag for file in files for tag in _scalar_tags(accumulator, file)})
        raise SonifyError(
            f"{path}: no scalar tag matches {tags!r}; scalars found: {', '.join(scalars[:10]) or 'none'}; "
            "pass a pattern that selects the gradient norms"
        )
    names = tuple(series)
    steps = np.array(sorted({step for values in series.values() for step in values}), dtype=np.int64)
    norms = np.full((len(steps), len(names)), np.nan)
    missing = np.ones(norms.shape, dtype=bool)
    row = {step: index for index, step in enumerate(steps)}
    for column, name in enumerate(names):
        for step, value in series[name].items():
            norms[row[step], column] = value
            missing[row[step], column] = False
    if (norms[~missing] < 0).any():
        raise SonifyError(f"{path}: negative values under {tags!r}; these are not gradient norms")
    return NormLog(norms, missing, steps, names, {"source": f"tensorboard {path}", "tags": tags}, None)


def _scalar_tags(accumulator: object, file: Path) -> list[str]:
    events = accumulator.EventAccumulator(str(file))
    events.Reload()
    return events.Tags().get("scalars", [])
