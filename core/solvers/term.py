"""The vector field term: `f(t, x)` with `t` a per-sample time tensor of shape (B,)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def broadcast_to_state(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (B,) to (B, 1, ..., 1) so it broadcasts against `x` (B, ...)."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))
