"""Norms computed during backward (``early=True``), as each gradient is complete and still in the caches.

A hook per parameter (``register_post_accumulate_grad_hook``) computes the
norm and keeps it with the gradient's identity and version counter; at the
step a norm is used only if its gradient is still that object at that
version, and computed afresh otherwise (accumulated again, unscaled by AMP,
clipped, replaced).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

__all__ = ["EarlyNorms"]


class EarlyNorms:
    """The hooks, and the norm each computed for its parameter's gradient."""

    def __init__(self) -> None:
        self._hooks: list = []
        self._entries: list = []

    def attach(self, parameters: list) -> None:
        """Hook every parameter (detaching from any earlier ones first)."""
        self.remove()
        self._entries = [None] * len(parameters)
        self._hooks = [
            p.register_post_accumulate_grad_hook(functools.partial(self._on_gradient, position))
            for position, p in enumerate(parameters)
        ]

    def remove(self) -> None:
        """Detach from the parameters; safe to call more than once."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def current(self, grads: list) -> tuple[list, list[int]]:
        """The norms computed in backward that still hold for ``grads`` (None elsewhere), and the stale positions."""
        entries = self._entries
        norms: list = []
        stale: list[int] = []
        for position, grad in enumerate(grads):
            entry = entries[position]
            if entry is not None and grad is not None and entry[0]() is grad and grad._version == entry[1]:
                norms.append(entry[2])
            else:
                norms.append(None)
                stale.append(position)
        return norms, stale

    def _on_gradient(self, position: int, parameter: Any) -> None:
        """Inside backward, as a gradient is complete: its norm, while the gradient is hot in the caches.

        Never raises into backward; a norm that cannot be had here is computed at the step instead.
        """
        import torch

        grad = parameter.grad
        try:
            if grad is None or grad.is_sparse:
                self._entries[position] = None
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
            self._entries[position] = (weakref.ref(grad), grad._version, norm)
        except Exception:
            self._entries[position] = None
