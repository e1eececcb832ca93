"""Progress bars that follow tqdm's conventions."""

from __future__ import annotations

import os
from typing import Any


def progress_bar(total: float | None, description: str, enabled: bool = True, unit: str = "step") -> Any:
    """A tqdm bar on stderr, drawn only where a person watches.

    Off with ``enabled=False`` (``--no-progress``) or ``TQDM_DISABLE=1``, and,
    as tqdm does with ``disable=None``, whenever stderr is not a terminal (CI
    logs, ``nohup``, a pipe), where a bar would only add a line per refresh.
    """
    from tqdm.auto import tqdm

    vetoed = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    disable = True if not enabled or vetoed else None
    return tqdm(total=total, desc=description, unit=unit, disable=disable, dynamic_ncols=True)
