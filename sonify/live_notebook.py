"""Live in the notebook: ``Sonifier(..., live="notebook")`` plays the run in the cell's output while it runs.

Most notebooks run on a kernel without speakers (Colab, a cluster, VS Code
attached to a server); the notebook's browser tab is the speaker. The cell
shows a player (the same one as ``sonify serve``'s page: ``sonify/web/``);
after Listen it plays each step as the run makes it, with ``play --follow``'s
latency policy, and when the run ends it becomes a replay of the whole run.

How it respects the training loop and the front ends:

* **Nothing more for the training thread than a clock check.** The
  Sonifier's recorder thread, which already gets every step and finds the
  spikes once, gives each block of rows to the player as to the norm log
  (every flush interval, half a second by default: as soon as ``play
  --follow`` or ``sonify serve`` would hear it); the player scores them
  with the run's one sound path (a :class:`~sonify.sound.Sounder`).
* **Sent from the cell's thread, at most every** :data:`SEND_INTERVAL`
  **seconds.** Colab does not render widget updates sent from other threads,
  and ipykernel 7.0.0 lost output from them; so the training thread, which
  runs the cell, sends what is ready when a step finds the interval passed:
  one message of many steps, never one per step. Where the front end takes
  messages from any thread (the widget outside Colab and ipykernel 7.0.0),
  the recorder's thread also sends what has waited :data:`STALE_SECONDS`: a
  slow step (seconds on a large model) or a pause is then heard at once,
  not when the next step comes. One send at a time, in order: a thread that
  finds the other sending leaves it for later, never waits.
* **Push only.** While a cell runs the kernel reads nothing from the browser,
  so the player never asks for anything: the run's layers and instrument, the
  status and the replay are pushed like the steps.
* **The score, never samples:** per step and voice a frequency, a gain and a
  kind, as binary buffers; the browser synthesizes (``synth.js``).

Transports: an anywidget (``pip install 'sonify[notebook]'``: JupyterLab,
Notebook 7, VS Code, Colab), or, where widgets cannot show (anywidget
missing, or installed after the kernel started), display updates: the player
is displayed once and a second output is updated with each batch, whose
script hands it to the player. ``SONIFY_NOTEBOOK_TRANSPORT=display`` chooses
the latter for front ends whose widget manager is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._errors import SonifyParameterError, one_line
from ._optional import require
from .notebook import player_html
from .score import Score
from .sound import Sounder

__all__ = [
    "SEND_INTERVAL",
    "STALE_SECONDS",
    "NotebookFeed",
    "in_notebook_kernel",
    "player_bundle",
    "transport",
]

#: Seconds between two sends at least (about 10 messages a second at most).
SEND_INTERVAL = 0.1
#: Seconds a scored batch may wait for the cell's thread before the recorder's thread sends it (where it may).
STALE_SECONDS = 0.25
#: Scored blocks waiting to be sent at most (five minutes of them); beyond it the oldest are dropped.
OUTBOX_MESSAGES = 600
#: The environment variable that chooses the transport: "widget" or "display".
TRANSPORT_VARIABLE = "SONIFY_NOTEBOOK_TRANSPORT"


def sends_from_any_thread(transport_name: str) -> bool:
    """Whether messages sent from a thread other than the cell's reach this front end.

    Not in Colab (widget updates from other threads do not render:
    googlecolab/colabtools#3373), not under ipykernel 7.0.0 (it lost output
    from threads: ipykernel#1450), and not as display updates (they belong to
    the cell whose thread sends them).
    """
    ipykernel = sys.modules.get("ipykernel")
    return (
        transport_name == "widget"
        and "google.colab" not in sys.modules
        and getattr(ipykernel, "__version__", "") != "7.0.0"
    )


def in_notebook_kernel() -> bool:
    """Whether this process is a Jupyter kernel with a front end (not plain IPython, not a script)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:  # a kernel has always imported IPython: never import it here
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


# -- the player's code: one JS code base ----------------------------------------------------------

