"""torch.distributed on the CPU: 2 processes (gloo) against one process on the same global batch.

DDP and FSDP2 (``fully_shard``: DTensor gradients) run for real. FSDP1 refuses
to run without an accelerator in torch 2.13, so its case (each rank holding a
flat piece of every gradient, or none) is fed to the capture by hand.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import sonify
from helpers import ROOT

WORKER = ROOT / "tests" / "_distributed_worker.py"


def run(mode, out_dir, processes=2):
    command = [sys.executable, str(WORKER), mode, str(out_dir)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=out_dir, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run.stderr = result.stderr
    # The two ranks print at once: their lines may run together, so take each report out of the text.
    return sorted(re.findall(r"rank \d+: steps \d+(?:, all_reduce calls \d+, files \[[^\]]*\])?", result.stdout))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run("reference", out, processes=1)
    return sonify.load_norms(out / "reference.norms.csv")


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_rank_zero_records_the_global_norms(mode, tmp_path, reference):
    lines = run(mode, tmp_path)
    log = sonify.load_norms(tmp_path / f"{mode}.norms.csv")
    assert log.layer_names == reference.layer_names  # wrapper names (module., ...) do not show
    np.testing.assert_allclose(log.norms, reference.norms, rtol=1e-5)
    expected_calls = 3 if mode == "fsdp2" else 0  # sharded: one all-reduce per step; DDP: none of ours
    assert (
        lines[0]
        == f"rank 0: steps 3, all_reduce calls {expected_calls}, files ['{mode}.norms.csv', '{mode}.norms.json']"
    )
    assert lines[1] == f"rank 1: steps 3, all_reduce calls {expected_calls}, files []"  # only rank 0 writes


def test_flat_gradient_pieces_add_up_to_the_global_norms(tmp_path, reference):
    run("shards", tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "shards.npy"), reference.norms, rtol=1e-5)


def test_a_failing_disk_on_rank_zero_keeps_every_rank_in_step(tmp_path):
    # The sharded capture's all-reduce must go on on rank 0 after its files fail, or the other ranks wait for ever.
    lines = run("fsdp2-full-disk", tmp_path)
    assert lines == [
        "rank 0: steps 3, all_reduce calls 3, files ['fsdp2.norms.csv', 'fsdp2.norms.json']",
        "rank 1: steps 3, all_reduce calls 3, files []",
    ]
    assert run.stderr.count("sonify stopped its norm log") == 1 and "File too large" in run.stderr
