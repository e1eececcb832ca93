"""The 2019 reference experiment: a LeNet-style CNN on MNIST digits.

:func:`run_experiment` trains :class:`LeNet` for a number of steps with a
:class:`~sonify.Sonifier` attached to its four layers (conv1, conv2, fc1,
fc2; weight gradients only, as in 2019). ``sonify train`` is a thin layer
over it.

Data: MNIST through torchvision (downloaded into ``data_dir`` on first use),
or, offline, scikit-learn's 1,797 handwritten 8x8 digits scaled to 20x20 and
centred in 28x28 like MNIST. ``dataset="auto"`` tries MNIST and falls back
to the digits with a one-line notice.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._choices import DATASETS, OPTIMIZERS
from ._errors import SonifyError, SonifyParameterError, one_line
from ._optional import require
from ._progress import progress_bar
from .sonifier import DEFAULT_OUT_DIR, Sonifier, unique_out
from .sound import SoundSettings

__all__ = ["OPTIMIZERS", "ExperimentConfig", "ExperimentResult", "LeNet", "load_dataset", "run_experiment"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_NOTICES_GIVEN: set[str] = set()
REFERENCE_LAYERS = ("conv1", "conv2", "fc1", "fc2")


class LeNet(nn.Module):
    """The reference CNN for 28x28 grey digits (conv1, conv2, fc1, fc2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


@dataclass
class ExperimentConfig:
    """Settings of one training run (the defaults are the reference's first run)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float | None = 0.5
    batch_size: int = 10
    steps: int = 200
    seed: int = 0
    dataset: str = "auto"
    params: str = "weight"
    device: str = "cpu"
    data_dir: Path | None = None  # None: $SONIFY_DATA, else ~/.cache/sonify

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir or os.environ.get("SONIFY_DATA", "~/.cache/sonify")).expanduser()
        if self.optimizer not in OPTIMIZERS:
            raise SonifyParameterError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.dataset not in DATASETS:
            raise SonifyParameterError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.params not in ("weight", "all"):
            raise SonifyParameterError(f"params={self.params!r} is not understood; use 'weight' or 'all'")
        if not (_is_number(self.lr) and 0 < self.lr <= 1e38):
            raise SonifyParameterError(
                f"learning rate {self.lr!r} is invalid; give a positive finite {{lr}} (at most 1e38, float32's range)"
            )
        if self.momentum is not None and not (_is_number(self.momentum) and self.momentum >= 0):
            raise SonifyParameterError(f"momentum {self.momentum!r} is invalid; give a finite {{momentum}} >= 0")
        for name, value, low, high in (
            ("batch_size", self.batch_size, 1, 10**9),
            ("steps", self.steps, 1, 10**9),
            ("seed", self.seed, 0, 2**63 - 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SonifyParameterError(f"{name} {value!r} is invalid; give a whole number from {low} to {high}")
        if not OPTIMIZERS[self.optimizer][1]:
            self.momentum = None

    def run_name(self, mapping: str = "log", dataset: str | None = None) -> str:
        """A file name stem built from the settings (and the data set actually used)."""
        parts = [f"lenet-{dataset or self.dataset}-{self.optimizer}-lr{self.lr:g}-bs{self.batch_size}"]
        if self.momentum is not None:
            parts.append(f"m{self.momentum:g}")
        if self.params != "weight":  # the reference counts weights only; anything else must not share its name
            parts.append(f"params-{self.params}")
        parts += [f"{self.steps}steps", f"seed{self.seed}", mapping]
        return "-".join(parts)


@dataclass
class ExperimentResult:
    """What a run produced."""

    config: ExperimentConfig
    sonifier: Sonifier
    final_loss: float
    dataset_description: str
    interrupted: bool = False


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_dataset(
    name: str = "auto", data_dir: str | os.PathLike | None = None, notice: Callable[[str], None] = print
) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    """Normalised training images (N, 1, 28, 28), labels, the data set's name and a description.

    ``"auto"`` tries MNIST and falls back to the offline digits, telling
    ``notice`` why in one line.
    """
    data_dir = Path("~/.cache/sonify" if data_dir is None else data_dir).expanduser()
    if name in ("auto", "mnist"):
        try:
            return _load_mnist(data_dir)
        except SonifyError as exc:
            if name == "mnist":
                raise
            text = f"{exc}; using scikit-learn's 8x8 digits upsampled to 28x28 instead"
            if text not in _NOTICES_GIVEN:  # once per process, not once per run of a grid
                _NOTICES_GIVEN.add(text)
                notice(text)
    return _load_digits()


def _import_torchvision() -> Any:
    return require("torchvision", extra=None, purpose="MNIST")


def _load_mnist(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    torchvision = _import_torchvision()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a dead network must not hang the run
    try:
        dataset = torchvision.datasets.MNIST(str(data_dir), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... for a failed download
        raise SonifyError(f"MNIST could not be loaded or downloaded into {data_dir} ({one_line(exc)})") from None
    finally:
        socket.setdefaulttimeout(previous)
    images = dataset.data.unsqueeze(1).float().div_(255.0)
    return _normalise(images), dataset.targets.long(), "mnist", f"MNIST ({len(images)} images)"


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, str, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SonifyError(
            "the offline digits need scikit-learn: pip install 'sonify[digits]' (or give {dataset}mnist)"
        ) from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    # MNIST digits fill a 20x20 box centred in 28x28; do the same.
    images = F.pad(F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    description = f"scikit-learn digits ({len(images)} images, 8x8 upsampled)"
    return _normalise(images.clamp_(0.0, 1.0)), torch.tensor(digits.target, dtype=torch.long), "digits", description


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return images.sub_(MNIST_MEAN).div_(MNIST_STD)


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Iterator[tuple]:
    """Shuffled batches, reshuffled every epoch, for ever (the digits are few)."""
    generator = torch.Generator().manual_seed(seed)
    if not 1 <= batch_size <= len(images):
        raise SonifyParameterError(f"batch size {batch_size} does not fit {len(images)} images")
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]


def make_optimizer(config: ExperimentConfig, parameters: Any) -> torch.optim.Optimizer:
    """The torch optimizer named in ``config``."""
    class_name, takes_momentum = OPTIMIZERS[config.optimizer]
    options: dict[str, Any] = {"lr": config.lr}
    if takes_momentum and config.momentum is not None:
        options["momentum"] = config.momentum
    return getattr(torch.optim, class_name)(parameters, **options)


def run_experiment(
    config: ExperimentConfig,
    *,
    out: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    sound: SoundSettings | None = None,
    audio: bool = True,
    progress: bool = True,
    notice: Callable[[str], None] = print,
    on_step: Callable[[], None] | None = None,
    **sonifier_options: Any,
) -> ExperimentResult:
    """Train the reference CNN with sonify attached.

    Parameters
    ----------
    config : ExperimentConfig
    out : path, optional
        Audio file; default ``<out_dir>/<run name>.wav``.
    out_dir : path, optional
        Folder for the default file name; ``audio_out`` by default.
    sound : SoundSettings, optional
    audio : bool
        Write the audio while training (the norm log is always written).
    progress : bool
        Show a progress bar with steps/s and the loss.
    notice : callable
        Receives one-line notices (dataset fallback).
    on_step : callable, optional
        Called after each step (for an outer progress bar).
    **sonifier_options
        Passed to :class:`~sonify.Sonifier` (``live``, ``device``, ``pace``, ``log``, ...).

    Returns
    -------
    ExperimentResult
        Also when interrupted by Ctrl-C: files are complete up to the last step.
    """
    sound = sound or SoundSettings()
    images, labels, dataset_name, description = load_dataset(config.dataset, config.data_dir, notice)
    if config.batch_size > len(images):  # else the batches would never fill: no step, for ever
        raise SonifyParameterError(
            f"batch size {config.batch_size} is larger than the data set ({description}); "
            f"give {{batch_size}} {len(images)} or less"
        )
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = LeNet().to(device)
    optimizer = make_optimizer(config, model.parameters())
    mapping_name = sound.mapping if isinstance(sound.mapping, str) else "custom"
    folder = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
    # A name made from the settings never takes another run's files: a repeated run gets "-2", "-3"...
    out = Path(out) if out is not None else unique_out(folder / f"{config.run_name(mapping_name, dataset_name)}.wav")
    metadata = {"experiment": {**asdict(config), "data_dir": str(config.data_dir)}, "dataset": description}
    batches = _batches(images, labels, config.batch_size, config.seed)
    losses = torch.empty(config.steps, device=device)  # on the device: no host sync per step
    done, interrupted = 0, False
    sonifier = Sonifier(
        model,
        optimizer,
        out=out,
        layers=list(REFERENCE_LAYERS),
        params=config.params,
        sound=sound,
        audio=audio,
        metadata=metadata,
        **sonifier_options,
    )
    bar = progress_bar(config.steps, "train", enabled=progress)
    try:
        for step in range(config.steps):
            inputs, targets = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(inputs.to(device)), targets.to(device))
            loss.backward()
            optimizer.step()
            losses[step] = loss.detach()
            done = step + 1
            bar.update(1)
            if on_step is not None:
                on_step()
            if done % 20 == 0 or done == config.steps:
                bar.set_postfix(loss=f"{losses[step].item():.4g}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        sonifier.close(drain=not interrupted)
        final_loss = float(losses[done - 1]) if done else math.nan
        sonifier.update_metadata(final_loss=final_loss, interrupted=interrupted)
    return ExperimentResult(config, sonifier, final_loss, description, interrupted)