_RELATIVE_IMPORT = re.compile(r'^import \{[^}]*\} from "\./[a-z]+\.js";\n', re.MULTILINE)
_EXPORT = re.compile(r"^export (?=(?:async )?function |class |const |let )", re.MULTILINE)


def player_bundle(last: str) -> str:
    """synth.js, player.js and ``last`` (widget.js or display.js) as one ES module.

    A notebook loads a widget's module from text, where the relative imports
    of ``sonify serve``'s page cannot resolve; so the page's modules are put
    one after the other, their imports of each other dropped and only
    ``last``'s exports kept. Every import among them is one line of
    ``import { ... } from "./x.js";`` (a test checks that none is left).
    """
    web = resources.files("sonify").joinpath("web")
    parts = []
    for name in ("synth.js", "player.js", last):
        text = _RELATIVE_IMPORT.sub("", web.joinpath(name).read_text(encoding="utf-8"))
        parts.append(text if name == last else _EXPORT.sub("", text))
    return "\n".join(parts)


def player_css() -> str:
    return resources.files("sonify").joinpath("web").joinpath("style.css").read_text(encoding="utf-8")


# -- transports -----------------------------------------------------------------------------------


#: A scored block of steps: its score, and its norms and missing flags (for the curves).
Batch = tuple[Score, np.ndarray, np.ndarray]


class Transport(Protocol):
    """How messages reach the player in the cell's output (all calls from the cell's thread)."""

    name: str

    def open(self, run: dict[str, Any]) -> None: ...

    def send(self, batches: Sequence[Batch]) -> None: ...

    def finish(self, status: dict[str, str], wav: bytes | None, caption: str) -> None: ...


_WIDGET_CLASS: Any = None


def _widget_class() -> Any:
    """The anywidget class of the player (made once, when first needed: anywidget is optional)."""
    global _WIDGET_CLASS
    if _WIDGET_CLASS is None:
        anywidget = require("anywidget", extra="notebook", purpose="the live notebook player")
        import traitlets

        class SonifyPlayer(anywidget.AnyWidget):  # type: ignore[name-defined]
            _esm = player_bundle("widget.js")
            _css = player_css()
            run = traitlets.Dict().tag(sync=True)
            status = traitlets.Dict().tag(sync=True)
            replay = traitlets.Bytes(b"").tag(sync=True)
            caption = traitlets.Unicode("").tag(sync=True)

        _WIDGET_CLASS = SonifyPlayer
    return _WIDGET_CLASS


class WidgetTransport:
    """The player as an anywidget: the run as traits, each batch a custom message with binary buffers."""

    name = "widget"

    def __init__(self) -> None:
        self.widget: Any = None
        self._run = 1

    def open(self, run: dict[str, Any]) -> None:
        from IPython.display import display

        self.widget = _widget_class()(run=run, status={"state": "waiting", "text": "waiting for the first step"})
        display(self.widget)

    def send(self, batches: Sequence[Batch]) -> None:
        def joined(values: list[np.ndarray], dtype: str) -> bytes:
            return (values[0] if len(values) == 1 else np.concatenate(values)).astype(dtype).tobytes()

        scores = [score for score, _, _ in batches]
        curves = [np.where(missing | ~np.isfinite(norms), np.nan, norms) for _, norms, missing in batches]
        steps = sum(len(score) for score in scores)
        content = {"type": "steps", "run": self._run, "steps": steps, "voices": scores[0].kind.shape[1]}
        buffers = [
            joined([score.steps for score in scores], "<f8"),
            joined([score.frequency for score in scores], "<f8"),
            joined([score.gain for score in scores], "<f8"),
            joined([score.kind for score in scores], "u1"),
            joined(curves, "<f8"),
        ]
        self.widget.send(content, buffers)

    def finish(self, status: dict[str, str], wav: bytes | None, caption: str) -> None:
        with self.widget.hold_sync():
            self.widget.status = status
            if wav is not None:
                self.widget.caption = caption
                self.widget.replay = wav


