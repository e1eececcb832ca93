"""Put a run's sound (and, if asked, its norms) into the experiment trackers people watch.

A tracker is any of:

- a TensorBoard ``SummaryWriter`` (``torch.utils.tensorboard`` or tensorboardX):
  the audio is an audio summary (``add_audio``, mono), norms are scalars;
- a Weights & Biases run (``wandb.init()``'s result, or the ``wandb`` module
  for the current run): a ``wandb.Audio`` media file, norms logged with their
  own x-axis ``sonify/step``;
- MLflow: the ``mlflow`` module (the active run), an ``mlflow.ActiveRun`` or
  ``Run``, or a ``(MlflowClient, run_id)`` pair: a WAV artifact under
  ``sonify/``, norms as metrics;
- a Lightning logger (``TensorBoardLogger``, ``WandbLogger``,
  ``MLFlowLogger``, ``CSVLogger``): what it writes to; ``CSVLogger`` gets the
  WAV beside its ``metrics.csv`` and the norms in it;
- a folder (str or PathLike): the WAV files go there.

Names in every tracker (the tag scheme)
---------------------------------------
``sonify/audio``
    The run's sound, condensed to at most ``max_seconds`` (60 s by default;
    alarms and spikes kept). Logged at the optimizer step it covers up to.
    As a file (MLflow, CSV, folder): ``sonify/audio-step<N>.wav``.
``sonify/grad_norm/<layer>``
    One layer's gradient L2 norm at every optimizer step (x-axis: the
    optimizer step sonify counted, from 1). Steps without a gradient are left
    out; NaN/Inf are logged as they are.

Nothing here imports a tracker library before it is used.

Examples
--------
>>> import numpy as np, tempfile
>>> log = NormLog.from_array(np.ones((20, 2)))
>>> folder = tempfile.mkdtemp()
>>> [Path(p).name for p in log_audio(folder, log)]
['audio-step20.wav']
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._errors import SonifyParameterError, warn
from ._files import create_exclusive
from ._optional import require
from .output import wav_in_memory
from .record import NormLog, as_norm_log
from .rendering import SoundSettings, condensed_audio

__all__ = ["AUDIO_TAG", "NORM_TAG", "TrackerLog", "log_audio", "tracker"]

#: Tag of the run's sound in every tracker.
AUDIO_TAG = "sonify/audio"
#: Prefix of the per-layer norm scalars: ``sonify/grad_norm/<layer>``.
NORM_TAG = "sonify/grad_norm"
#: x-axis of the norm scalars in Weights & Biases.
STEP_KEY = "sonify/step"
#: Norm rows handed to the trackers per training step while training runs (bounds the time taken).
ROWS_PER_CALL = 64


@dataclass(frozen=True)
class _Clip:
    """Rendered audio of a run up to ``step``."""

    samples: np.ndarray  # float32, (n,) or (n, 2)
    sample_rate: int
    step: int
    steps: int  # optimizer steps it covers

    @property
    def mono(self) -> np.ndarray:
        return self.samples if self.samples.ndim == 1 else self.samples.mean(axis=1)

    @property
    def caption(self) -> str:
        return f"sonify: {self.steps} optimizer steps, {len(self.samples) / self.sample_rate:.1f} s"

    def wav(self) -> bytes:
        return wav_in_memory(self.samples, self.sample_rate)


def _metric_name(layer: str) -> str:
    # MLflow allows letters, digits, _ - . space and /; the other trackers take the same names.
    return f"{NORM_TAG}/" + re.sub(r"[^A-Za-z0-9_\-. /]", "_", layer)


class _Rendered(NamedTuple):
    """What a render for the trackers produced: the clip, the log it came from, or why it failed."""

    clip: _Clip | None
    log: NormLog | None
    error: str | None


class _Tracker:
    """One destination: sends a clip and norm rows. Subclasses wrap one tracker library."""

    name = "tracker"

    def audio(self, clip: _Clip) -> str:
        raise NotImplementedError

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        keys = [_metric_name(name) for name in names]
        for step, row, gone in zip(steps.tolist(), norms.tolist(), missing.tolist()):
            self._norm_row(step, {key: value for key, value, absent in zip(keys, row, gone) if not absent})

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError


class _TensorBoard(_Tracker):
    name = "TensorBoard"

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def audio(self, clip: _Clip) -> str:
        self.writer.add_audio(AUDIO_TAG, clip.mono[None, :], clip.step, sample_rate=clip.sample_rate)
        self.writer.flush()
        return f"TensorBoard {AUDIO_TAG} at step {clip.step}"

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)


class _Wandb(_Tracker):
    name = "Weights & Biases"

    def __init__(self, run: Any) -> None:
        self.run = run
        self._axis = False

    def audio(self, clip: _Clip) -> str:
        wandb = require("wandb", extra="wandb", purpose="logging audio to Weights & Biases")
        self.run.log(
            {
                AUDIO_TAG: wandb.Audio(clip.samples, sample_rate=clip.sample_rate, caption=clip.caption),
                STEP_KEY: clip.step,
            }
        )
        return f"Weights & Biases {AUDIO_TAG} at step {clip.step}"

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        if not self._axis:  # the norms' own x-axis, so they never fight the run's step counter
            self.run.define_metric(STEP_KEY)
            self.run.define_metric(f"{NORM_TAG}/*", step_metric=STEP_KEY)
            self._axis = True
        self.run.log({**values, STEP_KEY: step})


class _MLflow(_Tracker):
    name = "MLflow"

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def audio(self, clip: _Clip) -> str:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sonify-") as folder:
            path = Path(folder) / f"audio-step{clip.step}.wav"
            path.write_bytes(clip.wav())
            self.client.log_artifact(self.run_id, str(path), artifact_path="sonify")
        return f"MLflow run {self.run_id} artifact sonify/{path.name}"

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        keys = [_metric_name(name) for name in names]
        metrics = [
            Metric(key, value, now, step)
            for step, row, gone in zip(steps.tolist(), norms.tolist(), missing.tolist())
            for key, value, absent in zip(keys, row, gone)
            if not absent
        ]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])


class _Folder(_Tracker):
    name = "folder"

    def __init__(self, folder: Path, logger: Any = None) -> None:
        self.folder, self.logger = folder, logger

    def audio(self, clip: _Clip) -> str:
        data = clip.wav()
        path = self.folder / f"audio-step{clip.step}.wav"
        for number in range(2, 1000):  # never replace a file: a second log at the same step gets its own name
            if not path.exists():
                break
            path = self.folder / f"audio-step{clip.step}-{number}.wav"
        descriptor = create_exclusive(path)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        except OSError:
            path.unlink(missing_ok=True)  # no half clip left behind (a full disk)
            raise
        return str(path)

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        if self.logger is not None:  # a Lightning CSVLogger: its metrics.csv; a plain folder has the norm log
            super().norms(steps, norms, missing, names)

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        self.logger.log_metrics(values, step)


def tracker(target: Any) -> _Tracker:
    """The destination for ``target`` (see the module help), or a one-line error naming what is accepted."""
    module = type(target).__module__ or ""
    kind = type(target).__name__
    if isinstance(target, (str, os.PathLike)):
        return _Folder(Path(target))
    if module.startswith(("lightning", "pytorch_lightning")):
        return _lightning_tracker(target)
    if callable(getattr(target, "add_audio", None)) and callable(getattr(target, "add_scalar", None)):
        return _TensorBoard(target)
    if getattr(target, "__name__", None) == "wandb" or module.startswith("wandb"):
        run = getattr(target, "run", None) if getattr(target, "__name__", None) == "wandb" else target
        if run is None:
            raise SonifyParameterError("wandb has no active run: call wandb.init() first, or pass the run")
        return _Wandb(run)
    if getattr(target, "__name__", None) == "mlflow" or module.startswith("mlflow") or isinstance(target, tuple):
        return _mlflow_tracker(target)
    raise SonifyParameterError(
        f"sonify cannot log to a {kind}: give a TensorBoard SummaryWriter, a wandb run, mlflow (or an MLflow run, "
        "or (MlflowClient, run_id)), a Lightning logger, or a folder"
    )


def _mlflow_tracker(target: Any) -> _MLflow:
    mlflow = require("mlflow", extra="mlflow", purpose="logging audio to MLflow")
    if isinstance(target, tuple):
        if len(target) != 2 or not isinstance(target[1], str):
            raise SonifyParameterError("an MLflow tracker given as a pair must be (MlflowClient, run_id)")
        return _MLflow(*target)
    run = mlflow.active_run() if getattr(target, "__name__", None) == "mlflow" else target
    info = getattr(run, "info", None)
    if info is None:
        raise SonifyParameterError("mlflow has no active run: call mlflow.start_run() first, or pass the run")
    return _MLflow(mlflow.MlflowClient(), info.run_id)


def _lightning_tracker(logger: Any) -> _Tracker:
    kind = type(logger).__name__
    if kind == "CSVLogger":
        return _Folder(Path(logger.log_dir), logger)
    if kind == "MLFlowLogger":
        return _MLflow(logger.experiment, logger.run_id)
    if kind in ("TensorBoardLogger", "WandbLogger"):
        return tracker(logger.experiment)
    raise SonifyParameterError(
        f"sonify cannot log to a Lightning {kind}; it logs to TensorBoardLogger, WandbLogger, MLFlowLogger and CSVLogger"
    )


def log_audio(
    target: Any,
    source: NormLog | str | os.PathLike | np.ndarray,
    *,
    sound: SoundSettings | None = None,
    max_seconds: float = 60.0,
    norms: bool = False,
) -> list[str]:
    """Log a run's sound (condensed to ``max_seconds``) and optionally its norms to a tracker.

    Parameters
    ----------
    target
        A tracker (see the module help).
    source : NormLog, path or array
        The run: a norm log, its path, or a (steps, layers) array.
    sound : SoundSettings, optional
        How it sounds; the defaults otherwise.
    max_seconds : float
        Longest audio; a longer run has its steps combined (alarms and spikes kept).
    norms : bool
        Also log every step's per-layer norms as ``sonify/grad_norm/<layer>``.

    Returns
    -------
    list of str
        Where the audio went (a file path, or the tag and step).
    """
    if not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds) and max_seconds > 0):
        raise SonifyParameterError(
            f"max_seconds={max_seconds!r} is invalid; give a positive number of seconds, e.g. 60"
        )
    destination = tracker(target)
    log = as_norm_log(source, drop_incomplete=True)  # a running log may end in a half-written line
    if not len(log):
        return []
    clip = _clip(log, sound or SoundSettings(), max_seconds)
    if norms:
        destination.norms(log.steps, log.norms, log.missing, log.layer_names)
    return [destination.audio(clip)]


def _clip(log: NormLog, sound: SoundSettings, max_seconds: float) -> _Clip:
    samples, sample_rate = condensed_audio(log, sound, max_seconds)
    return _Clip(samples, sample_rate, int(log.steps[-1]), len(log))


def check_options(every_n_steps: int | None, max_seconds: float) -> None:
    """Check ``log_audio_every_n_steps`` and ``audio_seconds`` (one-line errors)."""
    if every_n_steps is not None and (
        isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
    ):
        raise SonifyParameterError(
            f"log_audio_every_n_steps={every_n_steps!r} is invalid; give a positive whole number of steps, or None"
        )
    if not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds) and max_seconds > 0):
        raise SonifyParameterError(f"audio_seconds={max_seconds!r} is invalid; give a positive number of seconds")


class TrackerLog:
    """Sends a running Sonifier's sound to trackers, without making training wait.

    The costly part (reading the norm log and synthesizing up to
    ``max_seconds`` of sound) runs on a background thread; the trackers
    themselves are called only from the training thread (tracker libraries
    such as wandb are not thread-safe), in :meth:`poll`, which costs one
    attribute check when nothing is ready. Norm rows are handed over at most
    :data:`ROWS_PER_CALL` per call while training runs, all of them at
    :meth:`finish`. A tracker that fails gives one warning and is dropped.

    Parameters
    ----------
    targets : sequence
        Trackers (see the module help); checked here.
    norm_log : Path
        The norm log the Sonifier writes.
    sound : SoundSettings
    every_n_steps : int, optional
        Log the sound so far every this many optimizer steps (and always at the end).
    norms : bool
        Also log the per-layer norms.
    max_seconds : float
    """

    def __init__(
        self,
        targets: Sequence[Any],
        norm_log: Path,
        sound: SoundSettings,
        *,
        every_n_steps: int | None = None,
        norms: bool = False,
        max_seconds: float = 60.0,
    ) -> None:
        check_options(every_n_steps, max_seconds)
        self.trackers = [tracker(target) for target in targets]
        self.norm_log, self.sound, self.every, self.with_norms = norm_log, sound, every_n_steps, norms
        self.max_seconds = max_seconds
        self.logged: list[str] = []
        self.failures: dict[str, str] = {}
        self._next = every_n_steps or 0
        self._worker: threading.Thread | None = None
        self._ready: _Rendered | None = None
        self._rows: deque = deque()
        self._rows_until = 0  # last step whose norms were queued
        self._clip_until = 0  # last step of the last clip sent (the norm log may not have grown since)

    def poll(self, step: int) -> None:
        """Called at every optimizer step on the training thread: start a render when due, send what is ready."""
        if self._ready is not None:
            self._deliver(self._take())
        if self._rows:
            self._send_rows(ROWS_PER_CALL)
        if self.every and step >= self._next and self._worker is None and self.trackers:
            self._next = step + self.every
            self._worker = threading.Thread(target=self._render_in_background, name="sonify-tracker", daemon=True)
            self._worker.start()

    def finish(self) -> None:
        """At the end of the run: the whole run's sound and every norm row not yet sent. Never raises."""
        if self._worker is not None:
            self._worker.join()
            if self._ready is not None:
                self._deliver(self._take())
        if self.trackers:
            self._deliver(self._render())
        self._send_rows(None)

    def _render_in_background(self) -> None:
        self._ready = self._render()

    def _take(self) -> _Rendered:
        ready, self._ready, self._worker = self._ready, None, None
        return ready

    def _render(self) -> _Rendered:
        from .record import load_norms

        try:
            log = load_norms(self.norm_log, drop_incomplete=True)
            return _Rendered(_clip(log, self.sound, self.max_seconds) if len(log) else None, log, None)
        except Exception as exc:  # reported on the training thread; the next render tries again
            return _Rendered(None, None, f"{type(exc).__name__}: {exc}")

    def _deliver(self, rendered: _Rendered) -> None:
        if rendered.error is not None:
            if "norm log" not in self.failures:
                self.failures["norm log"] = rendered.error
                warn(f"sonify could not read its norm log for the trackers: {rendered.error}", stacklevel=4)
            return
        if rendered.clip is not None and rendered.clip.step > self._clip_until:
            self._clip_until = rendered.clip.step
            for destination in list(self.trackers):
                with self._guard(destination):
                    self.logged.append(destination.audio(rendered.clip))
        log = rendered.log
        if self.with_norms and log is not None:
            new = log.steps > self._rows_until
            if new.any():
                self._rows.append((log.steps[new], log.norms[new], log.missing[new], log.layer_names))
                self._rows_until = int(log.steps[-1])

    def _send_rows(self, limit: int | None) -> None:
        while self._rows:
            steps, norms, missing, names = self._rows[0]
            count = len(steps) if limit is None else min(limit, len(steps))
            for destination in list(self.trackers):
                with self._guard(destination):
                    destination.norms(steps[:count], norms[:count], missing[:count], names)
            if count == len(steps):
                self._rows.popleft()
            else:
                self._rows[0] = (steps[count:], norms[count:], missing[count:], names)
            if limit is not None:
                return

    @contextlib.contextmanager
    def _guard(self, destination: _Tracker):
        try:
            yield
        except Exception as exc:
            self._drop(destination, f"{type(exc).__name__}: {exc}")

    def _drop(self, destination: _Tracker, reason: str) -> None:
        if destination in self.trackers:
            self.trackers.remove(destination)
        self.failures[destination.name] = reason
        warn(f"sonify stopped logging to {destination.name}: {reason}", stacklevel=5)
