"""Hugging Face ``transformers.Trainer``: hear a training run with one callback.

::

    trainer = Trainer(model, args, train_dataset=data, callbacks=[SonifyTrainerCallback()])

**Which norms you get.** The Trainer has no callback event between the
backward pass and gradient clipping: it clips (``max_grad_norm``, 1.0 by
default) and only then calls ``on_pre_optimizer_step``. So with clipping on,
the norms recorded are those of the **clipped** gradients, i.e. what the
optimizer applies; a layer's norm never exceeds ``max_grad_norm``. To hear
the raw norms, set ``max_grad_norm=0`` (no clipping) or clip in your own loop
and use :class:`~sonify.Sonifier` with ``son.step()`` before clipping. (The
Trainer's own ``grad_norm`` log entry is the total norm before clipping.)
Gradient accumulation gives one record per optimizer step.

**Sound in the trackers.** At the end of training (and, with
``log_audio_every_n_steps``, while it runs) the sound goes to the trackers
named in ``report_to`` that can hold audio: ``"tensorboard"`` (an audio
summary in the Trainer's TensorBoard folder), ``"wandb"`` (``wandb.Audio`` in
the run), ``"mlflow"`` (a WAV artifact of the run); see
:mod:`sonify.trackers` for the tag scheme.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .._errors import one_line, warn
from .._optional import require
from ..capture import find_zero_optimizer
from ._holder import _SonifierHolder

_transformers: Any = require("transformers", extra="transformers", purpose="sonify's Trainer callback")

__all__ = ["SonifyTrainerCallback"]


class SonifyTrainerCallback(_transformers.TrainerCallback, _SonifierHolder):
    """Record every optimizer step of a ``Trainer`` and sonify it.

    Parameters
    ----------
    out : str or PathLike, optional
        The audio file; the norm log goes beside it (see :class:`~sonify.Sonifier`).
    log_audio, log_audio_every_n_steps, log_norms, audio_seconds
        Sound (and norms) in the ``report_to`` trackers, as for
        :class:`~sonify.integrations.lightning.SonifyCallback`.
    **options
        Any other :class:`~sonify.Sonifier` option: ``layers``, ``params``,
        ``group``, ``sound``, ``mapping``, ``live``, ``output_device``, ``pace``, ...
    """

    _writer: Any = None  # the TensorBoard writer sonify opened for report_to

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # The reporting callbacks come before the user's: their runs and folders exist by now.
        trackers = self._usable(self._reported(args)) if self.log_audio and state.is_world_process_zero else []
        self._start(
            model,
            trackers,
            # Under DeepSpeed, Accelerate's backward() runs the real step: on_pre_optimizer_step comes after it.
            zero_optimizer=_zero_optimizer(model, kwargs.get("optimizer")),
            framework=f"transformers {_transformers.__version__}",
            max_grad_norm=args.max_grad_norm,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stop()
        self._close_writer()

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as exc:
                warn(f"sonify's TensorBoard writer could not be closed: {one_line(exc)}")

    def _reported(self, args: Any) -> list[Any]:
        """The trackers of ``report_to`` that sonify can log to, as tracker objects."""
        report_to = set(args.report_to or [])
        found: list[Any] = []
        try:
            if "tensorboard" in report_to:
                from torch.utils.tensorboard import SummaryWriter

                self._close_writer()  # a run that ended by an exception left it open
                self._writer = SummaryWriter(log_dir=str(_tensorboard_folder(args.output_dir)))
                found.append(self._writer)
            if "wandb" in report_to:
                import wandb

                if wandb.run is not None:
                    found.append(wandb.run)
            if "mlflow" in report_to:
                import mlflow

                run = mlflow.active_run()
                if run is not None:  # the client and run id: the Trainer ends the run before our on_train_end
                    found.append((mlflow.MlflowClient(), run.info.run_id))
        except Exception as exc:  # inside the Trainer: never stop the training
            warn(f"sonify cannot log to the report_to trackers: {one_line(exc)}")
        return found


def _zero_optimizer(model: Any, optimizer: Any) -> Any:
    """DeepSpeed's ZeRO optimizer behind the Trainer's, or None (never raises into the Trainer)."""
    try:
        return find_zero_optimizer(model, optimizer)
    except Exception:
        return None


def _tensorboard_folder(output_dir: str | None) -> Path:
    """The folder of the Trainer's TensorBoard writer: where this process's newest event file is."""
    if os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return Path(os.path.expanduser(os.environ["TENSORBOARD_LOGGING_DIR"]))
    runs = Path(output_dir or ".") / "runs"
    ours = re.compile(rf"events\.out\.tfevents\.[^.]+\..+\.{os.getpid()}\.\d+$")
    mine = [path for path in runs.glob("*/events.out.tfevents.*") if ours.match(path.name)]
    if mine:
        return max(mine, key=lambda path: path.stat().st_mtime).parent
    from transformers.integrations.integration_utils import default_logdir

    return Path(output_dir or ".") / default_logdir()