def _script_json(value: Any) -> str:
    """JSON to put inside a <script>: "</" cannot end the script early."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


class DisplayTransport:
    """The player displayed once; each batch an update of a second output whose script hands it over."""

    name = "display"

    def __init__(self) -> None:
        self.id = f"sonify-player-{uuid.uuid4().hex[:12]}"
        self._carrier: Any = None
        self._run = 1

    def open(self, run: dict[str, Any]) -> None:
        from IPython.display import HTML, display

        code = player_bundle("display.js").replace("</", "<\\/")
        style = player_css()
        display(
            HTML(
                f'<style>{style}</style><div id="{self.id}"></div>'
                f'<script type="module">{code}\nmount({_script_json(self.id)}, {_script_json(run)});</script>'
            )
        )
        self._carrier = display(HTML(""), display_id=True)

    def _deliver(self, message: dict[str, Any], extra: str = "") -> None:
        from IPython.display import HTML

        script = (
            f"<script>(() => {{ const id = {_script_json(self.id)}, message = {_script_json(message)};"
            " const deliver = (window.sonifyDeliver || {})[id];"
            " if (deliver) { deliver(message); return; }"
            " const inbox = (window.sonifyInbox = window.sonifyInbox || {}); (inbox[id] = inbox[id] || []).push(message);"
            " if (typeof BroadcastChannel !== 'undefined') new BroadcastChannel(`sonify-${id}`).postMessage(message);"
            " })();</script>"
        )
        self._carrier.update(HTML(extra + script))

    def send(self, batches: Sequence[Batch]) -> None:
        message: dict[str, Any] = {"type": "steps", "run": self._run}
        for score, norms, missing in batches:
            for key, values in score.player_rows(norms, missing).items():
                message.setdefault(key, []).extend(values)
        self._deliver(message)

    def finish(self, status: dict[str, str], wav: bytes | None, caption: str) -> None:
        self._deliver({"type": "status"} | status, player_html(wav, caption) if wav is not None else "")


def transport(notice: Callable[[str], None]) -> Transport:
    """The transport for this kernel: the widget where it can show, else display updates (with one notice)."""
    chosen = os.environ.get(TRANSPORT_VARIABLE, "").strip().lower()
    if chosen not in ("", "widget", "display"):
        raise SonifyParameterError(
            f"{TRANSPORT_VARIABLE}={chosen!r} is invalid; give 'widget', 'display', or leave it unset"
        )
    if chosen == "display":
        return DisplayTransport()
    try:
        _widget_class()
    except Exception as exc:  # anywidget missing (the extra), or broken: the display updates still play
        notice(f"{one_line(exc)}; then restart the kernel. Playing through display updates meanwhile")
        return DisplayTransport()
    if chosen != "widget" and _installed_after_start("anywidget"):
        notice(
            "anywidget was installed after this kernel started, so the notebook cannot show its widget yet: "
            "restart the kernel (and reload the page) for the widget player. Playing through display updates meanwhile"
        )
        return DisplayTransport()
    return WidgetTransport()


def _installed_after_start(distribution: str) -> bool:
    """Whether a package was installed after this process started (Linux: /proc; elsewhere: unknown, False)."""
    try:
        import importlib.metadata

        files = importlib.metadata.distribution(distribution).files or []
        record = next((f for f in files if f.name == "RECORD"), None)
        if record is None:
            return False
        installed = Path(str(record.locate())).stat().st_mtime
        ticks = os.sysconf("SC_CLK_TCK")
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return installed > boot + started_ticks / ticks + 1.0
    except (ImportError, OSError, ValueError, StopIteration, AttributeError, IndexError):  # ImportError: not installed
        return False


# -- the feed -------------------------------------------------------------------------------------


class NotebookFeed:
    """The run's scores to the notebook player: made on the recorder's thread, sent from the cell's.

    The Sonifier's recorder gives it each block of rows (with the spikes it
    found once), as it gives them to the norm log and the audio file;
    :meth:`add` scores them with the player's own sounder. The training
    thread calls :meth:`poll` at each step, which sends what is ready when
    :data:`SEND_INTERVAL` has passed since the last send.

    Parameters
    ----------
    sounder : Sounder
        The player's own sounder (every step is scored; the page skips what
        it cannot play in time, as ``play --follow`` does).
    layer_names : sequence of str
    transport : Transport
        Where messages go (:func:`transport`); opened here, on the calling
        thread (the cell's), which shows the player.
    """

    def __init__(self, sounder: Sounder, layer_names: Sequence[str], transport: Transport) -> None:
        self.sounder = sounder
        self.transport = transport
        #: Why the player stopped, once it has (the run goes on).
        self.failure: str | None = None
        self.sent_steps = 0
        self.dropped_steps = 0
        self._outbox: deque[Batch] = deque(maxlen=OUTBOX_MESSAGES)
        self._last_send = -float("inf")
        self._any_thread = sends_from_any_thread(transport.name)
        self._sending = threading.Lock()  # one send at a time, so that messages leave in order
        run = {
            "run": 1,
            "layers": list(layer_names),
            "instrument": sounder.synth.instrument(),
            "source": "this notebook's run",
        }
        transport.open(run)

    # -- the recorder's thread ------------------------------------------------------------------
    def add(self, steps: np.ndarray, norms: np.ndarray, missing: np.ndarray, accents: np.ndarray) -> None:
        """Score a block of rows for the player; where the front end allows, send it if the cell has not."""
        if self.failure is not None:
            return
        score = self.sounder.score(norms, missing, accents, steps=steps)
        if len(self._outbox) == OUTBOX_MESSAGES:  # nothing sent for a long time: the oldest goes
            self.dropped_steps += len(self._outbox[0][0])
        self._outbox.append((score, norms, missing))
        if self._any_thread and time.monotonic() - self._last_send >= STALE_SECONDS:
            self._send_ready()  # the cell's thread has not come by: a slow step, or a pause

    # -- the training thread --------------------------------------------------------------------
    def poll(self) -> str | None:
        """At each step: send what is scored when the interval has passed. Returns why the player stopped."""
        if self._outbox and time.monotonic() - self._last_send >= SEND_INTERVAL:
            self._send_ready()
        return self.failure

    def _send_ready(self) -> None:
        """Send what is scored as one message, unless another thread is sending (then it goes next time)."""
        if not self._sending.acquire(blocking=False):
            return
        try:
            batches = []
            while self._outbox:  # what was scored since the last send: one message
                batches.append(self._outbox.popleft())
            if not batches:
                return
            self._last_send = time.monotonic()
            self.transport.send(batches)
            self.sent_steps += sum(len(score) for score, _, _ in batches)
        except Exception as exc:  # the front end is gone, or a bug: the player stops, training goes on
            self.failure = f"the notebook player stopped ({one_line(exc)})"
            self._outbox.clear()
        finally:
            self._sending.release()

    # -- the end --------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """For the run's summary: how the player was fed."""
        return {
            "transport": self.transport.name,
            "sent_steps": self.sent_steps,
            "dropped_steps": self.dropped_steps,
            "failure": self.failure,
        }

    def abandon(self) -> None:
        """Say in the player that the run did not start (the Sonifier could not be made)."""
        self.failure = "the run did not start"
        with contextlib.suppress(Exception):
            self.transport.finish({"state": "failed", "text": "the run did not start"}, None, "")

    def close(self, replay: Callable[[], tuple[bytes, str] | tuple[None, str]] | None = None) -> None:
        """Send what is left, say the run ended, and show the replay (from the cell's thread, at the run's end).

        Call it after the recorder has given every row. ``replay`` gives the
        whole run's WAV (condensed) and its caption.
        """
        if self.failure is None:
            self._send_ready()
        if self.failure is not None:
            return
        wav, caption = replay() if replay is not None else (None, "")
        ended = {
            "state": "ended",
            "text": "the run ended; the whole run is below" if wav is not None else "the run ended",
        }
        self.transport.finish(ended, wav, caption)
