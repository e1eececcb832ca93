"""``Sonifier``: attach to a training loop, record norms, write the sound.

The training thread does as little as possible: at each optimizer step it
launches one fused norm computation and one host copy (see
:mod:`sonify.capture`) and hands the result to a queue. A background thread
appends the rows to the norm log (flushed at least every ``flush_interval``
seconds), synthesizes their audio and appends it to the WAV. With
``live=True`` each step is also handed to the live player (see
:mod:`sonify.playback` for what is heard when training outruns the sound).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import html
import math
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _messages
from ._errors import SonifyError, SonifyParameterError, one_line, renamed_keyword, warn
from ._files import check_new_file
from ._hooks import OptimizerHook, ScalerWatch, ZeroStepHook, unwrap_optimizer
from ._messages import Part
from ._pipelines import AudioPipeline, LivePlayer, LiveReport
from ._recorder import (
    AudioSink,
    LiveFeed,
    NormLogSink,
    NotebookSink,
    Recorder,
    Sink,
    TrackerSink,
    audio_file_from_log,
    condense_audio_file,
)
from ._version import __version__
from .capture import GradientCapture, find_zero_optimizer
from .layers import GroupSelector, LayerSelector, ParamSelector, group_layers, select_layers
from .live_notebook import NotebookFeed, in_notebook_kernel
from .live_notebook import transport as notebook_transport_for
from .mapping import PitchMap
from .normfile import NormLogWriter, log_paths
from .norms import RunDigest
from .notebook import audio as notebook_audio
from .notebook import log_html
from .notebook import replay as notebook_replay
from .output import check_audio_path
from .sound import SoundSettings
from .stats import RunStats
from .stream import DEFAULT_LATENCY, output_devices

if TYPE_CHECKING:
    import torch

    from .trackers import TrackerLog

__all__ = ["DEFAULT_OUT_DIR", "MAX_AUDIO_SECONDS", "Sonifier", "unique_out"]

#: Where files go when no path is given.
DEFAULT_OUT_DIR = Path("audio_out")
#: The most sound a Sonifier's audio file holds by default (seconds): a longer run is condensed into it.
MAX_AUDIO_SECONDS = 900.0


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
        :func:`sonify.layers.select_layers`.
    group : int, str, callable or None
        Merge layers into voices: a prefix depth, a regular expression or a
        function; ``"auto"`` (default) groups models with more than 16 layers
        by module prefix. See :func:`sonify.layers.group_layers`.
    scaler : torch.amp.GradScaler, optional
        The scaler of a mixed-precision loop. Norms are always those of the
        unscaled gradients; with the scaler given, a step it skips because of
        inf/NaN gradients (``optimizer.step()`` does not run then) is still
        recorded, and sounds the alarm.
    sound : SoundSettings, optional
        Mapping, timing and sample format. With ``norm_range="auto"`` the
        pitch range is fitted to the whole run: the audio file is made from
        the norm log when the run ends (live sound, meanwhile, uses the map's
        default range).
    mapping : str or PitchMap, optional
        Shortcut that overrides ``sound.mapping``.
    audio : bool
        Write the audio file.
    max_audio_seconds : float or None
        The most sound the audio file holds (:data:`MAX_AUDIO_SECONDS`, 15
        minutes, by default: 159 MB as float mono at 44.1 kHz). A run whose
        sound would be longer is written at full resolution up to that length
        while it trains; at the end the file is replaced by the whole run
        condensed into that length (consecutive steps combined, every alarm
        and spike kept), so disk use is bounded however long the run. The
        norm log keeps every step: ``sonify render`` makes the full-length
        sound from it at any time. None keeps every step in the file.
    norm_log : bool
        Write the norm log (``audio=False, norm_log=False`` with
        ``live=True`` only listens). (``log=`` still works, with a
        deprecation warning: "log" means sending to a tracker everywhere
        else, as in ``log_audio``.)
    live : bool or "notebook"
        Play the sound through the sound card while training runs. Training
        never waits for it; when steps come faster than they can sound, the
        newest is played and the others are skipped live (an alarm is never
        skipped; the files keep every step). ``"notebook"``: in a Jupyter
        notebook, show a player in the cell's output that plays the run in
        the browser while the cell runs, and replays the whole run when it
        ends (see :mod:`sonify.live_notebook`). ``True`` in a notebook kernel
        whose machine has no output device does the same, with a notice.
    output_device : int or str, optional
        The sound card for ``live`` (index or name, see ``sonify devices``);
        the default device if None. (``device=`` still works, with a
        deprecation warning: it was easy to take for the torch device.)
    pace : bool
        With ``live``: play every step and make training wait for the sound.
    latency : float
        With ``live``: seconds of buffering asked of the sound card.
    metadata : dict, optional
        Extra settings stored in the log's JSON sidecar.
    trackers : tracker or list of trackers, optional
        Experiment trackers that get the run's sound when it closes: a
        TensorBoard ``SummaryWriter``, a wandb run, ``mlflow``, a Lightning
        logger or a folder (see :mod:`sonify.trackers` for every kind and the
        tag scheme). The sound is condensed to ``audio_seconds``, alarms and
        spikes kept.
    log_audio_every_n_steps : int, optional
        Also send the sound so far every this many optimizer steps. It is
        rendered on a background thread; training never waits for it.
    log_norms : bool
        Also log every step's per-layer norms to the trackers, as scalars
        ``sonify/grad_norm/<layer>``.
    audio_seconds : float
        Longest sound sent to a tracker (60 s by default).
    tracker_prefix : str
        First part of every name written to the trackers (``sonify/audio``,
        ``sonify/grad_norm/<layer>``). A second Sonifier on the same tracker
        run gets ``sonify-2`` (with a notice) unless given its own.
    during_backward : bool
        Compute each parameter's norm during backward, as its gradient is
        produced and still in the caches, instead of at the step, with the
        same norms (see :mod:`sonify.capture`). Off by default: on the CPUs
        measured it is no faster, as its hooks add to backward what they save
        at the step. A gradient changed in place through ``.data`` after
        backward (``p.grad.data.mul_(...)``) is not noticed there: the norm
        logged is the one from backward.

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
    >>> import torch, sonify, tempfile
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with sonify.Sonifier(model, opt, out=tempfile.mkdtemp() + "/run.wav") as son:
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
        norm_log: bool = True,
        live: bool | str = False,
        output_device: int | str | None = None,
        pace: bool = False,
        latency: float = DEFAULT_LATENCY,
        metadata: dict[str, Any] | None = None,
        flush_interval: float = 0.5,
        overwrite: bool = False,
        trackers: Any = None,
        log_audio_every_n_steps: int | None = None,
        log_norms: bool = False,
        audio_seconds: float = 60.0,
        during_backward: bool = False,
        tracker_prefix: str = "sonify",
        max_audio_seconds: float | None = MAX_AUDIO_SECONDS,
        device: int | str | None = None,
        log: bool | None = None,
    ) -> None:
        import torch

        from .trackers import check_options

        output_device = renamed_keyword("device", device, "output_device", output_device)
        log = renamed_keyword(
            "log", log, "norm_log", norm_log, why="the norm log file; log_* means a tracker", default=True
        )
        # -- 1. check every option: nothing is created for a bad argument --
        target, zero = _checked_optimizer(model, optimizer, scaler)
        _check_options(during_backward, live, pace, max_audio_seconds, flush_interval, latency)
        check_options(log_audio_every_n_steps, audio_seconds)
        live = _live_target(live, output_device)
        notebook_transport = notebook_transport_for(_notice) if live == "notebook" and _rank() == 0 else None
        self.layers = group_layers(select_layers(model, layers, params), group)
        self.layer_names = [layer.name for layer in self.layers]
        self.sound = (sound or SoundSettings()).replace(**({} if mapping is None else {"mapping": mapping}))
        # norm_range="auto" fits the pitch range to the whole run: the audio file is made from the norm log at
        # close; while training (live sound) the map's default range plays.
        self._audio_from_log = audio and self.sound.norm_range == "auto"
        if self._audio_from_log and not log:
            raise SonifyParameterError(
                "norm_range='auto' makes the audio file from the norm log when the run ends; keep norm_log=True, "
                "or give fixed bounds"
            )
        recording = self.sound.replace(norm_range=None) if self.sound.norm_range == "auto" else self.sound
        pitch_map = recording.pitch_map()
        sounder = recording.sounder(len(self.layers), pitch_map)  # the run's one sound path: spikes, then audio
        self.rank = _rank()
        if self.rank != 0:  # only rank 0 writes and plays
            live, pace, audio, log = False, False, False, False

        # -- 2. choose the run's files: checked now, created below --
        self.audio_path, self.log_path, self.meta_path = _choose_files(out, audio=audio, log=log, overwrite=overwrite)
        run_metadata = {
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "sonify": __version__,
            "torch": torch.__version__,
            "model": type(model).__name__,
            "optimizer": type(optimizer).__name__ if optimizer is not None else type(zero).__name__ if zero else None,
            "parameters": {layer.name: list(layer.parameter_names) for layer in self.layers},
            "sound": self.sound.as_dict(pitch_map),
            "audio": str(self.audio_path) if audio else None,
            "live": live,
            **(metadata or {}),
        }
        self._model = model
        self._overwrite = overwrite
        self._optimizer = target
        self.live_report: LiveReport | None = None
        self._notebook: NotebookFeed | None = None
        #: With a run longer than ``max_audio_seconds``: how its audio file was condensed at the end.
        self.audio_condensed: dict[str, Any] | None = None
        self.stats = RunStats(self.layer_names)
        self.max_audio_seconds = max_audio_seconds
        self._steps = 0
        self._closed = False
        self._reported: set[str] = set()
        self._groups_seen = len(target.param_groups) if target is not None else 0
        # One digest of the whole run, in bounded rows: the trackers' and the notebook's sound, and the bounded
        # audio file when it is condensed at close (rows for the longest of them).
        step_duration = sounder.step_duration
        digest_seconds = [audio_seconds if trackers is not None else 60.0]
        if audio and max_audio_seconds is not None and not self._audio_from_log:
            digest_seconds.append(max_audio_seconds / 2)
        self._digest = RunDigest(self.layer_names, rows=max(1, int(max(digest_seconds) / step_duration)))
        self._trackers = (  # only rank 0 logs: other ranks' loggers are placeholders
            _tracker_log(
                trackers, self._digest, self.sound, log_audio_every_n_steps, log_norms, audio_seconds, tracker_prefix
            )
            if self.rank == 0
            else None
        )

        # -- 3. open the parts under one ExitStack: a failure part-way releases what was taken --
        with contextlib.ExitStack() as stack:
            # The sound card first: if it fails, no files are left behind. Live sound has a sounder of its own:
            # it skips steps that the file keeps.
            if notebook_transport is not None:  # shows the player in the cell's output
                try:
                    self._notebook = NotebookFeed(
                        recording.sounder(len(self.layers), pitch_map), self.layer_names, notebook_transport
                    )
                    stack.callback(self._notebook.abandon)
                except Exception as exc:  # a front end that cannot show it: the run and its files go on
                    warn(_messages.notebook_not_shown(one_line(exc), files_kept=audio or log), stacklevel=2)
            self._live = (
                LiveFeed(
                    LivePlayer(
                        recording.sounder(len(self.layers), pitch_map), device=output_device, pace=pace, latency=latency
                    ),
                    pace=pace,
                )
                if live is True
                else None
            )
            if self._live is not None:
                stack.callback(self._live.close, drain=False)
            self._writer = (
                NormLogWriter(self.log_path, self.layer_names, run_metadata, overwrite=overwrite) if log else None
            )
            if self._writer is not None:
                stack.callback(_discard, self._writer.close, self.log_path, self.meta_path)
            self._audio = (
                AudioSink(
                    AudioPipeline(
                        sounder, self.audio_path, sample_format=self.sound.sample_format, overwrite=overwrite
                    ),
                    limit=round(max_audio_seconds * self.sound.sample_rate) if max_audio_seconds is not None else None,
                )
                if audio and not self._audio_from_log
                else None
            )
            if self._audio is not None:
                stack.callback(_discard, self._audio.close, self.audio_path)
            self._capture = GradientCapture(
                self.layers, sharded=_is_fsdp1(model), early=during_backward, zero_optimizer=zero
            )
            stack.callback(self._capture.remove_hooks)
            # Other ranks only take part in the collective of sharded capture.
            self._capturing = self.rank == 0 or self._capture.sharded
            sinks: list[Sink] = []
            if self._writer is not None:
                sinks.append(NormLogSink(self._writer))
            if self._audio is not None:
                sinks.append(self._audio)
            if self._notebook is not None:
                sinks.append(NotebookSink(self._notebook))
            if self.rank == 0:
                sinks.append(TrackerSink(self._digest, self._trackers, self.layer_names))
            paths = {str(Part.SUMMARY): self.meta_path if self._writer is not None else None}
            self._recorder = Recorder(self.stats, sounder, sinks, flush_interval, paths=paths)
            stack.callback(self._recorder.close)
            # Removable hooks: the optimizer's step, the AMP scaler's skipped steps, and load_state_dict (a
            # parameter replaced by load_state_dict(..., assign=True) is followed at once).
            self._hooks: list[Any] = []
            if target is not None:
                self._hooks.append(OptimizerHook(target, self._on_step))
            if zero is not None:
                self._hooks.append(ZeroStepHook(zero, self._on_step))
            if scaler is not None:
                self._hooks.append(ScalerWatch(scaler, target, lambda: self._steps, self._on_step))
            self._hooks.append(model.register_load_state_dict_post_hook(self._after_load))
            for hook in self._hooks:
                stack.callback(hook.remove)
            self._records_optimizer_steps = target is not None or zero is not None
            atexit.register(self.close)
            stack.pop_all()

    def _after_load(self, module: Any, incompatible_keys: Any) -> None:
        self._capture.rebind()

    # -- training thread -------------------------------------------------
    def step(self) -> None:
        """Record the current gradients as one step (for loops without an optimizer).

        Never raises: misuse (a Sonifier that records at ``optimizer.step()``
        already, or one that is closed) gives one warning and records nothing.
        """
        if self._records_optimizer_steps or self._closed:
            if "misuse" not in self._reported:
                self._reported.add("misuse")
                warn(_messages.step_misused(self._closed), stacklevel=3)
            return
        self._on_step()

    def _on_step(self) -> None:
        """One step: launch the norm computation, hand finished steps on. Never raises into training."""
        if self._closed:
            return
        self._steps += 1
        if not self._capturing:
            return
        try:
            self._capture.submit(self._steps)
            # Layers are combined on the recorder's thread, unless live sound reads them here at once.
            ready = self._capture.ready()
            for item in ready:
                self._recorder.put(item)
            if self._live is not None:
                failure = self._live.write(ready, self._steps)
                if failure is not None:
                    self._report_live_failure(failure)
            if self._notebook is not None:
                failure = self._notebook.poll()
                if failure is not None:
                    self._report_live_failure(failure)
            if self._capture.failure is not None and Part.CAPTURE not in self._recorder.failures:
                # Every rank learnt it at this step and keeps the collective going: only the recording stops.
                self._recorder.fail(Part.CAPTURE, self._capture.failure, step=self._steps)
            if self._recorder.news:
                self._report_news()
            if self._optimizer is not None and len(self._optimizer.param_groups) != self._groups_seen:
                self._check_new_parameters(self._optimizer)
        except Exception as exc:  # a bug or an odd model must not stop training: stop capturing instead
            self._capturing = False
            self._recorder.fail(Part.CAPTURE, _messages.capture_failed(one_line(exc)), step=self._steps)
            self._report_news()
        if self._trackers is not None:
            self._poll_trackers(self._trackers)

    def _poll_trackers(self, trackers: TrackerLog) -> None:
        try:
            trackers.poll(self._steps)
        except Exception as exc:  # the trackers stop; capture and the files go on
            self._trackers = None
            warn(_messages.trackers_stopped(one_line(exc)), stacklevel=4)

    def _check_new_parameters(self, optimizer: torch.optim.Optimizer) -> None:
        """Say once if ``optimizer.add_param_group`` brought parameters that no layer records."""
        groups = optimizer.param_groups
        tracked = {id(p) for p in self._capture.parameters}
        names = {id(p): name for name, p in self._model.named_parameters()}
        new = [p for group in groups[self._groups_seen :] for p in group["params"] if id(p) not in tracked]
        self._groups_seen = len(groups)
        if new and "new parameters" not in self._reported:
            self._reported.add("new parameters")
            shown = [names.get(id(p), "(not in the model)") for p in new[:5]]
            warn(_messages.new_parameters(len(new), shown), stacklevel=5)

    @property
    def steps(self) -> int:
        """Optimizer steps recorded so far."""
        return self._steps

    # -- reporting ---------------------------------------------------------
    def _report_news(self) -> None:
        """Give the recorder's news (first NaN, missing layers, failures) as warnings, in the training thread."""
        for message in self._recorder.take_news():
            warn(message, stacklevel=5)

    def _report_live_failure(self, failure: str) -> None:
        if "live" not in self._reported:
            self._reported.add("live")
            warn(_messages.live_stopped(self._steps, failure, files_kept=bool(self.files)), stacklevel=5)

    # -- closing ---------------------------------------------------------
    def close(self, *, drain: bool = True) -> RunStats:
        """Detach from the optimizer, write everything out and close the files.

        Safe to call more than once, and never raises: a part that cannot be
        finished (a full disk, a removed folder) gives one warning, and the
        summary (``stats``, and the JSON sidecar where it can be written)
        says what was lost. Returns the run's :class:`~sonify.RunStats`.

        Parameters
        ----------
        drain : bool
            Let live sound still due play out; False stops it at once (as
            leaving the ``with`` block by an exception does).
        """
        if self._closed:
            return self.stats
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for hook in self._hooks:
            self._guarded(Part.HOOKS, hook.remove)
        self._guarded(Part.HOOKS, self._capture.remove_hooks)
        remaining = self._guarded(Part.CAPTURE, self._capture.drain) or []
        for item in remaining:
            self._recorder.put(item)
        if self._live is not None:
            self._guarded(Part.LIVE, self._live.push, remaining)
            self.live_report = self._guarded(Part.LIVE, self._live.close, drain=drain)
            if self.live_report is not None and self.live_report.failure is not None:
                self._report_live_failure(self.live_report.failure)
        self._recorder.close()
        if self._notebook is not None and Part.NOTEBOOK not in self._recorder.failures:  # every row is scored now
            self._guarded(Part.NOTEBOOK, self._notebook.close, replay=self._replay)
            if self._notebook.failure is not None:
                self._report_live_failure(self._notebook.failure)
        failures = self._recorder.failures
        if self._audio is not None and Part.AUDIO not in failures:
            self._guarded(Part.AUDIO, self._audio.close)
            if self._audio.cut and Part.AUDIO not in failures:
                self._guarded(Part.AUDIO, self._condense_audio)
        if self._trackers is not None:  # before the summary, so that its "lost" names a tracker that failed
            try:
                self._trackers.finish()
            except Exception as exc:
                self._recorder.fail(Part.TRACKERS, one_line(exc))
            for name, reason in self._trackers.failures.items():
                failures.setdefault(Part.tracker(name), reason)
        if self._writer is not None:
            self._writer.close()
            if self._audio_from_log and Part.NORM_LOG not in failures:
                self._guarded(Part.AUDIO, self._render_from_log)
            if Part.NORM_LOG not in failures:
                self._guarded(Part.SUMMARY, self._writer.write_metadata, summary=self._summary(), closed=True)
        self._report_news()
        return self.stats

    def _replay(self) -> tuple[bytes, str] | tuple[None, str]:
        """The whole run condensed, as a WAV, and its summary line (the notebook player's replay)."""
        if self._digest.steps_seen == 0:
            return None, ""
        return notebook_replay(self._digest.log(), self.sound, self.stats)

    def _condense_audio(self) -> None:
        assert self.max_audio_seconds is not None
        self.audio_condensed = condense_audio_file(
            self.audio_path, self._digest, self.sound, self.max_audio_seconds, self.log_path
        )

    def _render_from_log(self) -> None:
        self.audio_condensed = audio_file_from_log(
            self.log_path, self.audio_path, self.sound, self.max_audio_seconds, overwrite=self._overwrite
        )

    def log_audio(self, target: Any, *, max_seconds: float = 60.0, norms: bool = False) -> list[str]:
        """Send the run so far (its norm log) to an experiment tracker: the sound, and the norms if asked.

        ``target`` is a TensorBoard ``SummaryWriter``, a wandb run, ``mlflow``,
        a Lightning logger or a folder; see :func:`sonify.trackers.log_audio`.
        Returns where the sound went. A bad ``target`` is an error; a tracker
        that fails while logging gives one warning.
        """
        from .trackers import log_audio

        if self._writer is None:
            raise SonifyParameterError("log_audio() reads the norm log; create the Sonifier with norm_log=True")
        try:
            return log_audio(target, self.log_path, sound=self.sound, max_seconds=max_seconds, norms=norms)
        except SonifyParameterError:  # a bad target or value: the caller's error, raised before anything is read
            raise
        except Exception as exc:
            warn(_messages.tracker_failed(type(target).__name__, one_line(exc)), stacklevel=3)
            return []

    def _guarded(self, part: Part, action: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except Exception as exc:
            self._recorder.fail(part, one_line(exc))
            return None

    def _summary(self) -> dict[str, Any]:
        summary = self.stats.as_dict()
        if self.audio_condensed is not None:
            summary["audio_condensed"] = dict(self.audio_condensed)
        if self.live_report is not None:
            summary["live"] = asdict(self.live_report)
        if self._notebook is not None:
            summary["notebook"] = self._notebook.report()
        if self._recorder.failures:
            summary["lost"] = dict(self._recorder.failures)
        return summary

    @property
    def failures(self) -> dict[str, str]:
        """What stopped early, by part (``"audio"``, ``"norm log"``, ``"capture"``, ...), and why."""
        return dict(self._recorder.failures)

    def update_metadata(self, **values: Any) -> None:
        """Add entries to the run's JSON sidecar (for example the final loss). Never raises."""
        if self._writer is not None and not {Part.NORM_LOG, Part.SUMMARY} & set(self._recorder.failures):
            self._guarded(Part.SUMMARY, self._writer.write_metadata, **values)
            self._report_news()

    @property
    def files(self) -> list[Path]:
        """The files this Sonifier writes."""
        logs = [self.log_path, self.meta_path] if self._writer is not None else []
        return logs + ([self.audio_path] if self._audio is not None or self._audio_from_log else [])

    def __enter__(self) -> Sonifier:
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        self.close(drain=exc_type is None)

    def _repr_html_(self) -> str:  # Jupyter shows the run so far, with a player
        text = f"<pre>{html.escape(repr(self))}</pre>"
        if self._digest.steps_seen == 0:
            return text
        return text + log_html(self._digest.log(), self.sound, self.stats)

    def player(self, max_seconds: float = 60.0) -> Any:
        """The run so far as an ``IPython.display.Audio`` player, condensed to ``max_seconds`` (from memory)."""
        return notebook_audio(self._digest.log(), self.sound, max_seconds)

    def audio(self, max_seconds: float = 60.0) -> Any:
        """Deprecated: :meth:`player` (``audio=`` is the flag that writes the audio file)."""
        warnings.warn("Sonifier.audio() is now player()", DeprecationWarning, stacklevel=2)
        return self.player(max_seconds)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recording"
        return f"<Sonifier {state}: {len(self.layers)} layers, {self._steps} steps -> {self.audio_path}>"


def _tracker_log(
    trackers: Any,
    digest: RunDigest | None,
    sound: SoundSettings,
    every: int | None,
    norms: bool,
    seconds: float,
    prefix: str,
) -> Any:
    """The :class:`~sonify.trackers.TrackerLog` for ``trackers=`` (checked), or None without trackers."""
    from .trackers import DEFAULT_PREFIX, TrackerLog, check_prefix

    check_prefix(prefix)  # (every and seconds are checked by the Sonifier, which uses them first)
    if trackers is None:
        if every is not None or norms or prefix != DEFAULT_PREFIX:
            raise SonifyParameterError(
                "log_audio_every_n_steps=, log_norms= and tracker_prefix= need trackers=: Sonifier(..., trackers=writer)"
            )
        return None
    targets = trackers if isinstance(trackers, list) else [trackers]
    assert digest is not None  # made with rows for the trackers whenever there are trackers
    return TrackerLog(targets, digest, sound, every_n_steps=every, norms=norms, max_seconds=seconds, prefix=prefix)


def _checked_optimizer(model: Any, optimizer: Any, scaler: Any) -> tuple[Any, Any]:
    """The torch optimizer to hook (unwrapped from Lightning's, Accelerate's...), or DeepSpeed's ZeRO optimizer.

    Returns ``(torch optimizer or None, ZeRO optimizer or None)``, after checking the model and scaler.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise SonifyParameterError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    zero = find_zero_optimizer(model, optimizer)
    if zero is not None:
        if scaler is not None:
            raise SonifyParameterError("scaler= is for torch.amp; DeepSpeed scales fp16 itself: leave scaler out")
        return None, zero
    target = unwrap_optimizer(optimizer) if optimizer is not None else None
    if scaler is not None and target is None:
        raise SonifyParameterError("scaler= needs the optimizer too: Sonifier(model, optimizer, scaler=scaler)")
    if scaler is not None and not callable(getattr(scaler, "step", None)):
        raise SonifyParameterError(
            f"scaler={type(scaler).__name__} has no step(); pass a torch.amp.GradScaler (or leave scaler out)"
        )
    return target, None


def _check_options(
    during_backward: Any, live: Any, pace: bool, max_audio_seconds: Any, flush_interval: Any, latency: Any
) -> None:
    """The Sonifier's plain options (the parts check their own: layers, sound, trackers)."""
    if not isinstance(during_backward, bool):
        raise SonifyParameterError(f"during_backward={during_backward!r} is invalid; give True or False")
    if live not in (True, False, "notebook"):
        raise SonifyParameterError(
            f"live={live!r} is invalid; give True (the sound card), 'notebook' (a player in the notebook's cell) or False"
        )
    if pace and live is not True:
        raise SonifyParameterError(
            "pace=True makes training wait for live sound; it needs live=True (the sound card: "
            "a notebook's browser cannot tell the kernel how far it has played)"
        )
    if max_audio_seconds is not None and not (
        isinstance(max_audio_seconds, (int, float)) and math.isfinite(max_audio_seconds) and max_audio_seconds > 0
    ):
        raise SonifyParameterError(
            f"max_audio_seconds={max_audio_seconds!r} is invalid; give a positive number of seconds, or None"
        )
    for name, value in (("flush_interval", flush_interval), ("latency", latency)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SonifyParameterError(f"{name}={value!r} is invalid; give a positive number of seconds")


def _live_target(live: bool | str, output_device: int | str | None) -> bool | str:
    """Where live sound goes: the sound card (True), the notebook's player ("notebook"), or nowhere (False).

    ``live=True`` in a notebook kernel whose machine has no output device
    (Colab, a cluster) plays in the notebook instead, with one notice.
    """
    if live == "notebook" and not in_notebook_kernel():
        raise SonifyParameterError(
            "live='notebook' plays in a Jupyter notebook's cell, and this is not a notebook kernel; use live=True "
            "for the sound card, or `sonify serve RUN.norms.csv` to listen in a browser"
        )
    if live is True and output_device is None and in_notebook_kernel() and not _has_output_device():
        _notice(
            "no audio output device on the kernel's machine: playing live in this notebook instead (live='notebook')"
        )
        return "notebook"
    return live


def _has_output_device() -> bool:
    try:
        return bool(output_devices())
    except SonifyError:  # PortAudio missing: no device either
        return False


def _notice(text: str) -> None:
    warn(text, stacklevel=4)  # the line that made the Sonifier


def _choose_files(out: Any, *, audio: bool, log: bool, overwrite: bool) -> tuple[Path, Path, Path]:
    """The run's audio file and norm log (CSV, JSON), checked but not created.

    Without ``out``, a new name under :data:`DEFAULT_OUT_DIR` that no other run's files use.
    """
    if out is None:
        audio_path = unique_out(DEFAULT_OUT_DIR / f"sonify-{_dt.datetime.now():%Y%m%d-%H%M%S}.wav")
    else:
        audio_path = Path(out)
        if not audio or not log:  # only the suffix; existing files are checked below for what is written
            check_audio_path(audio_path, overwrite=True)
    log_path, meta_path = log_paths(audio_path)
    if audio:
        check_audio_path(audio_path, overwrite=overwrite)
    if log:
        check_new_file(log_path, overwrite=overwrite)
        check_new_file(meta_path, overwrite=overwrite)
    return audio_path, log_path, meta_path


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _is_fsdp1(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return False
    return any(isinstance(module, FullyShardedDataParallel) for module in model.modules())


def unique_out(path: str | os.PathLike) -> Path:
    """``path``, or ``path`` with ``-2``, ``-3``... added, so that no file of another run is touched.

    Checks the audio file and its norm log (CSV and JSON) together.

    Examples
    --------
    >>> unique_out("/nonexistent-folder/run.wav").name
    'run.wav'
    """
    path = Path(path)
    candidate, number = path, 1
    while any(p.exists() for p in (candidate, *log_paths(candidate))):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _discard(close: Any, *paths: Path) -> None:
    """Undo a creation that a later failure made useless: close, then remove the (nearly empty) files."""
    with contextlib.suppress(Exception):
        close()
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
