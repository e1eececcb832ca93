"""Find a model's layers and read their gradient norms once per step.

Each step, the norms of all selected gradients are computed in one fused call
(``torch._foreach_norm``) and copied to the host **once**, then combined into
layers on the host, off the training thread. (On the CPU, where reading a
value synchronises nothing, each gradient's norm is computed and read on its
own instead: cheaper there than the fused call plus a stack.) On a GPU the copy is asynchronous into pinned memory and
is picked up on a later step when its CUDA event has completed, so capture
never makes the host wait for the device.

With ``early=True`` each parameter's norm is instead computed during
backward, as soon as its gradient is complete
(``register_post_accumulate_grad_hook``), while the gradient is still in the
caches; at the step only the stack and the copy remain. A gradient changed
after that (accumulated again, unscaled by AMP, clipped, replaced) is noticed
by its version counter and read again at the step, so both ways give the
norms of the gradients the step applies. One change escapes it: an in-place
change through ``.data`` (``p.grad.data.mul_(0.5)``), because ``.data`` is a
tensor with a version counter of its own, so the norm logged is the one from
backward (tested). Change gradients through the tensor itself
(``p.grad.mul_``, ``clip_grad_norm_``, AMP's unscaling all do), or keep the
default. Measured on the 2-core development
VM it is no faster: the hooks add to backward what they save at the step
(ResNet-18: 1.043 vs 1.047 times bare training), so reading at the step, one
fused call, stays the default.

Layers are chosen and grouped by :mod:`sonify.layers`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import SonifyParameterError
from ..layers import Layer
from ..norms import StepNorms, combine_segments
from ._deepspeed import failure_message, find_zero_optimizer, zero_layer_norms
from ._early import EarlyNorms
from ._host import HostQueue, InFlight
from ._kernels import parameter_norms, present, segment_starts, stacked
from ._sharded import is_dtensor, sharded_layer_norms

if TYPE_CHECKING:
    import torch

__all__ = ["PER_TENSOR_LIMIT", "GradientCapture", "find_zero_optimizer"]

#: On the CPU, up to this many gradients are read one by one (a norm and ``.item()`` each); more go
#: through the one fused call (measured: see ``benchmarks/bench_training.py``, many small tensors).
PER_TENSOR_LIMIT = 128


class GradientCapture:
    """Compute per-layer gradient norms with one fused call and one host copy.

    Parameters
    ----------
    layers : list of Layer
        From :func:`select_layers`.
    sharded : bool
        Gradients are shards (FSDP): each rank sums the squares of its local
        pieces per layer, and one all-reduce per step adds them up across
        ranks, so every rank gets the global norms without gathering any
        gradient. DTensor gradients (FSDP2) are detected and handled this way
        anyway; pass True for FSDP1, whose gradients are plain local shards.

    early : bool
        Compute each parameter's norm during backward (see the module help).
        Not for sharded gradients (ignored there). Call :meth:`remove_hooks`
        when done.

    Notes
    -----
    :meth:`submit` starts the computation for a step; :meth:`ready` returns
    the steps whose norms have reached the host (on the CPU at once; on a GPU
    once the copy's event has completed, typically a step later);
    :meth:`drain` waits for all of them.

    **Precision.** Every floating dtype works (float16, bfloat16, float32,
    float64, and complex parameters, whose norm is that of their real and
    imaginary parts). The device computes one norm per parameter, in the
    gradient's own precision (float32 for 16-bit ones); the host combines
    them into layers in float64, scaled so that nothing overflows there. A
    parameter norm that overflowed its precision although every element is
    finite (a float32 gradient with an element near 1e30) is recomputed
    exactly, scaled, in float64 on the CPU, where the gradient is still at
    hand. (On a GPU the norms arrive a step later, when the gradient may
    have changed, so there such a norm stays ``inf``.)
    """

    def __init__(
        self, layers: Sequence[Layer], sharded: bool = False, early: bool = False, zero_optimizer: Any = None
    ) -> None:
        if not isinstance(early, bool):
            raise SonifyParameterError(f"early={early!r} is not understood; use True or False")
        self.layers = list(layers)
        #: The DeepSpeed ZeRO optimizer whose gradient pieces are read (see ``_deepspeed``), or None.
        self.zero_optimizer = zero_optimizer
        self.sharded = (
            sharded
            or zero_optimizer is not None
            or any(is_dtensor(p) for layer in self.layers for p in layer.parameters)
        )
        #: Why no more steps come (set on every rank at the same step); None while capture works.
        self.failure: str | None = None
        self._zero_reason = ""
        self._host = HostQueue()
        self._gaps_checked: tuple = ()
        self._careful = False  # the last step had a missing or sparse gradient
        self._early_wanted = early
        self._early = EarlyNorms()
        self._bind([p for layer in self.layers for p in layer.parameters])

    def _bind(self, parameters: list) -> None:
        """Flat views of the selection, so the per-step work is one pass over parameters."""
        import torch

        self._parameters = parameters
        self._owners = np.fromiter(
            (index for index, layer in enumerate(self.layers) for _ in layer.parameters), dtype=np.intp
        )
        self._trivial = len(self._owners) == len(self.layers)  # one parameter per layer
        dtypes = [p.dtype for p in parameters]
        self._complex = [i for i, dtype in enumerate(dtypes) if dtype.is_complex]
        # 16-bit gradients are accumulated in float32; float32/float64 ones in their own precision.
        self._half = {i for i, dtype in enumerate(dtypes) if dtype in (torch.float16, torch.bfloat16)}
        self._wide = any(dtype in (torch.float64, torch.complex128) for dtype in dtypes)
        self._plain = not self._complex and not self._half  # each norm in its gradient's own real dtype
        self._all_present = np.zeros(len(self.layers), dtype=bool)
        self._all_present.flags.writeable = False  # shared by every complete step
        self._full_segments = segment_starts(self._owners)
        self._one_per_segment = len(self._full_segments) == len(self.layers)  # no layer without parameters
        self._attach_early(parameters)

    def _attach_early(self, parameters: list) -> None:
        """Hook every parameter to compute its norm as its gradient is produced (with ``early=True``)."""
        self._early.remove()
        self.early = self._early_wanted and not self.sharded
        if self.early:
            self._early.attach(parameters)

    def remove_hooks(self) -> None:
        """Detach from the parameters (the ``early`` hooks); safe to call more than once."""
        self._early.remove()

    def rebind(self) -> bool:
        """Follow parameters that were replaced in their modules (``load_state_dict(assign=True)``).

        Returns True when any was replaced. Cheap enough to call whenever a gradient is missing.
        """
        changed = False
        rebound: list = []
        for layer_index, layer in enumerate(self.layers):
            if not layer.sources:
                rebound.extend(layer.parameters)
                continue
            current = tuple(getattr(module, name, None) for module, name in layer.sources)
            if any(new is not old for new, old in zip(current, layer.parameters)) and all(
                new is not None for new in current
            ):
                changed = True
                layer = Layer(layer.name, current, layer.parameter_names, layer.sources)  # type: ignore[arg-type]  # none is None
                self.layers[layer_index] = layer
            rebound.extend(layer.parameters)
        if changed:
            self._bind(rebound)
        return changed

    @property
    def parameters(self) -> list:
        """The parameters whose gradients are read, in layer order."""
        return list(self._parameters)

    def submit(self, step: int) -> None:
        """Start reading the current gradients as the norms of ``step``."""
        if self.zero_optimizer is not None:  # every rank, every step, even after a failure: no rank may skip it
            packed, reason = zero_layer_norms(
                self._parameters, self._owners.tolist(), len(self.layers), self.zero_optimizer
            )
            self._zero_reason = self._zero_reason or reason
            self._host.put(step, packed, None, None)
            return
        grads = [p.grad for p in self._parameters]
        if self.sharded:
            self._submit_sharded(step, grads)
            return
        if not self._careful:  # the common case: every gradient there and dense, nothing checked per parameter
            try:
                if self._plain and not self.early and len(grads) <= PER_TENSOR_LIMIT and all(map(_IS_CPU, grads)):
                    # On the CPU a norm and .item() per gradient beat the fused call plus a stack (61 vs 86 us
                    # per step for LeNet, 334 vs 380 us for a 42-tensor encoder, inside a training loop), and
                    # .item() synchronises nothing there. Never on a GPU: there it would wait per parameter.
                    # Nor for many tensors: each .item() costs a few microseconds of Python, and the one fused
                    # call wins beyond PER_TENSOR_LIMIT.
                    import torch

                    norm = torch.linalg.vector_norm
                    self._host.put_floats(step, [norm(g).item() for g in grads], None, grads)
                    return
                values = self._early_norms(grads) if self.early else self._parameter_norms(grads, None)
            except (TypeError, RuntimeError, AttributeError):  # a missing (None) or sparse gradient: careful path
                pass
            else:
                self._host.put(step, values, None, grads)
                return
        missing_or_sparse = any(g is None or g.is_sparse for g in grads)
        self._careful = missing_or_sparse  # a frozen layer stays frozen: keep checking while it lasts
        if missing_or_sparse:
            # A frozen layer misses its gradient at every step: look for replaced parameters only when
            # the set of missing gradients changes, not on every step.
            gaps = tuple(i for i, g in enumerate(grads) if g is None)
            if gaps != self._gaps_checked:
                self._gaps_checked = gaps
                if self.rebind():
                    grads = [p.grad for p in self._parameters]
            grads, index = present(grads)
        else:
            index = None
        if not grads:
            self._host.put_empty(step)
            return
        self._host.put(step, self._parameter_norms(grads, index), index, grads)

    def _early_norms(self, grads: list) -> torch.Tensor:
        """The norms the hooks computed during backward, where still current; the others computed now."""
        norms, stale = self._early.current(grads)
        if stale:
            for position, norm in zip(stale, self._parameter_norms([grads[i] for i in stale], np.array(stale))):
                norms[position] = norm
        return stacked(norms, grads, wide=self._wide, half=bool(self._half))

    def _parameter_norms(self, grads: list, index: np.ndarray | None) -> torch.Tensor:
        return parameter_norms(grads, index, self._complex, self._half, self._wide)

    def _submit_sharded(self, step: int, grads: list) -> None:
        packed = sharded_layer_norms(grads, self._owners.tolist(), len(self.layers), self._wide)
        self._host.put(step, packed, None, None)

    def ready(self) -> list[StepNorms]:
        """Steps whose norms are on the host, oldest first, without waiting.

        A complete step's layers may still be combined on first use of its
        norms (see :class:`~sonify.norms.StepNorms`): a consumer on another
        thread combines many at once with :func:`~sonify.norms.layer_rows`.
        """
        return [item for item in map(self._take, self._host.ready()) if item is not None]

    def drain(self) -> list[StepNorms]:
        """All submitted steps, waiting for the device where needed."""
        return [item for item in map(self._take, self._host.drain()) if item is not None]

    def _take(self, entry: InFlight) -> StepNorms | None:
        step, values, index, _, sharded = entry
        if index is None and not sharded and self._one_per_segment:  # every layer present, in order
            if not self._trivial:  # combined where first read (see StepNorms)
                per_parameter = values if isinstance(values, list) else values.tolist()
                return StepNorms(step, per_parameter, self._all_present, self._full_segments)
            return StepNorms(step, np.asarray(values, dtype=np.float64), self._all_present)
        values = np.asarray(values.numpy() if hasattr(values, "numpy") else values, dtype=np.float64)
        count = len(self.layers)
        if sharded:  # layer norms, then how many ranks held a gradient of each layer (then DeepSpeed's failures)
            if self.failure is not None or (len(values) > 2 * count and values[2 * count] > 0):
                # Known to every rank from the same numbers: all stop recording here, and keep the collective.
                self.failure = self.failure or failure_message(self._zero_reason)
                return None
            return StepNorms(step, values[:count], values[count : 2 * count] == 0)
        owners = self._owners if index is None else self._owners[index]
        starts = segment_starts(owners)
        missing = np.ones(count, dtype=bool)
        missing[owners] = False
        layer_norms = np.zeros(count)
        layer_norms[owners[starts]] = combine_segments(values, starts)
        return StepNorms(step, layer_norms, missing)


_IS_CPU = operator.attrgetter("is_cpu")
