"""DeepSpeed ZeRO (stages 1, 2 and 3): every layer's exact norm with one all-reduce per step, no gradient gathered.

Under ZeRO ``param.grad`` is None: each rank holds a piece of every reduced
gradient. At the ZeRO optimizer's step (before DeepSpeed clips), each rank
sums the squares of its pieces per layer (ZeRO-3: the local partition,
``safe_get_local_grad``; ZeRO-1/2: the fragment behind ``param._hp_mapping``,
which ``safe_get_full_grad`` itself reads), and one all-reduce adds them up.
Under fp16 the gradients are still scaled: the norms are divided by the loss
scale. DeepSpeed is imported only here, and only when an engine is seen.

A rank that cannot read its pieces (another DeepSpeed version, a private
attribute gone) still takes part in the all-reduce, with a flag: every rank
then learns of it from the same numbers, and all stop together, so none is
left waiting in a collective that another skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import one_line
from ._sharded import collective_device

if TYPE_CHECKING:
    import torch

__all__ = ["failure_message", "find_zero_optimizer", "is_deepspeed_engine", "zero_layer_norms"]


def is_deepspeed_engine(obj: object) -> bool:
    """A ``deepspeed.DeepSpeedEngine`` (found by its module: DeepSpeed is not imported for this)."""
    return any(cls.__module__.startswith("deepspeed.runtime.engine") for cls in type(obj).__mro__)


def _is_zero_optimizer(obj: object) -> bool:
    return type(obj).__module__.startswith("deepspeed.runtime.") and callable(getattr(obj, "step", None))


def find_zero_optimizer(model: object, optimizer: object) -> Any | None:
    """The DeepSpeed optimizer that really steps, from an engine or any wrapper of it; None without DeepSpeed.

    Looks at the engine (``Sonifier(engine)``), then through ``.optimizer`` /
    ``._optimizer`` wrappers (Accelerate's, Lightning's) for a DeepSpeed
    ZeRO optimizer, which is not a torch optimizer and has no step hooks.
    """
    candidates = [optimizer]
    if is_deepspeed_engine(model):
        candidates.insert(0, getattr(model, "optimizer", None))
    for current in candidates:
        seen: set[int] = set()
        while current is not None and id(current) not in seen:
            if _is_zero_optimizer(current) and not is_deepspeed_engine(current):
                inner = getattr(current, "optimizer", None)
                # ZeRO keeps the torch optimizer in .optimizer: the DeepSpeed one is the step we want.
                if inner is not None and not _is_zero_optimizer(inner):
                    return current
            seen.add(id(current))
            current = getattr(current, "optimizer", None) or getattr(current, "_optimizer", None)
    return None


def zero_layer_norms(parameters: list, owners: list[int], count: int, zero_optimizer: Any) -> tuple[torch.Tensor, str]:
    """``count`` layer norms, ``count`` presence counts and a failure count, the same on every rank.

    One all-reduce, and nothing waits for the device: the values go to the
    host queue like any step's. Also returns why this rank could not read its
    pieces ("" when it could); it still took part in the all-reduce.
    """
    import torch
    import torch.distributed as dist

    pieces, shares, layers, reason = [], [], [], ""
    try:
        for parameter, owner in zip(parameters, owners):
            piece, share = _local_piece(parameter)
            if piece is not None and piece.numel():
                pieces.append(piece.detach())
                shares.append(share)
                layers.append(owner)
    except Exception as exc:  # this rank cannot read its pieces: say so through the collective, never skip it
        pieces, shares, layers, reason = [], [], [], one_line(exc)
    squares = _squared_norms(pieces, shares)
    device = squares.device if squares is not None else collective_device()
    packed = torch.zeros(2 * count + 1, dtype=torch.float64, device=device)
    if squares is not None:
        index = torch.tensor(layers, device=device)
        packed[:count].index_add_(0, index, squares)
        packed[count : 2 * count].index_add_(0, index, torch.tensor(shares, dtype=torch.float64, device=device))
    if reason:
        packed[-1] = 1.0
    dist.all_reduce(packed)  # the only collective: squared sums, presence counts and failures of every rank
    packed[:count].sqrt_()
    scale = float(getattr(zero_optimizer, "loss_scale", 1.0) or 1.0)  # fp16: the gradients are still scaled
    if scale != 1.0:
        packed[:count] /= scale
    return packed, reason


def _squared_norms(pieces: list, shares: list[float]) -> torch.Tensor | None:
    """Each piece's squared norm times its share, in float64: one fused call for all pieces."""
    import torch

    if not pieces:
        return None
    # Norms in float32 at least (16-bit pieces are accumulated in float32), float64 pieces in their own precision.
    wide = any(piece.dtype == torch.float64 for piece in pieces)
    norms = torch._foreach_norm(pieces, 2) if wide else torch._foreach_norm(pieces, 2, dtype=torch.float32)
    squares = torch.stack([norm.to(torch.float64) for norm in norms]).square()
    if any(share != 1.0 for share in shares):
        squares *= torch.tensor(shares, dtype=torch.float64, device=squares.device)
    return squares


def failure_message(reason: str) -> str:
    """What to say when some rank could not read DeepSpeed's gradient pieces."""
    where = f"this rank: {reason}" if reason else "another rank"
    return (
        f"DeepSpeed's gradients could not be read ({where}; deepspeed {_version()}); sonify knows how ZeRO stages 1-3 "
        "keep them as of DeepSpeed 0.19.8: record with that version, or report this one"
    )


def _local_piece(parameter: Any) -> tuple[torch.Tensor | None, float]:
    """This rank's piece of a parameter's reduced gradient (None where it holds none), and its share of the sum.

    ZeRO pieces are disjoint (share 1). Without ZeRO (stage 0) every rank
    holds the whole reduced gradient: each counts for 1 / world size.
    """
    if hasattr(parameter, "ds_id"):  # ZeRO-3: the local partition of the fp32 gradient
        from deepspeed.utils import safe_get_local_grad

        return safe_get_local_grad(parameter), 1.0
    if hasattr(parameter, "_hp_mapping"):  # ZeRO-1/2: the fragment of the flat gradient this rank owns
        mapping = parameter._hp_mapping
        if mapping is None:
            return None, 1.0  # another rank's partition holds this parameter
        fragment = mapping.get_lp_grad_fragment(parameter._index_in_param_group).flatten()
        address = mapping.lp_fragment_address
        if fragment.numel() == parameter.numel():  # bf16 keeps a full buffer on each rank: the owned part counts
            fragment = fragment.narrow(0, address.start, address.numel)
        return fragment, 1.0
    import torch.distributed as dist

    return parameter.grad, 1.0 / dist.get_world_size()  # not partitioned (stage 0): the reduced gradient itself


def _version() -> str:
    try:
        import deepspeed

        return str(deepspeed.__version__)
    except Exception:
        return "unknown"
