"""The norm computations of one step: one norm per gradient, in its own precision, stacked on one device."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["exact_overflowed", "parameter_norms", "present", "segment_starts", "stacked"]


def parameter_norms(
    grads: list, index: np.ndarray | None, complex_positions: list[int], half_positions: Collection[int], wide: bool
) -> torch.Tensor:
    """One norm per gradient, stacked on the first gradient's device: one fused call in the common case.

    ``index``: each gradient's parameter position (None: all, in order); complex gradients are read as their
    real and imaginary parts; 16-bit ones are accumulated in float32.
    """
    import torch

    if complex_positions:
        chosen = set(complex_positions) if index is None else set(np.flatnonzero(np.isin(index, complex_positions)))
        grads = [torch.view_as_real(g) if i in chosen else g for i, g in enumerate(grads)]
    # Gradients of a create_graph=True backward carry autograd history: never extend it. (Set directly:
    # a torch.no_grad() object costs more than the rest of this bookkeeping.)
    enabled = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    norms: Any
    try:
        if not half_positions:
            norms = torch._foreach_norm(grads, 2)
        else:
            positions = range(len(grads)) if index is None else index
            half = [i for i, position in enumerate(positions) if position in half_positions]
            norms = list(torch._foreach_norm(grads, 2)) if len(half) < len(grads) else [None] * len(grads)
            for i, norm in zip(half, torch._foreach_norm([grads[i] for i in half], 2, dtype=torch.float32)):
                norms[i] = norm
        return stacked(norms, grads, wide=wide, half=bool(half_positions))
    finally:
        torch._C._set_grad_enabled(enabled)


def stacked(norms: Any, grads: list, *, wide: bool, half: bool) -> torch.Tensor:
    """One tensor of the norms, on the first gradient's device, in a dtype that holds them all."""
    import torch

    if not (wide or half):
        try:
            return torch.stack(norms)
        except RuntimeError:  # gradients on several devices (model parallel): gathered below
            pass
    device = grads[0].device
    dtype = torch.float64 if wide else torch.float32
    return torch.stack([n.to(device=device, dtype=dtype, non_blocking=True) for n in norms])


def present(grads: list) -> tuple[list, np.ndarray]:
    """The gradients that exist (sparse ones as their values) and their parameter indices."""
    found, index = [], []
    for position, grad in enumerate(grads):
        if grad is not None:
            found.append(grad.coalesce().values() if grad.is_sparse else grad)
            index.append(position)
    return found, np.array(index, dtype=np.intp)


def segment_starts(owners: np.ndarray) -> np.ndarray:
    """Where each run of equal owners begins (owners are in layer order)."""
    if len(owners) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])


def exact_overflowed(norms: np.ndarray, grads: list) -> np.ndarray:
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
