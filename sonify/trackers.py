"""Put a run's sound (and, if asked, its norms) into the experiment trackers people watch.

A tracker is any of:

- a TensorBoard ``SummaryWriter`` (``torch.utils.tensorboard`` or tensorboardX):
  norms are scalars in the run's own writer; the sound is an audio summary in
  an event file of sonify's own, in the sub-folder ``<log dir>/sonify``
  (TensorBoard lists it as a run beside yours), so the user's event file is
  never flushed or slowed by a 5 MB record;
- a Weights & Biases run (``wandb.init()``'s result, or the ``wandb`` module
  for the current run): a ``wandb.Audio`` media file and the norms, with their
  own x-axis ``sonify/step``, joined to the run's own rows (``commit=False``,
  as ``wandb.watch`` does): sonify never advances the run's step, so the
  user's ``run.log(..., step=i)`` always lands; one row holds the newest step's
  norms (the norm log holds every step);
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
    As a file (MLflow, CSV, folder): ``sonify/audio-step<N>.wav``
    (``audio-step<N>.wav`` in a folder).
``sonify/grad_norm/<layer>``
    One layer's gradient L2 norm at every optimizer step (x-axis: the
    optimizer step sonify counted, from 1). Steps without a gradient are left
    out; NaN/Inf are logged as they are.

``sonify`` is the prefix of a Sonifier's names (``tracker_prefix=``). Two
Sonifiers that log to the same run (before and after clipping, say) never
share names: the second gets ``sonify-2`` (``sonify-2/audio``,
``sonify-2/grad_norm/<layer>``, ``sonify-2-audio-step<N>.wav`` in a folder),
with one notice, unless it was given a prefix of its own.

While training runs, the trackers are called off the training thread where
their libraries allow it (TensorBoard, MLflow, folders); wandb and Lightning's
CSVLogger only get, on the training thread, what is ready. Clips come at most
once a minute and at most every tenth of the run's age, so a day-long run
sends about 60 of them (about 5 MB each).

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

import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SonifyParameterError, one_line, warn
from ._files import create_exclusive
from ._optional import require
from ._tfevents import AudioEventFile
from .norms import NormLog, RunDigest
from .output import wav_in_memory
from .rendering import condensed_audio
from .sound import SoundSettings
from .sources import as_norm_log

__all__ = ["AUDIO_TAG", "NORM_TAG", "TrackerLog", "log_audio", "tracker"]

#: First part of every name sonify writes to a tracker (a second Sonifier on one run gets ``sonify-2``).
DEFAULT_PREFIX = "sonify"
#: Tag of the run's sound in every tracker (with the default prefix).
AUDIO_TAG = f"{DEFAULT_PREFIX}/audio"
#: Prefix of the per-layer norm scalars: ``sonify/grad_norm/<layer>`` (with the default prefix).
NORM_TAG = f"{DEFAULT_PREFIX}/grad_norm"
#: Norm rows handed to the trackers per training step while training runs (bounds the time taken).
ROWS_PER_CALL = 64
#: While training runs, clips (each the whole run so far) are at least this many seconds apart ...
MIN_CLIP_SECONDS = 60.0
#: ... and at least this fraction of the run's age: their number grows with the log of the run's length.
CLIP_SPACING = 0.1
#: Seconds the tracker thread waits for the recorder to reach the step a clip was asked for.
RECORDER_WAIT = 5.0


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


def _safe_name(name: str) -> str:
    # MLflow allows letters, digits, _ - . space and /; the other trackers take the same names.
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


class _Tracker:
    """One destination: sends a clip and norm rows. Subclasses wrap one tracker library.

    ``thread_safe`` trackers are called from sonify's tracker thread, so that
    nothing they do (encoding, checksums, uploads) holds up training; the
    others (wandb's ``log``, a Lightning logger's metrics) only from the
    training thread, and only with what is ready. ``prefix`` starts every name
    this tracker writes (``sonify`` unless another Sonifier already uses it).
    """

    name = "tracker"
    thread_safe = True

    def __init__(self) -> None:
        self.prefix = DEFAULT_PREFIX

    @property
    def identity(self) -> tuple:
        """What this tracker writes to (a run, a folder): two Sonifiers on one of these get their own names."""
        return (type(self).__name__, id(self))

    @property
    def audio_tag(self) -> str:
        return f"{self.prefix}/audio"

    def norm_key(self, layer: str) -> str:
        return f"{self.prefix}/grad_norm/" + _safe_name(layer)

    def file_name(self, step: int) -> str:
        own = "" if self.prefix == DEFAULT_PREFIX else _safe_name(self.prefix).replace("/", "-") + "-"
        return f"{own}audio-step{step}.wav"

    def prepare(self, clip: _Clip) -> Any:
        """The costly part of sending a clip, done on sonify's thread (encoding); :meth:`audio` gets the result."""
        return clip

    def audio(self, prepared: Any) -> str:
        raise NotImplementedError

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        keys = [self.norm_key(name) for name in names]
        for step, row, gone in zip(steps.tolist(), norms.tolist(), missing.tolist()):
            self._norm_row(step, {key: value for key, value, absent in zip(keys, row, gone) if not absent})

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError


