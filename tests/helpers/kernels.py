"""Real Jupyter kernels for tests: start one with ``jupyter_client``, run a cell, keep every message it caused."""

from __future__ import annotations

import contextlib
import json
import re
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
