"""Every example runs as users would run it."""

import subprocess
import sys

import sonify
from conftest import ROOT


def test_plain_loop_example(tmp_path):
    out = tmp_path / "plain.wav"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "plain_loop.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    log = sonify.load_norms(out)
    assert len(log) == 300 and out.exists()
    calm, wild = log.norms[:150], log.norms[150:]
    assert np_nanmax(wild) > 10 * np_nanmax(calm)  # the raised learning rate is audible in the norms


def np_nanmax(values):
    import numpy as np

    finite = values[np.isfinite(values)]
    return finite.max() if finite.size else np.inf
