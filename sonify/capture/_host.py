"""Each step's norms on their way to the host: at once on the CPU, asynchronously on a GPU.

On a GPU the values are copied into pinned memory without waiting, with a
CUDA event recorded behind the copy; the step is handed out once the event
has completed (typically a step later), so capture never makes the host wait
for the device.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._kernels import exact_overflowed

if TYPE_CHECKING:
    import torch

__all__ = ["HostQueue", "InFlight"]


class InFlight(NamedTuple):
    """One step's values: per parameter, or sharded layer norms."""

    step: int
    values: Any  # a list of floats, or a host tensor (filled when ``event`` completes)
    positions: np.ndarray | None  # each value's parameter position; None: all, in order
    event: Any  # a torch.cuda.Event, or None when the values are already here
    sharded: bool  # values are layer norms followed by presence counts


class HostQueue:
    """Steps in the order they were submitted, handed out when their values are on the host."""

    def __init__(self) -> None:
        self._in_flight: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self._in_flight)

    def put(self, step: int, values: torch.Tensor, index: np.ndarray | None, grads: list | None) -> None:
        """Queue the step's values: at once on the CPU, asynchronously on a GPU.

        ``grads=None`` means the values are sharded layer norms followed by presence counts.
        """
        import torch

        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(values.device))
            self._in_flight.append(InFlight(step, host, index, event, grads is None))
        else:
            self.put_floats(step, (values if values.is_cpu else values.cpu()).tolist(), index, grads)

    def put_floats(self, step: int, norms: Any, index: np.ndarray | None, grads: list | None) -> None:
        """Queue a step's values, already on the host as Python floats.

        Python floats, not NumPy: right after a training step NumPy's code is
        cold in the caches and each small NumPy call costs several
        microseconds there; ``tolist()`` and ``sum()`` do not.
        """
        if grads is not None and not math.isfinite(sum(norms)):  # NaN/Inf, or a sum too large: look closer
            norms = exact_overflowed(np.array(norms), grads)
        self._in_flight.append(InFlight(step, norms, index, None, grads is None))

    def put_empty(self, step: int) -> None:
        """A step without any gradient."""
        self._in_flight.append(InFlight(step, np.zeros(0), np.zeros(0, dtype=np.intp), None, False))

    def ready(self) -> list[InFlight]:
        """The steps whose values are on the host, oldest first, without waiting."""
        done = []
        in_flight = self._in_flight
        while in_flight and (in_flight[0].event is None or in_flight[0].event.query()):
            done.append(in_flight.popleft())
        return done

    def drain(self) -> list[InFlight]:
        """Every step, waiting for the device where needed."""
        done = []
        while self._in_flight:
            entry = self._in_flight.popleft()
            if entry.event is not None:
                entry.event.synchronize()
            done.append(entry)
        return done
