"""Every example runs as users would run it."""

import subprocess
import sys

import pytest

import sonify
from conftest import ROOT


@pytest.mark.parametrize("live", [False, True], ids=["files", "live"])
def test_plain_loop_example(tmp_path, request, live):
    if live:
        request.getfixturevalue("sound_server")
    out = tmp_path / "plain.wav"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "plain_loop.py"), str(out), *(["--live"] if live else [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    log = sonify.load_norms(out)
    assert len(log) == 300 and out.exists()
    assert ("live: " in result.stdout) == live
    calm, wild = log.norms[:150], log.norms[150:]
    assert np_nanmax(wild) > 10 * np_nanmax(calm)  # the raised learning rate is audible in the norms


def np_nanmax(values):
    import numpy as np

    finite = values[np.isfinite(values)]
    return finite.max() if finite.size else np.inf
