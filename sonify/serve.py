"""Listen in the browser: ``sonify serve`` streams a run to a web page that plays it and draws it live.

Most runs train where there are no speakers; the browser on the laptop is the
speaker every user has. On the training machine::

    sonify serve runs/x.norms.csv          # prints http://127.0.0.1:6007/?token=...

and on the laptop ``ssh -L 6007:localhost:6007 gpu-box``, open the URL,
press Listen.

How it works:

* A reader thread follows the source exactly as ``play --follow`` does
  (:func:`sonify.follow.follow_events`: a growing CSV, a folder of runs, a
  TensorBoard run, standard input) and turns each batch of rows into a
  :class:`~sonify.score.Score` with the one sound path (a
  :class:`~sonify.sound.Sounder` per run). The browser only synthesizes: it
  gets the score and the run's instrument (:meth:`Synthesizer.instrument`),
  never a mapping to repeat.
* Pages get Server-Sent Events with ids (``run``, ``history``, ``steps``,
  ``status``). A page that reconnects (a laptop asleep, a tunnel dropped)
  sends ``Last-Event-ID`` and gets what it missed, no step twice; the server
  keeps the last :data:`HISTORY_EVENTS` events of the run.
* The page applies ``play --follow``'s latency policy itself: every step is
  played while the sound keeps up (bursts too), otherwise the newest, with
  every alarm and spike of the skipped steps kept and the skipped counted.

Secure by default: it binds 127.0.0.1; the page and the stream need the
random token (compared in constant time; a wrong or missing one is 403);
only the packaged page files and the stream are served, by a fixed table (no
part of a request ever reaches the file system); a page that stops reading
is dropped after :data:`WRITE_TIMEOUT` seconds without holding up the others
or the reader. The standard library's ``ThreadingHTTPServer`` is enough: one
thread per page, no dependency.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hmac
import http.server
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ._errors import SonifyError, SonifyParameterError, one_line
from .follow import check_followable, follow_events
from .importers import DEFAULT_TAG_PATTERN
from .normfile import log_paths
from .sound import Sounder, SoundSettings
from .sources import SourceKind, source_kind

__all__ = ["DEFAULT_PORT", "Server"]

DEFAULT_PORT = 6007
#: Events of the current run kept for pages that connect or reconnect (a step's event is one batch of rows).
HISTORY_EVENTS = 5_000
#: Rows of the current run a new page gets to draw (not to play): the newest ones.
HISTORY_ROWS = 5_000
#: Rows gathered into one event at most (a burst is sent in pieces of this many).
BATCH_ROWS = 64
#: Seconds a page may stop reading before it is dropped.
WRITE_TIMEOUT = 10.0
#: Seconds between keep-alive comments on an idle stream (proxies and tunnels close silent connections).
KEEPALIVE_SECONDS = 15.0
#: The files of the page, by the path they are served at: nothing else is ever served.
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/player.js": ("player.js", "text/javascript; charset=utf-8"),
    "/synth.js": ("synth.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class _Hub:
    """What the reader has seen, for every page: numbered events of the current run, and who is waiting."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._events: deque[tuple[int, str, str]] = deque(maxlen=HISTORY_EVENTS)
        self._next_id = 1
        self.run: tuple[int, str, str] | None = None  # the current run's "run" event
        self.run_number = 0
        self.rows: deque[tuple[int, list, list]] = deque(maxlen=HISTORY_ROWS)  # (step, norms, kinds) to draw
        self.status: tuple[int, str, str] | None = None
        self.closed = False
        self._generation = 0  # streams started before a cut() end

    def publish(self, name: str, data: dict[str, Any]) -> None:
        with self._changed:
            event = (self._next_id, name, json.dumps(data, separators=(",", ":")))
            self._next_id += 1
            if name == "run":
                self.run_number = data["run"]
                self._events.clear()
                self.rows.clear()
                self.run = event
            elif name == "status":
                self.status = event
            self._events.append(event)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def cut(self) -> None:
        """End every page's stream now, as a dropped tunnel would (their browsers reconnect and resume)."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def stream(self, last_id: int | None) -> Iterator[bytes]:
        """The bytes a page gets: what it missed (or the run so far, to draw), then each event as it comes."""
        with self._changed:
            generation = self._generation
            first = [self.run] if self.run else []
            if last_id is None or self.run is None or not self.run[0] <= last_id < self._next_id:
                # A new page, one whose run has ended, or one from before this server started: the run, its
                # rows so far to draw, the status.
                position = self._next_id - 1
                backlog = [*first, self._history(position)] if self.run else []
                if self.status and (not self.run or self.status[0] > self.run[0]):
                    backlog.append(self.status)
            else:  # a page that reconnects: every event after the last it got (ids are never reused)
                missed = [event for event in self._events if event[0] > last_id]
                lost = bool(self._events) and self._events[0][0] > last_id + 1
                backlog = ([*first, self._history(self._next_id - 1)] if lost else []) + missed
                position = self._next_id - 1
        yield b"retry: 1000\n\n"
        for event in backlog:
            yield _sse(*event)
        while True:
            with self._changed:
                self._changed.wait_for(functools.partial(self._news_after, position, generation), KEEPALIVE_SECONDS)
                if self.closed or generation != self._generation:
                    return
                news = [event for event in self._events if event[0] > position]
                position = self._next_id - 1
            if not news:
                yield b": keep-alive\n\n"
            for event in news:
                yield _sse(*event)

    def _news_after(self, position: int, generation: int) -> bool:
        return self.closed or generation != self._generation or self._next_id - 1 > position

    def _history(self, position: int) -> tuple[int, str, str]:
        steps, norms, kinds = zip(*self.rows) if self.rows else ((), (), ())
        data = {"run": self.run_number, "steps": steps, "norms": norms, "kind": kinds}
        return (position, "history", json.dumps(data, separators=(",", ":")))


def _sse(event_id: int, name: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


class _Reader:
    """Follows the source on its own thread and publishes each run and batch of rows as score events."""

    def __init__(
        self, hub: _Hub, source: str, sound: SoundSettings, wait: float | None, tags: str, notice: Callable[[str], None]
    ) -> None:
        self.hub, self.source, self.sound, self.wait, self.tags, self.notice = hub, source, sound, wait, tags, notice
        self.failure: str | None = None
        self.steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonify-serve-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # the page says so; the server keeps serving what it has
            self.failure = one_line(exc)
            self.notice(f"stopped reading {self.source}: {self.failure}")
            self.hub.publish("status", {"state": "failed", "text": f"stopped reading the run: {self.failure}"})

    def _follow(self) -> None:
        sounder: Sounder | None = None
        runs: dict[str, Any] = {}
        batch: list[tuple[int, np.ndarray, np.ndarray]] = []
        run_number = 0
        ended_check = 0.0
        ended = False
        csv_log = self._csv_log()
        self.hub.publish("status", {"state": "waiting", "text": f"waiting for the run ({self.source})"})
        for event in follow_events(self.source, wait=self.wait, tags=self.tags, notice=self.notice):
            if self._stop.is_set():
                return
            if event is not None and event[0] == "row":
                batch.append(event[1:])
                if len(batch) < BATCH_ROWS:
                    continue
            if batch and sounder is not None:
                self._publish_rows(sounder, batch, run_number)
                batch = []
            if event is None:
                now = time.monotonic()
                if csv_log is not None and not ended and now - ended_check > 1.0:
                    ended_check = now
                    if _has_summary(log_paths(csv_log)[1]):
                        ended = True
                        self.hub.publish("status", {"state": "ended", "text": "the run ended"})
                continue
            if event[0] == "runs":
                runs = {"runs": event[1], "current": event[2]}
                csv_log = Path(self.source) / event[2]
            elif event[0] == "new":
                self.hub.publish("status", {"state": "new", "text": event[1]})
                ended = False
            elif event[0] in ("run", "layers"):
                run_number += 1
                sounder = self.sound.sounder(len(event[1]), self.sound.pitch_map())
                instrument = sounder.synth.instrument()
                self.hub.publish(
                    "run",
                    {"run": run_number, "layers": list(event[1]), "instrument": instrument, "source": self.source}
                    | runs,
                )
                if event[0] == "layers":
                    self.hub.publish("status", {"state": "new", "text": event[2]})
        if batch and sounder is not None:
            self._publish_rows(sounder, batch, run_number)
        self.hub.publish("status", {"state": "ended", "text": "the run ended (its input closed)"})

    def _publish_rows(self, sounder: Sounder, batch: list, run_number: int) -> None:
        steps = np.array([row[0] for row in batch], np.int64)
        norms = np.stack([row[1] for row in batch])
        missing = np.stack([row[2] for row in batch])
        data = {"run": run_number} | sounder.score(norms, missing, steps=steps).player_rows(norms, missing)
        self.hub.rows.extend(zip(data["steps"], data["norms"], data["kind"]))
        self.steps += len(batch)
        self.hub.publish("steps", data)

    def _csv_log(self) -> Path | None:
        """The CSV being followed, whose sidecar says when its run has ended (None for other sources)."""
        return Path(self.source) if source_kind(self.source) is SourceKind.CSV else None


def _has_summary(meta: Path) -> bool:
    """Whether a norm log's sidecar holds the summary its Sonifier writes when the run ends."""
    try:
        return "summary" in json.loads(meta.read_text())
    except (OSError, ValueError):
        return False


