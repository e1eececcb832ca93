"""sonify: hear your neural network train.

Each optimizer step, sonify records the gradient norm of every layer and
plays it as a short tone whose pitch follows the norm: one tone per layer, a
short silence between steps. Exploding gradients rise in pitch; NaN and Inf
sound an alarm.

Attach it to any loop (nothing else changes)::

    with sonify.Sonifier(model, optimizer, out="audio_out/run.wav"):
        train()

hear it while it trains with ``Sonifier(model, optimizer, live=True)``, and
re-render or replay the recorded norms with other settings later::

    log = sonify.load_norms("audio_out/run.norms.csv")
    sonify.render(log, "audio_out/run-linear.wav", sound=sonify.SoundSettings(mapping="linear"))
    sonify.play(log)

``import sonify`` does not import sounddevice either: PortAudio is needed only
when sound is played live.

``import sonify`` does not import torch (so ``sonify render`` and the CLI's
help are quick); :class:`Sonifier` imports it when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import notebook as _notebook  # noqa: F401  registers how a NormLog shows itself in Jupyter
from ._errors import SonifyError, SonifyIOError, SonifyParameterError, SonifyWarning
from ._version import __version__
from .comparison import CompareResult, compare
from .importers import load_tensorboard
from .mapping import LinearMap, LogMap, PitchMap, RelativeMap, get_map
from .norms import NormLog
from .playback import LiveReport, PlayResult, play
from .rendering import RenderResult, render
from .score import Score, ToneKind
from .sound import Sounder, SoundSettings
from .sources import load_norms
from .stats import RunStats
from .stream import LiveStream, LiveStreamError, output_devices
from .synthesize import Synthesizer

if TYPE_CHECKING:
    from .sonifier import Sonifier


__all__ = [
    "CompareResult",
    "LinearMap",
    "LiveReport",
    "LiveStream",
    "LiveStreamError",
    "LogMap",
    "NormLog",
    "PitchMap",
    "PlayResult",
    "RelativeMap",
    "RenderResult",
    "RunStats",
    "Score",
    "Sonifier",
    "SonifyError",
    "SonifyIOError",
    "SonifyParameterError",
    "SonifyWarning",
    "SoundSettings",
    "Sounder",
    "Synthesizer",
    "ToneKind",
    "__version__",
    "compare",
    "get_map",
    "load_norms",
    "load_tensorboard",
    "output_devices",
    "play",
    "render",
]


def __getattr__(name: str) -> Any:
    # Sonifier needs torch; importing it lazily keeps `import sonify` light.
    if name == "Sonifier":
        from .sonifier import Sonifier

        return Sonifier
    raise AttributeError(f"module 'sonify' has no attribute {name!r}")
