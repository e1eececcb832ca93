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
"""

from __future__ import annotations

import os
from typing import Any

from .._optional import require
from ._holder import _SonifierHolder

_transformers = require("transformers", extra="transformers", purpose="sonify's Trainer callback")

__all__ = ["SonifyTrainerCallback"]


class SonifyTrainerCallback(_transformers.TrainerCallback, _SonifierHolder):
    """Record every optimizer step of a ``Trainer`` and sonify it.

    Parameters
    ----------
    out : str or PathLike, optional
        The audio file; the norm log goes beside it (see :class:`~sonify.Sonifier`).
    **options
        Any other :class:`~sonify.Sonifier` option: ``layers``, ``params``,
        ``group``, ``sound``, ``mapping``, ``live``, ``output_device``, ``pace``, ...
    """

    def __init__(self, out: str | os.PathLike | None = None, **options: Any) -> None:
        self._hold(out, options)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._start(
            model,
            framework=f"transformers {_transformers.__version__}",
            max_grad_norm=args.max_grad_norm,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stop()
