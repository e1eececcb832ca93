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

import functools
import math
import operator
import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._errors import SonifyError, SonifyParameterError
from .layers import Layer
from .norms import StepNorms

if TYPE_CHECKING:
    import torch

__all__ = ["PER_TENSOR_LIMIT", "GradientCapture", "ParameterNorms", "layer_rows"]

#: On the CPU, up to this many gradients are read one by one (a norm and ``.item()`` each); more go
#: through the one fused call (measured: see ``benchmarks/bench_training.py``, many small tensors).
PER_TENSOR_LIMIT = 128


class ParameterNorms(NamedTuple):
    """A complete step's norms still one per *parameter*, straight from the device (a list of floats).

    The training thread hands them on as they are, and the sinks' thread
    combines them into layers (:func:`layer_rows`): right after a training
    step NumPy's code is cold in the caches, and each small NumPy call costs
    several microseconds there.
    """

    step: int
    norms: list
    missing: np.ndarray  # bool per layer (all False: every layer present)
    segments: np.ndarray  # where each layer's parameters start


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

    def __init__(self, layers: Sequence[Layer], sharded: bool = False, early: bool = False) -> None:
        if not isinstance(early, bool):
            raise SonifyParameterError(f"early={early!r} is not understood; use True or False")
        self.layers = list(layers)
        self.sharded = sharded or any(_is_dtensor(p) for layer in self.layers for p in layer.parameters)
        self._in_flight: deque = deque()
        self._gaps_checked: tuple = ()
        self._careful = False  # the last step had a missing or sparse gradient
        self._early_wanted = early
        self._hooks: list = []
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
        self._full_segments = _segment_starts(self._owners)
        self._one_per_segment = len(self._full_segments) == len(self.layers)  # no layer without parameters
        self._attach_early(parameters)

    def _attach_early(self, parameters: list) -> None:
        """Hook every parameter to compute its norm as its gradient is produced (with ``early=True``)."""
        self.remove_hooks()
        self.early = self._early_wanted and not self.sharded
        self._early: list = [None] * len(parameters)
        if self.early:
            self._hooks = [
                p.register_post_accumulate_grad_hook(functools.partial(self._on_gradient, position))
                for position, p in enumerate(parameters)
            ]

    def remove_hooks(self) -> None:
        """Detach from the parameters (the ``early`` hooks); safe to call more than once."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _on_gradient(self, position: int, parameter: Any) -> None:
        """Inside backward, as a gradient is complete: its norm, while the gradient is hot in the caches.

        Never raises into backward; a norm that cannot be had here is computed at the step instead.
        """
        import torch

        grad = parameter.grad
        try:
            if grad is None or grad.is_sparse:
                self._early[position] = None
                return
            enabled = torch.is_grad_enabled()
            torch._C._set_grad_enabled(False)
            try:
                values = torch.view_as_real(grad) if grad.is_complex() else grad
                half = grad.dtype in (torch.float16, torch.bfloat16)
                norm = torch.linalg.vector_norm(values, dtype=torch.float32 if half else None)
            finally:
                torch._C._set_grad_enabled(enabled)
            # The gradient object and its version: any later change (accumulation, unscaling, clipping)
            # makes the norm stale, and the step computes it afresh. A weak reference keeps no gradient alive.
            self._early[position] = (weakref.ref(grad), grad._version, norm)
        except Exception:
            self._early[position] = None

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
                    self._queue_floats(step, [norm(g).item() for g in grads], None, grads)
                    return
                values = self._early_norms(grads) if self.early else self._parameter_norms(grads, None)
            except (TypeError, RuntimeError, AttributeError):  # a missing (None) or sparse gradient: careful path
                pass
            else:
                self._to_host(step, values, None, grads)
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
            grads, index = self._present(grads)
        else:
            index = None
        if not grads:
            self._in_flight.append((step, np.zeros(0), np.zeros(0, dtype=np.intp), None, False))
            return
        self._to_host(step, self._parameter_norms(grads, index), index, grads)

    def _early_norms(self, grads: list) -> torch.Tensor:
        """The norms the hooks computed during backward, where still current; the others computed now."""
        early = self._early
        norms, stale = [], []
        for position, grad in enumerate(grads):
            entry = early[position]
            if entry is not None and grad is not None and entry[0]() is grad and grad._version == entry[1]:
                norms.append(entry[2])
            else:
                norms.append(None)
                stale.append(position)
        if stale:
            for position, norm in zip(stale, self._parameter_norms([grads[i] for i in stale], np.array(stale))):
                norms[position] = norm
        return self._stacked(norms, grads)

    def _parameter_norms(self, grads: list, index: np.ndarray | None) -> torch.Tensor:
        """One norm per gradient, stacked on the first gradient's device: one fused call in the common case."""
        import torch

        if self._complex:
            chosen = set(self._complex) if index is None else set(np.flatnonzero(np.isin(index, self._complex)))
            grads = [torch.view_as_real(g) if i in chosen else g for i, g in enumerate(grads)]
        # Gradients of a create_graph=True backward carry autograd history: never extend it. (Set directly:
        # a torch.no_grad() object costs more than the rest of this bookkeeping.)
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        norms: Any
        try:
            if not self._half:
                norms = torch._foreach_norm(grads, 2)
            else:
                positions = range(len(grads)) if index is None else index
                half = [i for i, position in enumerate(positions) if position in self._half]
                norms = list(torch._foreach_norm(grads, 2)) if len(half) < len(grads) else [None] * len(grads)
                for i, norm in zip(half, torch._foreach_norm([grads[i] for i in half], 2, dtype=torch.float32)):
                    norms[i] = norm
            return self._stacked(norms, grads)
        finally:
            torch._C._set_grad_enabled(enabled)

    def _stacked(self, norms: Any, grads: list) -> torch.Tensor:
        """One tensor of the norms, on the first gradient's device, in a dtype that holds them all."""
        import torch

        if not (self._wide or self._half):
            try:
                return torch.stack(norms)
            except RuntimeError:  # gradients on several devices (model parallel): gathered below
                pass
        device = grads[0].device
        dtype = torch.float64 if self._wide else torch.float32
        return torch.stack([n.to(device=device, dtype=dtype, non_blocking=True) for n in norms])

    def _to_host(self, step: int, values: torch.Tensor, index: np.ndarray | None, grads: list | None) -> None:
        """Queue the step's values for the host: at once on the CPU, asynchronously on a GPU.

        ``index`` is the parameter index of each value (None: all parameters);
        ``grads=None`` means the values are sharded layer norms followed by presence counts.
        """
        import torch

        if values.is_cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(values.device))
            self._in_flight.append((step, host, index, event, grads is None))
        else:
            self._queue_floats(step, (values if values.is_cpu else values.cpu()).tolist(), index, grads)

    def _queue_floats(self, step: int, norms: Any, index: np.ndarray | None, grads: list | None) -> None:
        """Queue a step's values, already on the host as Python floats.

        Python floats, not NumPy: right after a training step NumPy's code is
        cold in the caches and each small NumPy call costs several
        microseconds there; ``tolist()`` and ``sum()`` do not.
        """
        if grads is not None and not math.isfinite(sum(norms)):  # NaN/Inf, or a sum too large: look closer
            norms = _exact_overflowed(np.array(norms), grads)
        self._in_flight.append((step, norms, index, None, grads is None))

    def _submit_sharded(self, step: int, grads: list) -> None:
        import torch
        import torch.distributed as dist

        count = len(self.layers)
        local, owners, weights = [], [], []
        for grad, owner in zip(grads, self._owners.tolist()):
            if grad is None:
                continue
            if _is_dtensor(grad):
                local.append(grad.to_local())
                weights.append(1.0 / _replication(grad))
            else:
                local.append(grad)
                weights.append(1.0)
            owners.append(owner)
        device = local[0].device if local else _collective_device()
        # float64: squares of float32 norms up to 3e38 still fit, so nothing overflows on the way.
        packed = torch.zeros(2 * count, dtype=torch.float64, device=device)
        if local:
            local = [torch.view_as_real(g) if g.is_complex() else g for g in local]
            with torch.no_grad():
                norms: Any = torch._foreach_norm(local, 2, dtype=torch.float32) if not self._wide else None
                if norms is None:
                    norms = [n.double() for n in torch._foreach_norm(local, 2)]
                squares = torch.stack([n.to(torch.float64) for n in norms]).square()
                index = torch.tensor(owners, device=device)
                squares *= torch.tensor(weights, device=device, dtype=torch.float64)
                packed[:count].index_add_(0, index, squares)
                packed[count:].index_add_(0, index, torch.ones(len(owners), device=device, dtype=torch.float64))
        dist.all_reduce(packed)  # the only collective: squared sums and presence counts of every layer
        packed[:count].sqrt_()
        self._to_host(step, packed, None, None)

    def _present(self, grads: list) -> tuple[list, np.ndarray]:
        """The gradients that exist (sparse ones as their values) and their parameter indices."""
        present, index = [], []
        for position, grad in enumerate(grads):
            if grad is not None:
                present.append(grad.coalesce().values() if grad.is_sparse else grad)
                index.append(position)
        return present, np.array(index, dtype=np.intp)

    def ready(self, *, combine: bool = True) -> list[StepNorms | ParameterNorms]:
        """Steps whose norms are on the host, oldest first, without waiting.

        ``combine=False`` leaves a complete step's norms per parameter
        (:class:`ParameterNorms`), for a consumer that combines them on its
        own thread with :func:`layer_rows`.
        """
        done = []
        while self._in_flight and (self._in_flight[0][3] is None or self._in_flight[0][3].query()):
            done.append(self._take(combine))
        return done

    def drain(self, *, combine: bool = True) -> list[StepNorms | ParameterNorms]:
        """All submitted steps, waiting for the device where needed."""
        done = []
        while self._in_flight:
            event = self._in_flight[0][3]
            if event is not None:
                event.synchronize()
            done.append(self._take(combine))
        return done

    def _take(self, combine: bool = True) -> StepNorms | ParameterNorms:
        step, values, index, _, sharded = self._in_flight.popleft()
        if index is None and not sharded and self._one_per_segment:  # every layer present, in order
            if not combine and not self._trivial:
                per_parameter = values if isinstance(values, list) else values.tolist()
                return ParameterNorms(step, per_parameter, self._all_present, self._full_segments)
            values = np.asarray(values, dtype=np.float64)
            norms = values if self._trivial else _combine(values, self._full_segments)
            return StepNorms(step, norms, self._all_present)
        values = np.asarray(values.numpy() if hasattr(values, "numpy") else values, dtype=np.float64)
        count = len(self.layers)
        if sharded:  # layer norms, then how many ranks held a gradient of each layer
            return StepNorms(step, values[:count], values[count:] == 0)
        owners = self._owners if index is None else self._owners[index]
        starts = _segment_starts(owners)
        missing = np.ones(count, dtype=bool)
        missing[owners] = False
        layer_norms = np.zeros(count)
        layer_norms[owners[starts]] = _combine(values, starts)
        return StepNorms(step, layer_norms, missing)


