"""Held-out negative log-likelihood for models with a density."""

from __future__ import annotations

from collections.abc import Callable

import torch
from gentool.core.errors import require
from gentool.core.metrics._checks import as_samples

NLL_CHUNK = 65536


def heldout_nll(log_prob_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Mean negative log-likelihood `-(1/n) sum_i log p(x_i)` of held-out `x (n, d)`, evaluated in chunks."""
    x = as_samples(x)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], NLL_CHUNK):
        lp = torch.as_tensor(log_prob_fn(x[start:start + NLL_CHUNK]))
        require(bool(torch.isfinite(lp).all()), f"log_prob is not finite on held-out data {tuple(x.shape)}")
        total += lp.double().sum().to(x.device)
    return float(-total / x.shape[0])