class Server:
    """``sonify serve``: a web page that plays and draws a run while it trains (see the module's notes).

    Parameters
    ----------
    source : path or "-"
        What ``play --follow`` takes: a ``.norms.csv`` being written, a
        folder of runs, a TensorBoard run, or ``"-"`` for standard input.
    host : str
        The address to bind; 127.0.0.1 unless the page must be reached from
        other machines directly (prefer an ssh tunnel).
    port : int
        0 picks a free port.
    sound : SoundSettings, optional
        Fixed bounds only, as for following.
    wait, tags
        As for :func:`sonify.follow.follow`.
    token : str, optional
        The secret in the URL (random by default).
    notice : callable
        Receives one-line notices.

    Examples
    --------
    ::

        with Server("runs/x.norms.csv") as server:
            print(server.url)
            server.serve_forever()
    """

    def __init__(
        self,
        source: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        sound: SoundSettings | None = None,
        wait: float | None = None,
        tags: str = DEFAULT_TAG_PATTERN,
        token: str | None = None,
        notice: Callable[[str], None] = print,
    ) -> None:
        # 1. Check everything before binding a port or starting a thread.
        sound = sound or SoundSettings()
        if isinstance(sound.norm_range, str):
            raise SonifyParameterError(
                "a served run is heard as it grows, so norm_range='auto' (the whole run) is not possible; "
                "give fixed bounds LOW:HIGH or leave it out"
            )
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise SonifyParameterError(f"port {port!r} is invalid; give 0 .. 65535 (0 picks a free one)")
        if token is not None and len(token) < 16:
            raise SonifyParameterError("a token must be at least 16 characters; leave it out for a random one")
        check_followable(source, tags)
        self.source = str(source)
        self.token = token or secrets.token_urlsafe(18)
        self.notice = notice
        self._hub = _Hub()
        self._reader = _Reader(self._hub, self.source, sound, wait, tags, notice)
        # 2. Acquire: the port, then the reader; undone in reverse if anything fails.
        with contextlib.ExitStack() as stack:
            try:
                self._http = _HTTPServer((host, port), self._hub, self.token)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise SonifyParameterError(
                        f"port {port} on {host} is in use; give another with --port, or --port 0 for a free one"
                    ) from None
                raise SonifyError(f"cannot listen on {host}:{port}: {one_line(exc)}") from None
            stack.callback(self._http.server_close)
            self._reader.start()
            stack.callback(self._reader.stop)
            self._thread: threading.Thread | None = None
            self._cleanup = stack.pop_all()
        self.host, self.port = host, self._http.server_address[1]
        if host not in _LOCAL_HOSTS:
            notice(
                f"warning: serving on {host}, reachable from other machines (the token still guards it); "
                "an ssh tunnel to 127.0.0.1 is safer"
            )

    @property
    def url(self) -> str:
        """The page's address, with its token: give it to the browser."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    @property
    def steps(self) -> int:
        """Steps read so far."""
        return self._reader.steps

    def drop_pages(self) -> None:
        """Close every page's stream (their browsers reconnect within a second and resume where they were)."""
        self._hub.cut()

    def start(self) -> Server:
        """Serve on a background thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._http.serve_forever, name="sonify-serve", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`close` or Ctrl-C."""
        self._http.serve_forever()

    def close(self) -> None:
        """Stop serving: pages see the stream end (and keep what they drew)."""
        self._hub.close()
        if self._thread is not None:
            self._http.shutdown()
        self._cleanup.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a page that never hangs up does not keep the process alive

    def __init__(self, address: tuple[str, int], hub: _Hub, token: str) -> None:
        self.hub, self.token = hub, token
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "sonify"
    sys_version = ""
    timeout = WRITE_TIMEOUT  # socket timeout: a page that stops reading (or never sends) is dropped

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        token = parse_qs(url.query).get("token", [""])[0]
        # The page and the stream need the token; the scripts and the style sheet are the package's own
        # files, the same for everyone, and the page's module imports cannot carry it.
        guarded = url.path in ("/", "/index.html", "/events") or url.path not in PAGE_FILES
        if guarded and not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._refuse(403, "wrong or missing token: open the URL that sonify serve printed")
            return
        if url.path == "/events":
            self._events()
        elif url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            body = resources.files("sonify").joinpath("web").joinpath(name).read_bytes()
            self.send_response(200)
            self._headers(content_type, len(body))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._refuse(404, "not found")

    def _events(self) -> None:
        header = self.headers.get("Last-Event-ID") or parse_qs(urlsplit(self.path).query).get("last", [""])[0]
        last_id = int(header) if header.isdigit() else None
        self.send_response(200)
        self._headers("text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the page went away, or stopped reading for WRITE_TIMEOUT
            for chunk in self.server.hub.stream(last_id):
                self.wfile.write(chunk)
                self.wfile.flush()

    def _headers(self, content_type: str, length: int | None = None) -> None:
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token is in the URL
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")

    def _refuse(self, code: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(code)
        self._headers("text/plain; charset=utf-8", len(body))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request log on the terminal would bury the URL line."""
