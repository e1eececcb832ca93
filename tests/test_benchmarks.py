"""The benchmarks still run (smoke mode: a few iterations, no timing asserted)."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize(
    "script",
    [
        "bench_training.py",
        "bench_synthesis.py",
        "bench_memory.py",
        "bench_live.py",
        "bench_follow.py",
        "bench_peers.py",
        "bench_resnet.py",
        "bench_gpu_sync.py",
        "bench_trackers.py",
        "bench_disk.py",
        "bench_tb_follow.py",
        "bench_deepspeed.py",
        "bench_serve.py",
    ],
)
def test_benchmark_runs_in_smoke_mode(script, sound_server, torchvision_env):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **torchvision_env},
    )
    assert result.returncode == 0, result.stderr
    assert "|---|" in result.stdout
