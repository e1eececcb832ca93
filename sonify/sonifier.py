"""``Sonifier``: attach to a training loop, record norms, write the sound.

The training thread does as little as possible: at each optimizer step it
launches one fused norm computation and one host copy (see
:mod:`sonify.capture`) and hands the result to a queue. A background thread
appends the rows to the norm log (flushed at least every ``flush_interval``
seconds), synthesizes their audio and appends it to the WAV. With
``live=True`` each step is also handed to the live player (see
:mod:`sonify.play` for what is heard when training outruns the sound).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import html
import os
import queue
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import SonifyError, SonifyWarning
from .capture import GradientCapture, GroupSelector, LayerSelector, ParamSelector, group_layers, select_layers
from .mapping import PitchMap
from .play import LiveReport, _LivePlayer
from .record import NormLogWriter, RunStats, log_paths
from .render import SoundSettings, _AudioPipeline
from .stream import DEFAULT_LATENCY

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_OUT_DIR", "Sonifier"]

#: Where files go when no path is given.
DEFAULT_OUT_DIR = Path("audio_out")

_CLOSE = object()


class Sonifier:
    """Record every layer's gradient norm at each optimizer step and sonify it.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer, optional
        Hooked with ``register_step_pre_hook``: every ``optimizer.step()``
        records one row, with the gradients the step is about to apply. Without
        an optimizer, call :meth:`step` after each backward pass.
    out : str or PathLike, optional
        The audio file (``.wav`` or ``.flac``). The norm log goes beside it
        (``run.wav`` -> ``run.norms.csv`` + ``run.norms.json``). Default:
        ``audio_out/sonify-<date>-<time>.wav``.
    layers, params
        Which layers sound and which of their parameters count; see
        :func:`sonify.capture.select_layers`.
    group : int, str, callable or None
        Merge layers into voices: a prefix depth, a regular expression or a
        function; ``"auto"`` (default) groups models with more than 16 layers
        by module prefix. See :func:`sonify.capture.group_layers`.
    scaler : torch.amp.GradScaler, optional
        The scaler of a mixed-precision loop. Norms are always those of the
        unscaled gradients; with the scaler given, a step it skips because of
        inf/NaN gradients (``optimizer.step()`` does not run then) is still
        recorded, and sounds the alarm.
    sound : SoundSettings, optional
        Mapping, timing and sample format.
    mapping : str or PitchMap, optional
        Shortcut that overrides ``sound.mapping``.
    audio : bool
        Write the audio file.
    log : bool
        Write the norm log (``audio=False, log=False`` with ``live=True``
        only listens).
    live : bool
        Play the sound through the sound card while training runs. Training
        never waits for it; when steps come faster than they can sound, the
        newest is played and the others are skipped live (an alarm is never
        skipped; the files keep every step).
    device : int or str, optional
        Output device for ``live`` (index or name, see ``sonify devices``);
        the default device if None.
    pace : bool
        With ``live``: play every step and make training wait for the sound.
    latency : float
        With ``live``: seconds of buffering asked of the sound card.
    metadata : dict, optional
        Extra settings stored in the log's JSON sidecar.

    Notes
    -----
    Under ``torch.distributed`` create the Sonifier on every rank, as the
    rest of the training code: only rank 0 writes files and plays sound. With
    DDP the gradients are already averaged, so rank 0's norms are those of
    the global batch. With sharded gradients (FSDP2 / DTensor, FSDP1) every
    rank takes part in one all-reduce of squared sums per step, and the norms
    are those of the full gradients (see :class:`sonify.capture.GradientCapture`).
    flush_interval : float
        Longest time in seconds between writes of the norm log.

    Examples
    --------
    >>> import torch, sonify
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with sonify.Sonifier(model, opt, out="/tmp/doc-run.wav") as son:
    ...     for _ in range(3):
    ...         opt.zero_grad()
    ...         model(torch.randn(16, 4)).square().mean().backward()
    ...         opt.step()
    >>> son.stats.steps
    3
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        out: str | os.PathLike | None = None,
        layers: LayerSelector = None,
        params: ParamSelector = "all",
        group: GroupSelector = "auto",
        scaler: Any = None,
        sound: SoundSettings | None = None,
        mapping: str | PitchMap | None = None,
        audio: bool = True,
        log: bool = True,
        live: bool = False,
        device: int | str | None = None,
        pace: bool = False,
        latency: float = DEFAULT_LATENCY,
        metadata: dict[str, Any] | None = None,
        flush_interval: float = 0.5,
    ) -> None:
        import torch

        from . import __version__

        self.layers = group_layers(select_layers(model, layers, params), group)
        self.rank = _rank()
        if self.rank != 0:  # only rank 0 writes and plays
            live, pace, audio, log = False, False, False, False
        self.layer_names = [layer.name for layer in self.layers]
        self.sound = sound or SoundSettings()
        if mapping is not None:
            self.sound = SoundSettings(**{**self.sound.__dict__, "mapping": mapping})
        self.audio_path = Path(out) if out is not None else _default_out()
        self.log_path, self.meta_path = log_paths(self.audio_path)
        pitch_map = self.sound.pitch_map()
        if pace and not live:
            raise SonifyError("pace=True makes training wait for live sound; it needs live=True")
        # Open the sound card first: if it fails, no files are left behind.
        self._live = (
            _LivePlayer(self.sound, len(self.layers), pitch_map, device=device, pace=pace, latency=latency)
            if live
            else None
        )
        self._pace = pace
        self._live_step = 0  # last step handed to the live player
        self.live_report: LiveReport | None = None
        self._live_failure_reported = False
        run_metadata = {
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "sonify": __version__,
            "torch": torch.__version__,
            "model": type(model).__name__,
            "optimizer": type(optimizer).__name__ if optimizer is not None else None,
            "parameters": {layer.name: list(layer.parameter_names) for layer in self.layers},
            "sound": self.sound.describe(pitch_map),
            "audio": str(self.audio_path) if audio else None,
            "live": live,
            **(metadata or {}),
        }
        try:
            self._writer = NormLogWriter(self.log_path, self.layer_names, run_metadata) if log else None
            self._audio = _AudioPipeline(self.sound, len(self.layers), self.audio_path, pitch_map) if audio else None
        except BaseException:
            if self._live is not None:
                self._live.close(drain=False)
            raise
        self.stats = RunStats(self.layer_names)
        self._capture = GradientCapture(self.layers, sharded=_is_fsdp1(model))
        # Other ranks only take part in the collective of sharded capture.
        self._capturing = self.rank == 0 or self._capture.sharded
        self._steps = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._failure_reported = False
        self._flush_interval = flush_interval
        self._hook = optimizer.register_step_pre_hook(self._on_optimizer_step) if optimizer is not None else None
        self._scaler, self._scaler_step = None, None
        if scaler is not None:
            if optimizer is None:
                raise SonifyError("scaler= needs the optimizer too: Sonifier(model, optimizer, scaler=scaler)")
            self._watch_skipped_steps(scaler)
        self._closed = False
        self._thread = threading.Thread(target=self._record_loop, name="sonify-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- training thread -------------------------------------------------
    def step(self) -> None:
        """Record the current gradients as one step (for loops without an optimizer)."""
        if self._hook is not None:
            raise SonifyError(
                "this Sonifier records at every optimizer.step() already; call son.step() only "
                "when no optimizer was given"
            )
        self._record()

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._record()

    def _record(self) -> None:
        if self._closed:
            raise SonifyError("this Sonifier is closed; create a new one to record more steps")
        if self._failure is not None:
            self._report_failure()
            return
        self._steps += 1
        if not self._capturing:
            return
        self._capture.submit(self._steps)
        ready = self._capture.ready()
        for item in ready:
            self._queue.put(item)
        if self._live is not None:
            self._to_live(ready)

    def _to_live(self, items: list) -> None:
        self._push_live(items)
        if self._live.failure is not None:
            self._report_live_failure()
        elif self._pace:
            self._live.wait_for_pace(self._steps - self._live_step)

    def _push_live(self, items: list) -> None:
        now = time.perf_counter()
        for item in items:
            self._live.push(*item, now)
        if items:
            self._live_step = items[-1][0]

    def _watch_skipped_steps(self, scaler: Any) -> None:
        """Record the steps that ``scaler.step`` skips (it then never calls ``optimizer.step()``)."""
        original = scaler.step

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = self._steps
            result = original(optimizer, *args, **kwargs)
            if self._steps == before and not self._closed:
                self._record()  # the gradients were unscaled by scaler.step and hold the inf/NaN
            return result

        scaler.step = step
        self._scaler, self._scaler_step = scaler, original

    @property
    def steps(self) -> int:
        """Optimizer steps recorded so far."""
        return self._steps

    # -- recorder thread -------------------------------------------------
    def _record_loop(self) -> None:
        pending: list = []
        deadline = time.monotonic() + self._flush_interval
        closing = False
        while not closing:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                if item is _CLOSE:
                    closing = True
                else:
                    pending.append(item)
                    if time.monotonic() < deadline:
                        continue
            except queue.Empty:
                pass
            if pending and self._failure is None:
                try:
                    self._write(pending)
                except BaseException as exc:  # disk full, file removed...: keep training going
                    self._failure = exc
            pending = []
            deadline = time.monotonic() + self._flush_interval

    def _write(self, items: list) -> None:
        steps = np.fromiter((item[0] for item in items), dtype=np.int64, count=len(items))
        norms = np.stack([item[1] for item in items]).astype(np.float64)
        missing = np.stack([item[2] for item in items])
        first_bad = self.stats.first_nonfinite_step
        new_missing = (self.stats.missing_counts == 0) & missing.any(axis=0)
        self.stats.update(steps, norms, missing)
        if self._writer is not None:
            self._writer.append(steps, norms, missing)
        if self._audio is not None:
            self._audio.feed(norms, missing)
        if first_bad is None and self.stats.first_nonfinite_step is not None:
            warnings.warn(
                f"step {self.stats.first_nonfinite_step}: gradient norm of "
                f"{', '.join(self.stats.first_nonfinite_layers)} is NaN/Inf; the alarm sounds at each such step "
                "and the summary counts them",
                SonifyWarning,
                stacklevel=1,
            )
        for name in (n for n, new in zip(self.layer_names, new_missing) if new):
            warnings.warn(
                f"layer {name!r} has no gradient (frozen or unused); it is logged as an empty cell and "
                "sounds as a rest; select other layers to silence this warning",
                SonifyWarning,
                stacklevel=1,
            )

    def _report_failure(self) -> None:
        if not self._failure_reported:
            self._failure_reported = True
            warnings.warn(
                f"recording stopped after step {self.stats.last_step or 0}: {self._failure}; "
                "training continues without sonify",
                SonifyWarning,
                stacklevel=3,
            )

    def _report_live_failure(self) -> None:
        if not self._live_failure_reported:
            self._live_failure_reported = True
            saved = "the WAV and norm log are still written" if self.files else "nothing is saved (no files asked for)"
            warnings.warn(
                f"live audio stopped at step {self._steps}: {self._live.failure}; training continues and {saved}",
                SonifyWarning,
                stacklevel=4,
            )

    # -- closing ---------------------------------------------------------
    def close(self, *, drain: bool = True) -> RunStats:
        """Detach from the optimizer, write everything out and close the files.

        Safe to call more than once. Returns the run's :class:`~sonify.record.RunStats`.

        Parameters
        ----------
        drain : bool
            Let live sound still due play out; False stops it at once (as
            leaving the ``with`` block by an exception does).
        """
        if self._closed:
            return self.stats
        self._closed = True
        atexit.unregister(self.close)
        if self._hook is not None:
            self._hook.remove()
        if self._scaler is not None:
            del self._scaler.step  # the class's own method shows through again
        remaining = self._capture.drain()
        for item in remaining:
            self._queue.put(item)
        self._queue.put(_CLOSE)
        if self._live is not None:
            self._push_live(remaining)
            self.live_report = self._live.close(drain=drain)
            if self.live_report.failure is not None:
                self._report_live_failure()
        self._thread.join()
        if self._audio is not None:
            self._audio.close()
        if self._failure is not None:
            self._report_failure()
        if self._writer is not None:
            self._writer.close()
            self._writer.write_metadata(summary=self._summary(), closed=True)
        return self.stats

    def _summary(self) -> dict[str, Any]:
        summary = self.stats.as_dict()
        if self.live_report is not None:
            summary["live"] = asdict(self.live_report)
        return summary

    def update_metadata(self, **values: Any) -> None:
        """Add entries to the run's JSON sidecar (for example the final loss)."""
        if self._writer is not None:
            self._writer.write_metadata(**values)

    @property
    def files(self) -> list[Path]:
        """The files this Sonifier writes."""
        logs = [self.log_path, self.meta_path] if self._writer is not None else []
        return logs + ([self.audio_path] if self._audio is not None else [])

    def __enter__(self) -> Sonifier:
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        self.close(drain=exc_type is None)

    def _repr_html_(self) -> str:  # Jupyter shows the run so far, with a player
        from .notebook import log_html
        from .record import load_norms

        if self._writer is None or not self.log_path.exists():
            return f"<pre>{html.escape(repr(self))}</pre>"
        return f"<pre>{html.escape(repr(self))}</pre>" + log_html(load_norms(self.log_path, drop_incomplete=True))

    def audio(self, max_seconds: float = 60.0) -> Any:
        """The run so far as an ``IPython.display.Audio`` (from its norm log)."""
        from .record import load_norms

        return load_norms(self.log_path, drop_incomplete=True).audio(self.sound, max_seconds)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recording"
        return f"<Sonifier {state}: {len(self.layers)} layers, {self._steps} steps -> {self.audio_path}>"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _is_fsdp1(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return False
    return any(isinstance(module, FullyShardedDataParallel) for module in model.modules())


def _default_out() -> Path:
    return DEFAULT_OUT_DIR / f"sonify-{_dt.datetime.now():%Y%m%d-%H%M%S}.wav"