class _TensorBoard(_Tracker):
    """The run's own ``SummaryWriter`` gets the norm scalars; the sound goes to an event file of sonify's own.

    TensorBoard's writer checksums records in pure Python (over a second for a
    minute of audio, under the interpreter lock, whichever thread writes), and
    flushing it would touch the user's event file: so the clips are written by
    :class:`sonify._tfevents.AudioEventFile` into ``<log dir>/<prefix>``, which
    TensorBoard shows as a run of its own beside the user's.
    """

    name = "TensorBoard"

    def __init__(self, writer: Any) -> None:
        super().__init__()
        self.writer = writer
        self.log_dir = Path(_log_dir(writer))
        self._events: AudioEventFile | None = None

    @property
    def identity(self) -> tuple:
        return ("folder", str(self.log_dir.resolve()))

    def prepare(self, clip: _Clip) -> Any:
        return clip.step, wav_in_memory(clip.mono, clip.sample_rate), clip.sample_rate, len(clip.mono)

    def audio(self, prepared: Any) -> str:
        step, wav, sample_rate, frames = prepared
        if self._events is None:
            self._events = AudioEventFile(self.log_dir / _safe_name(self.prefix))
        path = self._events.add_audio(self.audio_tag, wav, sample_rate, frames, step)
        return f"TensorBoard {self.audio_tag} at step {step} ({path.parent})"

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)


def _log_dir(writer: Any) -> str:
    for attribute in ("get_logdir", "log_dir", "logdir"):
        value = getattr(writer, attribute, None)
        value = value() if callable(value) else value
        if value:
            return str(value)
    raise SonifyParameterError(f"cannot tell where {type(writer).__name__} writes (no log_dir); pass its folder")


class _Wandb(_Tracker):
    """A wandb run: clips and norms join the run's own rows (``commit=False``, as ``wandb.watch`` does).

    sonify never commits a row, so the run's step is never advanced and the
    user's ``run.log(..., step=i)`` is never refused; the norms have their own
    x-axis (``<prefix>/step``). A W&B row holds one value per key, so the
    newest step's norms join each of the user's rows; the norm log has every step.
    """

    name = "Weights & Biases"
    thread_safe = False

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run
        self._axis = False

    @property
    def identity(self) -> tuple:
        return ("wandb", getattr(self.run, "id", id(self.run)))

    def _define_axis(self) -> None:
        if not self._axis:  # the norms' own x-axis, so they never fight the run's step counter
            self.run.define_metric(f"{self.prefix}/step")
            self.run.define_metric(f"{self.prefix}/*", step_metric=f"{self.prefix}/step")
            self._axis = True

    def prepare(self, clip: _Clip) -> Any:
        wandb = require("wandb", extra="wandb", purpose="logging audio to Weights & Biases")
        return clip.step, wandb.Audio(clip.samples, sample_rate=clip.sample_rate, caption=clip.caption)

    def audio(self, prepared: Any) -> str:
        step, media = prepared
        self._define_axis()
        self.run.log({self.audio_tag: media, f"{self.prefix}/step": step}, commit=False)
        return f"Weights & Biases {self.audio_tag} at step {step}"

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        if len(steps):  # one row of the run's history holds one value per key: the newest step
            super().norms(steps[-1:], norms[-1:], missing[-1:], names)

    def _norm_row(self, step: int, values: dict[str, float]) -> None:
        self._define_axis()
        self.run.log({**values, f"{self.prefix}/step": step}, commit=False)


