"""PyTorch Lightning: hear a ``Trainer.fit`` with one callback.

::

    trainer = lightning.Trainer(callbacks=[SonifyCallback(out="audio_out/run.wav")])

Norms are read in ``on_before_optimizer_step``: after the whole accumulation
window, after AMP unscaling, and **before** Lightning clips the gradients
(``gradient_clip_val``), for every optimizer step, including the ones the
AMP scaler then skips because of inf/NaN (they sound the alarm).

**Sound in the loggers.** At the end of training (``on_train_end``, before
the loggers close) and, with ``log_audio_every_n_steps``, while it runs, the
sound goes to every logger the trainer has: ``TensorBoardLogger`` (an audio
summary), ``WandbLogger`` (``wandb.Audio``), ``MLFlowLogger`` (a WAV
artifact), ``CSVLogger`` (a WAV beside ``metrics.csv``); see
:mod:`sonify.trackers` for the tag scheme. A run stopped by an exception
still logs what it recorded.
"""

from __future__ import annotations

from typing import Any

from .._errors import SonifyError
from .._optional import require
from ..capture import find_zero_optimizer
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


_pl: Any = _lightning()

__all__ = ["SonifyCallback"]


class SonifyCallback(_pl.Callback, _SonifierHolder):
    """Record every optimizer step of ``Trainer.fit`` and sonify it.

    Parameters
    ----------
    out : str or PathLike, optional
        The audio file; the norm log goes beside it (see :class:`~sonify.Sonifier`).
    log_audio : bool
        Send the sound (condensed to ``audio_seconds``, alarms and spikes kept)
        to the trainer's loggers at the end of training.
    log_audio_every_n_steps : int, optional
        Also send the sound so far every this many optimizer steps (rendered
        on a background thread; training does not wait).
    log_norms : bool
        Also log each layer's norm at every optimizer step as
        ``sonify/grad_norm/<layer>``.
    audio_seconds : float
        Longest sound sent to a logger.
    **options
        Any other :class:`~sonify.Sonifier` option: ``layers``, ``params``,
        ``group``, ``sound``, ``mapping``, ``live``, ``output_device``, ``pace``, ...

    Attributes
    ----------
    sonifier : Sonifier or None
        The Sonifier of the current or last ``fit`` (on every rank; only rank 0 writes and plays).
    """

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        loggers = self._usable(list(trainer.loggers)) if self.log_audio and trainer.is_global_zero else []
        self._start(
            pl_module,
            loggers,
            zero_optimizer=_zero_optimizer(trainer),
            framework=f"lightning {_pl.__version__}",
            max_steps=trainer.max_steps,
        )

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._step()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()  # here, not at on_fit_end: the loggers are finalized in between

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop(drain=False)  # stop the sound at once; the files are complete


def _zero_optimizer(trainer: Any) -> Any:
    """DeepSpeed's ZeRO optimizer under Lightning's DeepSpeed strategy, or None (never raises into ``fit``)."""
    try:
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        return find_zero_optimizer(trainer.strategy.model, optimizers[0] if optimizers else None)
    except Exception:
        return None