_IS_CPU = operator.attrgetter("is_cpu")


def layer_rows(items: Sequence[StepNorms | ParameterNorms]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, layer norms (steps x layers, float64) and missing flags of several steps, combined where needed.

    Steps that :meth:`GradientCapture.ready` left per parameter
    (:class:`ParameterNorms`) are combined here, all rows of one layout at once.
    """
    steps = np.fromiter((item.step for item in items), dtype=np.int64, count=len(items))
    missing = np.stack([item.missing for item in items])
    rows: list = [None] * len(items)
    pending: dict[int, list[int]] = {}
    for position, item in enumerate(items):
        if not isinstance(item, ParameterNorms):
            rows[position] = np.asarray(item.norms, dtype=np.float64)
        else:
            pending.setdefault(id(item.segments), []).append(position)
    for positions in pending.values():
        values = np.array([items[p].norms for p in positions], dtype=np.float64)
        segments = items[positions[0]].segments  # type: ignore[union-attr]  # a ParameterNorms, as sorted above
        for position, row in zip(positions, _combine(values, segments)):
            rows[position] = row
    return steps, np.stack(rows) if rows else np.zeros((0, missing.shape[1] if missing.ndim == 2 else 0)), missing


def _segment_starts(owners: np.ndarray) -> np.ndarray:
    """Where each run of equal owners begins (owners are in layer order)."""
    if len(owners) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])


def _combine(norms: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """L2 norm of each segment of per-parameter norms (the last axis), in float64 without overflow."""
    if norms.size and norms.max() < 1e150:  # the common case; NaN, Inf and huge norms go the careful way
        return np.sqrt(np.add.reduceat(norms * norms, starts, axis=-1))
    if norms.ndim == 2:
        return np.array([_combine(row, starts) for row in norms]).reshape(len(norms), len(starts))
    # Huge float64 norms: scale each segment by its largest finite value first.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        finite = np.where(np.isfinite(norms), norms, 0.0)
        scale = np.maximum.reduceat(finite, starts)
        scale[scale == 0] = 1.0
        owner_scale = np.repeat(scale, np.diff(np.append(starts, len(norms))))
        scaled = norms / owner_scale
        return scale * np.sqrt(np.add.reduceat(scaled * scaled, starts))


def _exact_overflowed(norms: np.ndarray, grads: list) -> np.ndarray:
    """Recompute, scaled and in float64, the norms that overflowed although their gradient is finite."""
    import torch

    norms = norms.copy()
    for position in np.flatnonzero(np.isposinf(norms)):
        grad = grads[position]
        values = (torch.view_as_real(grad) if grad.is_complex() else grad).detach().to(torch.float64)
        largest = float(values.abs().max()) if values.numel() else 0.0
        if math.isfinite(largest) and largest > 0:
            norms[position] = largest * float(torch.linalg.vector_norm(values / largest))
    return norms


def _is_dtensor(tensor: object) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(tensor, DTensor)


def _replication(tensor: Any) -> int:
    """On how many ranks of its mesh the local piece of a DTensor is repeated."""
    factor = 1
    for dim, placement in enumerate(tensor.placements):
        if placement.is_replicate():
            factor *= tensor.device_mesh.size(dim)
        elif placement.is_partial():
            raise SonifyError(
                "a gradient is a DTensor with a Partial placement (not yet reduced); "
                "record after the gradients are reduced, e.g. in the optimizer step"
            )
    return factor


def _collective_device() -> torch.device:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
