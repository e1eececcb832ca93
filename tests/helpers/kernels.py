"""Real Jupyter kernels for tests: start one with ``jupyter_client``, run a cell, keep every message it caused."""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .processes import ROOT


@dataclass
class Cell:
    """What a cell's execution sent on IOPub, in order, up to its idle status (``idle`` is its index)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    idle: int = -1

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stderr")

    @property
    def error(self) -> str | None:
        errors = self.of_type("error")
        if not errors:
            return None
        return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0]["content"]["traceback"]))

    def widget_steps(self) -> list[dict[str, Any]]:
        """The notebook player's batches of steps (custom widget messages), decoded from their binary buffers."""
        batches = []
        for message in self.of_type("comm_msg"):
            data = message["content"]["data"]
            if data.get("method") != "custom" or data["content"].get("type") != "steps":
                continue
            content, buffers = data["content"], [bytes(b) for b in message["buffers"]]
            voices = content["voices"]
            batches.append(
                {
                    "steps": np.frombuffer(buffers[0], "<f8").astype(np.int64),
                    "frequency": np.frombuffer(buffers[1], "<f8").reshape(-1, voices),
                    "gain": np.frombuffer(buffers[2], "<f8").reshape(-1, voices),
                    "kind": np.frombuffer(buffers[3], "u1").reshape(-1, voices),
                    "norms": np.frombuffer(buffers[4], "<f8").reshape(-1, voices),
                    "position": self.messages.index(message),
                    "date": message["header"]["date"],
                }
            )
        return batches

    def display_steps(self) -> list[dict[str, Any]]:
        """The display-update transport's batches: the JSON in each update's script."""
        batches = []
        for message in self.of_type("update_display_data"):
            html = message["content"]["data"].get("text/html", "")
            found = re.search(r"message = (\{.*?\});", html)
            if not found:
                continue
            data = json.loads(found.group(1).replace("<\\/", "</"))
            if data.get("type") != "steps":
                continue
            none_as_nan = lambda rows: np.array([[np.nan if v is None else v for v in row] for row in rows], float)  # noqa: E731
            batches.append(
                {
                    "steps": np.array(data["steps"], np.int64),
                    "frequency": none_as_nan(data["frequency"]),
                    "gain": np.array(data["gain"], float),
                    "kind": np.array(data["kind"], np.uint8),
                    "norms": none_as_nan(data["norms"]),
                    "position": self.messages.index(message),
                    "date": message["header"]["date"],
                }
            )
        return batches


STEPS = 40
NAN_AT = 25


def training_cell(out, *, steps=STEPS, pause=0.1, nan_at=(NAN_AT,), live='"notebook"', before="", options="") -> str:
    """A cell that trains a small model for about ``steps * pause`` seconds with the player (NaN at the ``nan_at`` steps)."""
    return before + textwrap.dedent(
        f"""
        import copy, time, torch, sonify
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4), torch.nn.Linear(4, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        with sonify.Sonifier(model, optimizer, out={str(out)!r}, live={live}{options}) as son:
            for step in range(1, {steps} + 1):
                optimizer.zero_grad()
                model(torch.randn(32, 8)).square().mean().backward()
                if step in {tuple(nan_at)!r}:  # one step's gradient NaN, its update undone
                    saved = copy.deepcopy(model.state_dict())
                    model[2].weight.grad[0, 0] = float("nan")
                optimizer.step()
                if step in {tuple(nan_at)!r}:
                    model.load_state_dict(saved)
                if step == {steps} // 2:
                    print("halfway", flush=True)
                time.sleep({pause})
        print("trained", son.steps)
        """
    )


class Kernel:
    """A real ipykernel in its own process (the one a notebook front end would start)."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=env, extra_arguments=["--HistoryManager.enabled=False"])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 180.0) -> Cell:
        """Run a cell; every IOPub message it caused, up to its idle status."""
        msg_id = self.client.execute(code)
        cell = Cell()
        deadline = time.monotonic() + timeout
        while True:
            message = self.client.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            cell.messages.append(message)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                cell.idle = len(cell.messages) - 1
                return cell

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@contextlib.contextmanager
def kernel(cwd: Path, env: dict[str, str] | None = None) -> Iterator[Kernel]:
    import os

    variables = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    started = Kernel(cwd, variables)
    try:
        yield started
    finally:
        started.close()


@contextlib.contextmanager
def jupyter_lab(root: Path, token: str = "sonify-tests-token") -> Iterator[str]:
    """JupyterLab on 127.0.0.1 (a free port, a token) serving ``root``; yields its base URL.

    Its settings, runtime files and workspaces live in a folder of their own (nothing in ~/.jupyter is read
    or written), news and update toasts are off (they cover cells), and ``window.jupyterapp`` is exposed.
    JupyterLab takes 4 to 8 s to start on two busy cores (measured in ``../shared/tools/browser/``).
    """
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    import urllib.request

    home = Path(tempfile.mkdtemp(prefix="sonify-jupyter-"))
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"checkForUpdates": false, "fetchNews": "false"}')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONPATH=str(ROOT),
    )
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
         "--LabApp.news_url=", "--allow-root", "--expose-app-in-browser"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {process.returncode}: {(home / 'server.log').read_text()[-2000:]}"
                )
            try:
                urllib.request.urlopen(f"{base}api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("jupyter lab did not start in 120 s") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()  # the server shuts its kernels down
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def in_process_kernel() -> Iterator[Any]:
    """This process as a notebook kernel (ipykernel's in-process kernel: real comms, no front end), then not."""
    from ipykernel.inprocess.ipkernel import InProcessInteractiveShell
    from ipykernel.inprocess.manager import InProcessKernelManager

    manager = InProcessKernelManager()
    manager.start_kernel()
    try:
        yield manager.kernel
    finally:
        manager.shutdown_kernel()
        InProcessInteractiveShell.clear_instance()