class _MLflow(_Tracker):
    name = "MLflow"

    def __init__(self, client: Any, run_id: str) -> None:
        super().__init__()
        self.client, self.run_id = client, run_id

    @property
    def identity(self) -> tuple:
        return ("mlflow", self.run_id)

    def audio(self, prepared: Any) -> str:
        import tempfile

        clip: _Clip = prepared
        with tempfile.TemporaryDirectory(prefix="sonify-") as folder:
            path = Path(folder) / f"audio-step{clip.step}.wav"
            path.write_bytes(clip.wav())
            self.client.log_artifact(self.run_id, str(path), artifact_path=_safe_name(self.prefix))
        return f"MLflow run {self.run_id} artifact {_safe_name(self.prefix)}/{path.name}"

    def norms(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        keys = [self.norm_key(name) for name in names]
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
        super().__init__()
        self.folder, self.logger = folder, logger
        self.thread_safe = logger is None  # a Lightning CSVLogger is the trainer's, used from its thread

    @property
    def identity(self) -> tuple:
        return ("folder", str(self.folder.resolve()))

    def prepare(self, clip: _Clip) -> Any:
        return clip.step, clip.wav()

    def audio(self, prepared: Any) -> str:
        step, data = prepared
        path = self.folder / self.file_name(step)
        for number in range(2, 1000):  # never replace a file: a second log at the same step gets its own name
            if not path.exists():
                break
            path = self.folder / self.file_name(step).replace(".wav", f"-{number}.wav")
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
    return [destination.audio(destination.prepare(clip))]


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


def check_prefix(prefix: Any) -> str:
    """Check ``tracker_prefix`` (one-line error)."""
    if not (isinstance(prefix, str) and re.fullmatch(r"[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*", prefix)):
        raise SonifyParameterError(
            f"tracker_prefix={prefix!r} is invalid; give a name of letters, digits, _ - . and /, e.g. 'sonify/before_clip'"
        )
    return prefix


#: Names in use, by what a tracker writes to: a second Sonifier on the same run gets its own.
_CLAIMED: dict[tuple, set[str]] = {}
_CLAIM_LOCK = threading.Lock()


def _claim(destination: _Tracker, prefix: str) -> str | None:
    """Give ``destination`` the name ``prefix``, or ``prefix-2``... if another Sonifier has it; a notice if so."""
    with _CLAIM_LOCK:
        used = _CLAIMED.setdefault(destination.identity, set())
        chosen, number = prefix, 1
        while chosen in used:
            number += 1
            chosen = f"{prefix}-{number}"
        used.add(chosen)
    destination.prefix = chosen
    if chosen == prefix:
        return None
    return (
        f"another Sonifier already logs to this {destination.name} as {prefix!r}; this one logs as {chosen!r} "
        f"({chosen}/audio, {chosen}/grad_norm/...): give each its own tracker_prefix= to choose the names"
    )


class _RowQueue:
    """Blocks of norm rows, taken out a number of rows at a time (thread-safe: one producer, one consumer)."""

    def __init__(self) -> None:
        self._blocks: deque = deque()
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def append(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: tuple) -> None:
        self._blocks.append((steps, norms, missing, names))
        self._rows += len(steps)

    def take(self, limit: int | None) -> tuple:
        """Up to ``limit`` rows (all when None), oldest first, as one block."""
        parts, names = [], ()
        wanted = self._rows if limit is None else limit
        while self._blocks and wanted > 0:
            steps, norms, missing, names = self._blocks[0]
            count = min(wanted, len(steps))
            parts.append((steps[:count], norms[:count], missing[:count]))
            if count == len(steps):
                self._blocks.popleft()
            else:
                self._blocks[0] = (steps[count:], norms[count:], missing[count:], names)
            self._rows -= count
            wanted -= count
        if not parts:
            return np.empty(0, np.int64), np.empty((0, 0)), np.empty((0, 0), bool), names
        return (*(np.concatenate(column) for column in zip(*parts)), names)


class TrackerLog:
    """Sends a running Sonifier's sound and norms to trackers, without making training wait.

    The sound comes from the run's :class:`~sonify.norms.RunDigest` (kept up
    to date by the recorder thread; the norm log is never re-read), rendered
    on sonify's tracker thread. Trackers that may be called from another
    thread (TensorBoard, MLflow, folders) get everything there: encoding,
    checksums, uploads. The others (wandb, Lightning's CSVLogger) are called
    only from the training thread, in :meth:`poll`, with what is ready; when
    nothing is, a step costs a few attribute checks.

    Clips come at most every ``every_n_steps`` optimizer steps, and never
    closer than :data:`MIN_CLIP_SECONDS` nor than :data:`CLIP_SPACING` of
    the run's age, so their number grows with the logarithm of the run's
    length (about 60 clips in a day) and so does the disk they take; the whole
    run is always sent at the end. A tracker that fails gives one warning and
    is dropped; :attr:`failures` says why.

    Parameters
    ----------
    targets : sequence
        Trackers (see the module help); checked here.
    digest : RunDigest
        The run as it grows.
    sound : SoundSettings
    every_n_steps : int, optional
        Send the sound so far every this many optimizer steps (and always at the end).
    norms : bool
        Also send the per-layer norms (fed by :meth:`add_rows`).
    max_seconds : float
    prefix : str
        First part of every name (see the module help).
    """

    def __init__(
        self,
        targets: Sequence[Any],
        digest: RunDigest,
        sound: SoundSettings,
        *,
        every_n_steps: int | None = None,
        norms: bool = False,
        max_seconds: float = 60.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        check_options(every_n_steps, max_seconds)
        check_prefix(prefix)
        self.trackers = [tracker(target) for target in targets]
        self.digest, self.sound, self.every, self.with_norms = digest, sound, every_n_steps, norms
        self.max_seconds = max_seconds
        self.logged: list[str] = []
        self.failures: dict[str, str] = {}
        self._news: deque[str] = deque()
        for notice in filter(None, (_claim(t, prefix) for t in self.trackers)):
            warn(notice, stacklevel=4)
        self._next = every_n_steps or 0
        self._started = self._last_clip = time.monotonic()
        self._floor_said = False
        self._clip_until = 0  # last step of the last clip sent from the tracker thread
        self._handed_until = 0  # ... and of the last one handed to the training thread
        self._background_rows: deque = deque()  # norm rows for the thread-safe trackers
        self._training_rows = _RowQueue()  # ... and for the others, taken by poll()
        self._handoff: deque = deque()  # (tracker, prepared clip) for poll() to send
        self._clip_wanted = 0  # the step a clip was asked for at (0: none)
        self._closing = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonify-tracker", daemon=True)
        self._thread.start()

    @property
    def _background(self) -> list[_Tracker]:
        return [t for t in self.trackers if t.thread_safe]

    @property
    def _foreground(self) -> list[_Tracker]:
        return [t for t in self.trackers if not t.thread_safe]

    # -- the recorder's thread -----------------------------------------------------
    def add_rows(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, names: Sequence[str]) -> None:
        """Norm rows as the recorder writes them (called on its thread)."""
        if self.with_norms and self.trackers:
            rows = (steps, norms, missing, tuple(names))
            self._background_rows.append(rows)
            if self._foreground:
                self._training_rows.append(*rows)
            self._wake.set()

    # -- the training thread --------------------------------------------------------
    def poll(self, step: int) -> None:
        """Called at every optimizer step on the training thread: ask for a clip when due, send what is ready."""
        if self._news:
            self._say_news()
        if self._handoff:
            destination, prepared = self._handoff.popleft()
            self._send(destination, self._deliver, destination, prepared)
        if self._training_rows:
            self._send_training_rows(self._rows_per_call)
        if self.every and step >= self._next and self.trackers:
            self._next = step + self.every
            now = time.monotonic()
            if now - self._last_clip >= max(MIN_CLIP_SECONDS, CLIP_SPACING * (now - self._started)):
                self._last_clip = now
                self._clip_wanted = step
                self._wake.set()
            elif not self._floor_said:
                self._floor_said = True
                self._news.append(
                    f"log_audio_every_n_steps={self.every} asks for clips closer together than sonify sends them: "
                    f"each clip is the whole run so far, so they come at most once every {MIN_CLIP_SECONDS:g} s "
                    f"(and {CLIP_SPACING:g} of the run's age), which keeps the trackers' disk use small"
                )

    def finish(self, timeout: float = 120.0) -> None:
        """At the end of the run: the whole run's sound and every norm row not yet sent. Never raises.

        Waits at most ``timeout`` seconds for a tracker that hangs (a network upload), then gives up on it.
        """
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._fail_all(f"it did not answer within {timeout:g} s at the end of the run")
        while self._handoff:
            destination, prepared = self._handoff.popleft()
            self._send(destination, self._deliver, destination, prepared)
        clip = self._render() if self._foreground else None
        if clip is not None and clip.step > self._handed_until:
            for destination in self._foreground:
                self._send(destination, self._prepare_and_deliver, destination, clip)
        self._send_training_rows(None)
        self._say_news()

    # -- sonify's tracker thread ------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            closing = self._closing
            try:
                self._send_background_rows()
                if self._clip_wanted or closing:
                    wanted, self._clip_wanted = self._clip_wanted, 0
                    if not closing:  # the recorder writes rows a flush interval late: let it reach that step
                        deadline = time.monotonic() + RECORDER_WAIT
                        while self.digest.last_step < wanted and time.monotonic() < deadline and not self._closing:
                            time.sleep(0.01)
                    self._send_clip(final=closing)
            except Exception as exc:  # a bug here stops the trackers, never training
                self._fail_all(one_line(exc, named=True))
                return
            if closing:
                return

    def _render(self) -> _Clip | None:
        log = self.digest.log()
        if not len(log):
            return None
        samples, sample_rate = condensed_audio(log, self.sound, self.max_seconds)
        return _Clip(samples, sample_rate, int(log.steps[-1]), self.digest.steps_seen)

    def _send_clip(self, final: bool) -> None:
        clip = self._render()
        if clip is None or clip.step <= self._clip_until:
            return
        self._clip_until = clip.step
        for destination in self._background:
            self._send(destination, self._prepare_and_deliver, destination, clip)
        if not final:  # at the end, finish() sends the last clip to these itself
            self._handed_until = clip.step
            for destination in self._foreground:
                self._send(destination, self._prepare_for_training_thread, destination, clip)

    def _send_background_rows(self) -> None:
        while self._background_rows:
            steps, norms, missing, names = self._background_rows.popleft()
            for destination in self._background:
                self._send(destination, destination.norms, steps, norms, missing, names)

    @property
    def _rows_per_call(self) -> int:
        # wandb keeps one value per key in each of the run's rows: a row a step, in order, unless far behind
        if any(isinstance(t, _Wandb) for t in self._foreground):
            return 1 if len(self._training_rows) <= ROWS_PER_CALL else len(self._training_rows)
        return ROWS_PER_CALL

    def _send_training_rows(self, limit: int | None) -> None:
        steps, norms, missing, names = self._training_rows.take(limit)
        if len(steps):
            for destination in self._foreground:
                self._send(destination, destination.norms, steps, norms, missing, names)

    def _send(self, destination: _Tracker, action: Any, *args: Any) -> None:
        """``action(*args)`` for one tracker; a failure drops that tracker (one warning), the others go on."""
        if destination not in self.trackers:
            return
        try:
            action(*args)
        except Exception as exc:
            self._drop(destination, one_line(exc, named=True))

    def _deliver(self, destination: _Tracker, prepared: Any) -> None:
        self.logged.append(destination.audio(prepared))

    def _prepare_and_deliver(self, destination: _Tracker, clip: _Clip) -> None:
        self._deliver(destination, destination.prepare(clip))

    def _prepare_for_training_thread(self, destination: _Tracker, clip: _Clip) -> None:
        self._handoff.append((destination, destination.prepare(clip)))

    def _drop(self, destination: _Tracker, reason: str) -> None:
        if destination in self.trackers:
            self.trackers.remove(destination)
            self.failures[destination.name] = reason
            self._news.append(f"sonify stopped logging to {destination.name}: {reason}")

    def _fail_all(self, reason: str) -> None:
        for destination in list(self.trackers):
            self._drop(destination, reason)

    def _say_news(self) -> None:
        while self._news:
            warn(self._news.popleft(), stacklevel=5)
