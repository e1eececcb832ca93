"""Check that installing sonify, alone or with any extra, never replaces the user's torch.

    python scripts/check_install.py [--torch 2.13.0]

Makes a fresh virtual environment, installs torch there first (as a user
has it), then:

- installs sonify itself (core) for real and checks that torch is unchanged;
- for every extra in ``pyproject.toml``, asks pip what it *would* install
  (``pip install --dry-run --report``) and fails if that includes torch or any
  other build of it (a new torch would be a multi-GB download, and often the
  wrong CUDA build).

It needs the package registry (pip), so CI runs it (``.ci/run``) beside the
test suite, which never touches the network. The machine-wide pip constraint
file is lifted for the check (``PIP_CONSTRAINT=``), so it sees what pip does
for a user without one. About two minutes; Python 3.11+ (``tomllib``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: Packages that are torch, or would bring another build of it.
TORCH_FAMILY = {"torch", "triton"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default=os.environ.get("SONIFY_TORCH_VERSION", "2.13.0"))
    args = parser.parse_args()
    extras = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    with tempfile.TemporaryDirectory(prefix="sonify-install-") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip(python, "install", "-q", f"torch=={args.torch}")
        before = installed_torch(python)
        print(f"[install check] fresh environment with torch {before}")
        failures = []
        for extra in ["", *extras]:
            target = f"{ROOT}[{extra}]" if extra else str(ROOT)
            report = Path(folder) / f"report-{extra or 'core'}.json"
            pip(python, "install", "--dry-run", "-q", "--report", str(report), target, lifted=True)
            planned = {
                item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]
            }
            replaced = {name: version for name, version in planned.items() if name in TORCH_FAMILY}
            label = f"sonify[{extra}]" if extra else "sonify"
            if replaced:
                failures.append(f"{label} would install {replaced} over torch {before}")
            print(f"[install check] {label}: {len(planned)} packages, torch {'REPLACED' if replaced else 'kept'}")
        pip(python, "install", "-q", str(ROOT), lifted=True)
        after = installed_torch(python)
        if after != before:
            failures.append(f"installing sonify replaced torch {before} with {after}")
        print(f"[install check] sonify installed for real: torch {after}")
    for failure in failures:
        print(f"[install check] FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def pip(python: str, *arguments: str, lifted: bool = False) -> None:
    env = {**os.environ, "PIP_CONSTRAINT": ""} if lifted else None
    subprocess.run([python, "-m", "pip", *arguments], check=True, env=env)


def installed_torch(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
