"""Sharded gradients (FSDP1, FSDP2 / DTensor): every layer's norm from one all-reduce per step.

Each rank sums the squares of its local pieces per layer; one all-reduce of
squared sums and presence counts adds them up across ranks, so every rank
gets the global norms without gathering any gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import SonifyError

if TYPE_CHECKING:
    import torch

__all__ = ["collective_device", "is_dtensor", "sharded_layer_norms"]


def sharded_layer_norms(grads: list, owners: list[int], count: int, wide: bool) -> torch.Tensor:
    """``count`` layer norms followed by ``count`` presence counts (ranks holding a gradient), on every rank.

    ``owners``: the layer of each gradient. The only collective of a step: every rank must call this.
    """
    import torch
    import torch.distributed as dist

    local, layer_of, weights = [], [], []
    for grad, owner in zip(grads, owners):
        if grad is None:
            continue
        if is_dtensor(grad):
            local.append(grad.to_local())
            weights.append(1.0 / _replication(grad))
        else:
            local.append(grad)
            weights.append(1.0)
        layer_of.append(owner)
    device = local[0].device if local else collective_device()
    # float64: squares of float32 norms up to 3e38 still fit, so nothing overflows on the way.
    packed = torch.zeros(2 * count, dtype=torch.float64, device=device)
    if local:
        local = [torch.view_as_real(g) if g.is_complex() else g for g in local]
        with torch.no_grad():
            norms: Any = torch._foreach_norm(local, 2, dtype=torch.float32) if not wide else None
            if norms is None:
                norms = [n.double() for n in torch._foreach_norm(local, 2)]
            squares = torch.stack([n.to(torch.float64) for n in norms]).square()
            index = torch.tensor(layer_of, device=device)
            squares *= torch.tensor(weights, device=device, dtype=torch.float64)
            packed[:count].index_add_(0, index, squares)
            packed[count:].index_add_(0, index, torch.ones(len(layer_of), device=device, dtype=torch.float64))
    dist.all_reduce(packed)  # the only collective: squared sums and presence counts of every layer
    packed[:count].sqrt_()
    return packed


def is_dtensor(tensor: object) -> bool:
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


def collective_device() -> torch.device:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
