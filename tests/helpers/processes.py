"""The `sonify` command in a subprocess, and waiting for its norm log to grow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository


def run_sonify(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real ``sonify`` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "sonify.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_sonify(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start the real ``sonify`` command line in the background (text pipes for its output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sonify.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def complete_rows(log_file: Path) -> int:
    """Whole data rows of a norm log being written (the header line and a partial last line are not rows)."""
    if not log_file.exists():
        return 0
    return max(0, log_file.read_bytes().count(b"\n") - 1)


def wait_for_rows(log_file: Path, rows: int, timeout: float = 120) -> None:
    """Wait until a norm log being written holds at least ``rows`` data rows (not counting its header)."""
    deadline = time.monotonic() + timeout
    while complete_rows(log_file) < rows:
        if time.monotonic() > deadline:
            raise AssertionError(f"{log_file} holds {complete_rows(log_file)} rows after {timeout:g} s, not {rows}")
        time.sleep(0.1)
