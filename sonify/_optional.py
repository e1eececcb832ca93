"""Import optional dependencies lazily, with one clear line when they are missing."""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from ._errors import SonifyError


def require(module: str, *, extra: str | None, purpose: str) -> ModuleType:
    """Import ``module`` or raise a :class:`SonifyError` naming the extra to install.

    A torchvision build that does not match torch (it breaks the import of
    torchvision and of everything importing it, such as Lightning through
    torchmetrics) is reported as such, with the version to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or module).split(".")[0] == "torchvision":
            fix = torchvision_install()
        else:
            fix = f"pip install 'sonify[{extra}]'" if extra else f"pip install {exc.name or module}"
        raise SonifyError(f"{purpose} needs {exc.name or module}, which is not installed: {fix}") from None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        raise SonifyError(f"{torchvision_mismatch()} ({purpose} needs it)") from None


def torchvision_install() -> str:
    """The pip command that adds the torchvision built for the installed torch, keeping that torch.

    An unpinned ``pip install torchvision`` takes the newest release, which
    pins a newer torch, and pip replaces the user's torch (a multi-GB
    download, and often the wrong CUDA build); so sonify has no extra for it.
    """
    import torch

    version = torch.__version__.split("+")[0]
    return f"pip install 'torchvision=={_matching_torchvision()}.*' 'torch=={version}'"


def _matching_torchvision() -> str:
    import torch

    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return f"0.{minor + 15}" if major == 2 else "the matching release"


def torchvision_mismatch() -> str:
    """Why the installed torchvision cannot load beside torch, and what to install."""
    import torch

    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        vision = "?"
    wanted = _matching_torchvision()
    build = "CPU" if "+cpu" in torch.__version__ or torch.version.cuda is None else f"CUDA {torch.version.cuda}"
    return (
        f"torchvision {vision} cannot load its compiled operators with torch {torch.__version__} ({build} build): "
        f"install torchvision {wanted}.* built for the same {build} variant as torch"
    )
