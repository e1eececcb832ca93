"""The README's Python blocks, run as a reader would run them (in a fresh folder, with a real tiny model)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sonify
from helpers.kernels import in_process_kernel

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
#: Blocks that need Lightning's or Hugging Face's trainers with a user's model and data: checked to compile
#: here; the same calls run for real in tests/test_integrations.py and tests/test_trackers.py.
FRAMEWORK_BLOCKS = {i for i, block in enumerate(BLOCKS) if "Trainer(" in block}


def _namespace() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
    loss_fn = torch.nn.functional.cross_entropy

    def train() -> None:
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss_fn(model(inputs), targets).backward()
            optimizer.step()

    return {
        "sonify": sonify,
        "model": model,
        "optimizer": optimizer,
        "loader": loader,
        "loss_fn": loss_fn,
        "train": train,
    }


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4
    assert len(FRAMEWORK_BLOCKS) < len(BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    code = compile(block, f"README.md block {index + 1}", "exec")
    if index in FRAMEWORK_BLOCKS:
        return  # compiled above; run in the integration tests
    monkeypatch.chdir(tmp_path)
    if "load_norms(" in block:  # a block that re-renders needs a run recorded before it, as the README's order has
        exec(compile(BLOCKS[0], "README.md block 1", "exec"), _namespace())
    namespace = _namespace()
    with in_process_kernel() if 'live="notebook"' in block else contextlib.nullcontext():  # a notebook's block
        exec(code, namespace)
    son = namespace.get("son")
    if isinstance(son, sonify.Sonifier):  # a block that only creates one: the reader's loop and close follow
        namespace["train"]()
        son.close()
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written, "the block wrote nothing"
    for path in tmp_path.rglob("*.norms.csv"):
        log = sonify.load_norms(path)
        assert len(log) > 0 and np.isfinite(log.norms).all()
