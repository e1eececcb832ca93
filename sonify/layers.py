"""Which layers sound: select a model's layers and their parameters, and group them into voices.

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
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import SonifyError

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_VOICES", "GroupSelector", "Layer", "LayerSelector", "ParamSelector", "group_layers", "select_layers"]

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
    #: Where each parameter lives: (module, attribute name), to follow a parameter that is replaced
    #: (``load_state_dict(..., assign=True)``); empty when unknown.
    sources: tuple[tuple[torch.nn.Module, str], ...] = ()


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
        owners = {f"{name}.{pname}" if name else pname: (m, pname.rsplit(".", 1)[-1]) for pname, m in _owners(module)}
        if not named or (layers is None and not any(p.requires_grad for _, p in named)):
            continue
        taken.update(id(p) for _, p in named)
        result.append(
            Layer(
                _unwrapped(name) or type(model).__name__.lower(),
                tuple(p for _, p in named),
                tuple(_unwrapped(n) for n, _ in named),
                tuple(owners[n] for n, _ in named),
            )
        )
    if not result:
        raise SonifyError(
            f"no layers with parameters match layers={_describe(layers)}, params={_describe(params)}; "
            f"modules with parameters: {_module_names(modules)}"
        )
    return result


def _owners(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Each parameter's qualified name (within ``module``) and the module that holds it."""
    return [
        (f"{prefix}.{pname}" if prefix else pname, sub)
        for prefix, sub in module.named_modules()
        for pname, _ in sub.named_parameters(recurse=False)
    ]


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


def _at_depth(name: str, depth: int) -> str:
    return _prefix(name, depth)


def _prefix(name: str, depth: int) -> str:
    parts = [part for part in name.split(".") if part not in _WRAPPER_PARTS]
    return ".".join(parts[:depth]) or name


def _merge(layers: Sequence[Layer], key: Callable[[str], str]) -> list[Layer]:
    groups: dict[str, list[Layer]] = {}
    for layer in layers:
        groups.setdefault(key(layer.name), []).append(layer)
    return [_joined(name, members) for name, members in groups.items()]


def _joined(name: str, members: Sequence[Layer]) -> Layer:
    return Layer(
        name,
        sum((m.parameters for m in members), ()),
        sum((m.parameter_names for m in members), ()),
        sum((m.sources for m in members), ()),
    )


def _auto_groups(layers: list[Layer]) -> list[Layer]:
    if len(layers) <= MAX_VOICES:
        return layers
    deepest = max(len(layer.name.split(".")) for layer in layers)
    for depth in range(deepest, 0, -1):
        grouped = _merge(layers, functools.partial(_at_depth, depth=depth))
        if len(grouped) <= MAX_VOICES:
            return grouped
    # Even the top-level modules are too many (a long Sequential): runs of consecutive layers.
    size = -(-len(layers) // MAX_VOICES)
    runs = [layers[i : i + size] for i in range(0, len(layers), size)]
    return [_joined(run[0].name if len(run) == 1 else f"{run[0].name}..{run[-1].name}", run) for run in runs]


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
    for pattern in layers:  # type: ignore[union-attr]  # a module is callable: handled above
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
