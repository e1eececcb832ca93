"""Find a model's layers and read their gradient norms once per step.

Each step, the norms of all selected gradients are computed in one fused call
(``torch._foreach_norm``), combined per layer on the device, and copied to
the host **once**. On a GPU the copy is asynchronous into pinned memory and
is picked up on a later step when its CUDA event has completed, so capture
never makes the host wait for the device.

Layer selection (``layers=``):

* ``None``: every module that directly owns parameters, in registration
  order, skipping modules whose parameters are all frozen;
* a list of module names or glob patterns (``"conv1"``, ``"layer1.*"``); a
  selected container (``"layer1"``) is one layer holding all its parameters;
* a module type or tuple of types (``torch.nn.Conv2d``);
* a callable ``(name, module) -> bool``.

Parameter selection (``params=``): ``"all"``, ``"weight"`` (only parameters
named ``weight``, as in the 2019 reference), or ``(name, parameter) -> bool``.
A parameter shared by several modules belongs to the first one only.

Grouping (``group=``, see :func:`group_layers`) merges selected layers into
fewer voices, for large models: a group's norm is the L2 norm over all its
parameters' gradients. By default (``"auto"``) a model with more than
:data:`MAX_VOICES` layers is grouped by module prefix, as deep as still fits.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._errors import SonifyError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_VOICES",
    "GradientCapture",
    "GroupSelector",
    "Layer",
    "LayerSelector",
    "ParamSelector",
    "group_layers",
    "select_layers",
]

LayerSelector = Sequence[str] | type | tuple | Callable[[str, "torch.nn.Module"], bool] | None
ParamSelector = str | Callable[[str, "torch.nn.Parameter"], bool]
GroupSelector = int | str | Callable[[str], str] | None

#: Most voices a listener can follow in one step (16 tones of 10 ms = a 180 ms
#: step with its gap); ``group="auto"`` groups larger models down to this.
MAX_VOICES = 16

#: Name parts that wrappers (DDP, FSDP, activation checkpointing, torch.compile) insert.
_WRAPPER_PARTS = {"module", "_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}


@dataclass(frozen=True)
class Layer:
    """One sounding voice: a name and the parameters whose gradients it sums."""

    name: str
    parameters: tuple[torch.nn.Parameter, ...]
    parameter_names: tuple[str, ...]


def select_layers(model: torch.nn.Module, layers: LayerSelector = None, params: ParamSelector = "all") -> list[Layer]:
    """The layers of ``model`` to record, in model order.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> [layer.name for layer in select_layers(net)]
    ['0', '2']
    >>> [layer.parameter_names for layer in select_layers(net, params="weight")]
    [('0.weight',), ('2.weight',)]
    """
    keep_param = _param_filter(params)
    modules = dict(model.named_modules())
    chosen = _chosen_modules(modules, layers)
    taken: set[int] = set()
    result = []
    for name in chosen:
        module = modules[name]
        recurse = layers is not None and not any(True for _ in module.parameters(recurse=False))
        named = [
            (f"{name}.{pname}" if name else pname, p)
            for pname, p in module.named_parameters(recurse=recurse)
            if keep_param(pname.rsplit(".", 1)[-1], p) and id(p) not in taken
        ]
        if not named or (layers is None and not any(p.requires_grad for _, p in named)):
            continue
        taken.update(id(p) for _, p in named)
        result.append(
            Layer(
                _unwrapped(name) or type(model).__name__.lower(),
                tuple(p for _, p in named),
                tuple(_unwrapped(n) for n, _ in named),
            )
        )
    if not result:
        raise SonifyError(
            f"no layers with parameters match layers={_describe(layers)}, params={_describe(params)}; "
            f"modules with parameters: {_module_names(modules)}"
        )
    return result


def group_layers(layers: Sequence[Layer], group: GroupSelector = "auto") -> list[Layer]:
    r"""Merge layers into groups that sound as one voice each, in model order.

    Parameters
    ----------
    layers : list of Layer
        From :func:`select_layers`.
    group : int, str, callable or None
        * ``None``: no grouping;
        * an int ``d``: by module prefix of depth ``d`` (``1``: ``layer1``;
          ``3``: ``encoder.layer.3``), ignoring wrapper names such as ``module``;
        * ``"auto"`` (default): no grouping up to :data:`MAX_VOICES` layers;
          beyond, the deepest prefix depth that gives at most that many groups,
          or else runs of consecutive layers;
        * any other str: a regular expression; a layer's group is its first
          match (or the match's first group); layers that do not match stay alone;
        * a callable ``name -> group name``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)), torch.nn.Linear(2, 1))
    >>> [g.name for g in group_layers(select_layers(net), 1)]
    ['0', '1']
    >>> [g.name for g in group_layers(select_layers(net), r"^\d+")]
    ['0', '1']
    """
    if group is None:
        return list(layers)
    if group == "auto":
        return _auto_groups(list(layers))
    if isinstance(group, int) and not isinstance(group, bool):
        if group < 1:
            raise SonifyError(f"group depth {group} is invalid; use 1 or more (1 groups by top-level module)")
        return _merge(layers, lambda name: _prefix(name, group))
    if isinstance(group, str):
        try:
            pattern = re.compile(group)
        except re.error as exc:
            raise SonifyError(f"group pattern {group!r} is not a valid regular expression ({exc})") from None

        def by_pattern(name: str) -> str:
            found = pattern.search(name)
            if found is None:
                return name
            return found.group(1) if pattern.groups and found.group(1) else found.group(0)

        return _merge(layers, by_pattern)
    if callable(group):
        return _merge(layers, lambda name: str(group(name)))
    raise SonifyError(
        f"group={group!r} is not understood; use None, 'auto', a depth, a regular expression or a function"
    )


def _unwrapped(name: str) -> str:
    """A module name without the parts that wrappers insert (``module.`` of DDP, FSDP's, ...).

    So a run under DDP or FSDP has the same layer names as the same model alone.
    """
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def _prefix(name: str, depth: int) -> str:
    parts = [part for part in name.split(".") if part not in _WRAPPER_PARTS]
    return ".".join(parts[:depth]) or name


def _merge(layers: Sequence[Layer], key: Callable[[str], str]) -> list[Layer]:
    groups: dict[str, list[Layer]] = {}
    for layer in layers:
        groups.setdefault(key(layer.name), []).append(layer)
    return [
        Layer(name, sum((m.parameters for m in members), ()), sum((m.parameter_names for m in members), ()))
        for name, members in groups.items()
    ]


def _auto_groups(layers: list[Layer]) -> list[Layer]:
    if len(layers) <= MAX_VOICES:
        return layers
    deepest = max(len(layer.name.split(".")) for layer in layers)
    for depth in range(deepest, 0, -1):
        grouped = _merge(layers, lambda name, depth=depth: _prefix(name, depth))
        if len(grouped) <= MAX_VOICES:
            return grouped
    # Even the top-level modules are too many (a long Sequential): runs of consecutive layers.
    size = -(-len(layers) // MAX_VOICES)
    runs = [layers[i : i + size] for i in range(0, len(layers), size)]
    return [
        Layer(
            run[0].name if len(run) == 1 else f"{run[0].name}..{run[-1].name}",
            sum((m.parameters for m in run), ()),
            sum((m.parameter_names for m in run), ()),
        )
        for run in runs
    ]


def _param_filter(params: ParamSelector) -> Callable[[str, torch.nn.Parameter], bool]:
    if callable(params):
        return params
    if params == "all":
        return lambda name, p: True
    if params == "weight":
        return lambda name, p: name == "weight"
    raise SonifyError(f"params={params!r} is not understood; use 'all', 'weight' or a function (name, param) -> bool")


def _chosen_modules(modules: dict, layers: LayerSelector) -> list[str]:
    import torch

    if layers is None:
        return [name for name, m in modules.items() if any(True for _ in m.parameters(recurse=False))]
    if isinstance(layers, type) or (isinstance(layers, tuple) and all(isinstance(t, type) for t in layers)):
        return [name for name, m in modules.items() if isinstance(m, layers)]
    if callable(layers) and not isinstance(layers, torch.nn.Module):
        return [name for name, m in modules.items() if layers(name, m)]
    if isinstance(layers, str):
        layers = [layers]
    chosen: list[str] = []
    for pattern in layers:
        matches = [name for name in modules if name and fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise SonifyError(
                f"no module named {pattern!r} in the model; modules with parameters: {_module_names(modules)}"
            )
        chosen.extend(name for name in matches if name not in chosen)
    return chosen


def _module_names(modules: dict, limit: int = 12) -> str:
    names = [name for name, m in modules.items() if name and any(True for _ in m.parameters(recurse=False))]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


def _describe(selector: object) -> str:
    return getattr(selector, "__name__", None) or repr(selector)


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

    Notes
    -----
    :meth:`submit` starts the computation for a step; :meth:`ready` returns
    the steps whose norms have reached the host (on the CPU at once; on a GPU
    once the copy's event has completed, typically a step later);
    :meth:`drain` waits for all of them.
    """

    def __init__(self, layers: Sequence[Layer], sharded: bool = False) -> None:
        self.layers = list(layers)
        self.sharded = sharded or any(_is_dtensor(p) for layer in self.layers for p in layer.parameters)
        # Flat views of the selection, so the per-step loop is one pass over parameters.
        self._parameters = [p for layer in self.layers for p in layer.parameters]
        self._owners = tuple(index for index, layer in enumerate(self.layers) for _ in layer.parameters)
        self._segments: dict[tuple, tuple[torch.Tensor | None, bool]] = {}
        self._all_present = np.zeros(len(self.layers), dtype=bool)
        self._all_present.flags.writeable = False  # shared by every complete step
        self._in_flight: deque = deque()

    def submit(self, step: int) -> None:
        """Start reading the current gradients as the norms of ``step``."""
        import torch

        grads = [p.grad for p in self._parameters]
        if self.sharded:
            self._submit_sharded(step, grads)
            return
        if any(g is None or g.is_sparse for g in grads):
            grads, owners, missing = self._present(grads)
        else:
            owners, missing = self._owners, self._all_present
        if not grads:
            self._in_flight.append((step, np.zeros(len(self.layers), np.float32), missing, None))
            return
        device = grads[0].device
        segment, mixed_devices = self._segment_index(owners, grads)
        with torch.no_grad():
            param_norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
            if mixed_devices:  # a model split across devices
                param_norms = [n.to(device, non_blocking=True) for n in param_norms]
            stacked = torch.stack(param_norms)
            if segment is None:  # exactly one gradient per layer, in order
                layer_norms = stacked
            else:
                squares = torch.zeros(len(self.layers), dtype=torch.float32, device=device)
                layer_norms = squares.index_add_(0, segment, stacked.square()).sqrt_()
        self._to_host(step, layer_norms, missing)

    def _to_host(self, step: int, values: torch.Tensor, missing: np.ndarray | None) -> None:
        """Queue the step's values for the host: at once on the CPU, asynchronously on a GPU.

        ``missing=None`` means the values carry the presence counts after the norms (sharded).
        """
        import torch

        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(values.device))
            self._in_flight.append((step, host, missing, event))
        else:
            self._in_flight.append((step, values.detach().cpu().numpy(), missing, None))

    def _submit_sharded(self, step: int, grads: list) -> None:
        import torch
        import torch.distributed as dist

        count = len(self.layers)
        local, owners, weights = [], [], []
        for grad, owner in zip(grads, self._owners):
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
        packed = torch.zeros(2 * count, dtype=torch.float32, device=device)
        if local:
            with torch.no_grad():
                squares = torch.stack(torch._foreach_norm(local, 2, dtype=torch.float32)).square()
                index = torch.tensor(owners, device=device)
                squares *= torch.tensor(weights, device=device)
                packed[:count].index_add_(0, index, squares)
                packed[count:].index_add_(0, index, torch.ones(len(owners), device=device))
        dist.all_reduce(packed)  # the only collective: squared sums and presence counts of every layer
        packed[:count].sqrt_()
        self._to_host(step, packed, None)

    def _present(self, grads: list) -> tuple[list, tuple, np.ndarray]:
        """The gradients that exist (sparse ones as their values), their layers, and the missing mask."""
        present, owners = [], []
        for grad, owner in zip(grads, self._owners):
            if grad is not None:
                present.append(grad.coalesce().values() if grad.is_sparse else grad)
                owners.append(owner)
        missing = np.ones(len(self.layers), dtype=bool)
        missing[owners] = False
        return present, tuple(owners), missing

    def ready(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Steps whose norms are on the host, oldest first, without waiting."""
        done = []
        while self._in_flight and (self._in_flight[0][3] is None or self._in_flight[0][3].query()):
            done.append(self._take())
        return done

    def drain(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """All submitted steps, waiting for the device where needed."""
        done = []
        while self._in_flight:
            event = self._in_flight[0][3]
            if event is not None:
                event.synchronize()
            done.append(self._take())
        return done

    def _take(self) -> tuple[int, np.ndarray, np.ndarray]:
        step, norms, missing, _ = self._in_flight.popleft()
        norms = norms if isinstance(norms, np.ndarray) else norms.numpy()
        if missing is None:  # sharded: norms, then how many ranks held a gradient of each layer
            count = len(self.layers)
            norms, missing = norms[:count], norms[count:] == 0
        return step, norms, missing

    def _segment_index(self, owners: tuple, grads: list) -> tuple[torch.Tensor | None, bool]:
        """Layer index of each gradient on the first gradient's device (None when
        trivial), and whether the gradients span several devices. Cached."""
        device = grads[0].device
        key = (owners, device)
        if key not in self._segments:
            import torch

            trivial = owners == tuple(range(len(self.layers)))
            mixed = any(g.device != device for g in grads)
            self._segments[key] = (None if trivial else torch.tensor(owners, device=device), mixed)
        return self._segments[key]


def _is_dtensor(tensor: object) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(tensor, DTensor)


def _replication(tensor: object) -> int:
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
