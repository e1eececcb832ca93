"""PyTorch Lightning: hear a ``Trainer.fit`` with one callback.

::

    trainer = lightning.Trainer(callbacks=[SonifyCallback(out="audio_out/run.wav")])

Norms are read in ``on_before_optimizer_step``: after the whole accumulation
window, after AMP unscaling, and **before** Lightning clips the gradients
(``gradient_clip_val``), for every optimizer step, including the ones the
AMP scaler then skips because of inf/NaN (they sound the alarm).
"""

from __future__ import annotations

import os
from typing import Any

from .._errors import SonifyError
from .._optional import require
from ._holder import _SonifierHolder


def _lightning() -> Any:
    try:
        return require("lightning.pytorch", extra="lightning", purpose="sonify's Lightning callback")
    except SonifyError:
        try:  # the standalone package, for projects that still use it
            return require("pytorch_lightning", extra="lightning", purpose="sonify's Lightning callback")
        except SonifyError:
            pass
        raise


_pl = _lightning()

__all__ = ["SonifyCallback"]


class SonifyCallback(_pl.Callback, _SonifierHolder):
    """Record every optimizer step of ``Trainer.fit`` and sonify it.

    Parameters
    ----------
    out : str or PathLike, optional
        The audio file; the norm log goes beside it (see :class:`~sonify.Sonifier`).
    **options
        Any other :class:`~sonify.Sonifier` option: ``layers``, ``params``,
        ``group``, ``sound``, ``mapping``, ``live``, ``output_device``, ``pace``, ...

    Attributes
    ----------
    sonifier : Sonifier or None
        The Sonifier of the current or last ``fit`` (on every rank; only rank 0 writes and plays).
    """

    def __init__(self, out: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__()
        self._hold(out, options)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(pl_module, framework=f"lightning {_pl.__version__}", max_steps=trainer.max_steps)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._step()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop(drain=False)  # stop the sound at once; the files are complete
