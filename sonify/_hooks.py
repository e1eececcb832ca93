"""Attaching to a training loop: optimizer step hooks, closures, wrapped optimizers, AMP scalers.

Everything here is undone by the ``remove()`` of what it returns, and never
touches the user's objects beyond what it undoes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ._errors import SonifyParameterError

__all__ = ["OptimizerHook", "ScalerWatch", "ZeroStepHook", "unwrap_optimizer"]


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer that really steps, inside wrappers such as Accelerate's or Lightning's.

    ``AcceleratedOptimizer`` (Hugging Face Accelerate), ``LightningOptimizer``
    and any wrapper that keeps the real optimizer in ``.optimizer`` or
    ``._optimizer`` are looked through, so that hooks go where the step
    happens (and an Accelerate step skipped by gradient accumulation is not
    recorded).

    Raises
    ------
    SonifyParameterError
        When no torch optimizer is found.
    """
    import torch

    seen = set()
    current = optimizer
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "optimizer", None)
        if inner is None or inner is current:
            inner = getattr(current, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) or (inner is not None and hasattr(inner, "param_groups")):
            current = inner
            continue
        break
    if not isinstance(current, torch.optim.Optimizer) or not hasattr(current, "_optimizer_step_pre_hooks"):
        raise SonifyParameterError(
            f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer (nor a wrapper of one in "
            "'.optimizer'); pass the torch optimizer, or leave it out and call son.step() after each backward pass"
        )
    return current


class OptimizerHook:
    """Call ``on_step()`` once per ``optimizer.step()``, with the gradients the step uses.

    A plain step is recorded just before it runs. A step given a closure
    (LBFGS and other closure optimizers, where the gradients exist only once
    the closure has run inside the step) is recorded right after the first
    call of the closure; if the optimizer never calls it, after the step.
    """

    def __init__(self, optimizer: Any, on_step: Callable[[], None]) -> None:
        self.optimizer = optimizer
        self._on_step = on_step
        self._waiting = False  # a closure step that has not been recorded yet
        self._handles = [
            optimizer.register_step_pre_hook(self._before),
            optimizer.register_step_post_hook(self._after),
        ]

    def _before(self, optimizer: Any, args: tuple, kwargs: dict) -> tuple | None:
        # torch passes the step's own arguments, self included: (optimizer, closure?) + kwargs.
        first = 1 if args and args[0] is optimizer else 0
        closure = kwargs.get("closure", args[first] if len(args) > first else None)
        if not callable(closure):
            self._on_step()
            return None
        self._waiting = True

        def recording_closure(*closure_args: Any, **closure_kwargs: Any) -> Any:
            result = closure(*closure_args, **closure_kwargs)
            if self._waiting:
                self._waiting = False
                self._on_step()
            return result

        if "closure" in kwargs:
            return args, {**kwargs, "closure": recording_closure}
        return (*args[:first], recording_closure, *args[first + 1 :]), kwargs

    def _after(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        if self._waiting:
            self._waiting = False
            self._on_step()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ScalerWatch:
    """Record the steps an AMP ``GradScaler`` skips for one optimizer.

    ``scaler.step(optimizer)`` does not call ``optimizer.step()`` when the
    gradients hold inf/NaN, so the optimizer hook never sees that step. One
    wrapper is installed per scaler, shared by every watch on it (one scaler
    for several optimizers is PyTorch's documented pattern), and a watch only
    reacts to its own optimizer. The scaler's own ``step`` is restored when
    the last watch is removed.

    Parameters
    ----------
    scaler : torch.amp.GradScaler
    optimizer : torch.optim.Optimizer
        The (unwrapped) optimizer whose skipped steps to record.
    steps : callable
        Returns how many steps have been recorded so far.
    on_step : callable
        Records the current (unscaled, non-finite) gradients as a step.
    """

    def __init__(self, scaler: Any, optimizer: Any, steps: Callable[[], int], on_step: Callable[[], None]) -> None:
        if not callable(getattr(scaler, "step", None)):
            raise SonifyParameterError(
                f"scaler={type(scaler).__name__} has no step(); pass a torch.amp.GradScaler (or leave scaler out)"
            )
        self.optimizer, self.steps, self.on_step = optimizer, steps, on_step
        self._wrapper = _ScalerWrapper.attach(scaler)
        self._wrapper.watches.append(self)

    def remove(self) -> None:
        if self in self._wrapper.watches:
            self._wrapper.watches.remove(self)
            if not self._wrapper.watches:
                self._wrapper.detach()


class _ScalerWrapper:
    """The one wrapper around a scaler's ``step``."""

    _by_scaler: ClassVar[dict[int, _ScalerWrapper]] = {}

    @classmethod
    def attach(cls, scaler: Any) -> _ScalerWrapper:
        wrapper = cls._by_scaler.get(id(scaler))
        if wrapper is None or wrapper.scaler is not scaler:
            wrapper = cls._by_scaler[id(scaler)] = cls(scaler)
        return wrapper

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler
        self.watches: list[ScalerWatch] = []
        self._own_attribute = "step" in vars(scaler)  # someone else's wrapper, to put back as it was
        self._previous = scaler.step
        scaler.step = self._step

    def _step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        target = unwrap_or_self(optimizer)
        mine = [(watch, watch.steps()) for watch in self.watches if watch.optimizer is target]
        result = self._previous(optimizer, *args, **kwargs)
        for watch, before in mine:
            if watch.steps() == before:  # the optimizer did not step: skipped for inf/NaN gradients
                watch.on_step()
        return result

    def detach(self) -> None:
        self._by_scaler.pop(id(self.scaler), None)
        if vars(self.scaler).get("step") != self._step:
            return  # wrapped again by someone else after us: leave theirs (ours now passes through)
        if self._own_attribute:
            self.scaler.step = self._previous
        else:
            del self.scaler.step  # the class's own method shows through again


def unwrap_or_self(optimizer: Any) -> Any:
    try:
        return unwrap_optimizer(optimizer)
    except SonifyParameterError:
        return optimizer


class ZeroStepHook:
    """Call ``on_step()`` once per real step of a DeepSpeed ZeRO optimizer, before it clips and updates.

    A ZeRO optimizer is not a torch optimizer (no step hooks), and the torch
    optimizer inside it steps once per parameter group on flat partitions,
    after the model's gradients are gone. So its ``step`` is wrapped on the
    instance (the engine calls it once per optimizer step, after gradient
    accumulation); :meth:`remove` puts the original back.
    """

    def __init__(self, zero_optimizer: Any, on_step: Callable[[], None]) -> None:
        self.optimizer = zero_optimizer
        self._on_step = on_step
        self._had_own = "step" in vars(zero_optimizer)  # another wrapper already on the instance: kept below ours
        original = zero_optimizer.step

        def step(*args: Any, **kwargs: Any) -> Any:
            self._on_step()
            return original(*args, **kwargs)

        self._original, self._wrapper = original, step
        zero_optimizer.step = step

    def remove(self) -> None:
        """Put the original ``step`` back (unless someone wrapped it after us: then ours only stops calling)."""
        if vars(self.optimizer).get("step") is self._wrapper:
            if self._had_own:
                self.optimizer.step = self._original
            else:
                del self.optimizer.step
        self._on_step = _nothing


def _nothing() -> None:
    return None
