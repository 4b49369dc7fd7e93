"""Logistic-regression log density-ratio estimator: real = 1, fake = 0, `BCEWithLogits`.

At the optimum the logit is `d(x) = log p(x)/q(x)`; MonoFlow uses it as the estimate of `log r`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gentool.core.monoflow.h import HFunction
from gentool.core.nn import mlp
from torch import nn


def make_discriminator(dim: int, hidden: int = 256, depth: int = 2, activation: str = "leaky_relu") -> nn.Module:
    """MLP `R^dim -> R` whose output is the logit `d(x)` (no final activation)."""
    return mlp([dim, *([hidden] * depth), 1], activation)


def logit(disc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`d(x)` as a vector of shape `(n,)`."""
    return disc(x).squeeze(-1)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """`BCE(d(real), 1) + BCE(d(fake), 0)` = `E_p[softplus(−d)] + E_q[softplus(d)]`."""
    d_real, d_fake = logit(disc, real), logit(disc, fake)
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def discriminator_step(disc: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor) -> float:
    """One optimiser step on the logistic loss; returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss = discriminator_loss(disc, real, fake.detach())
    loss.backward()
    opt.step()
    return float(loss.detach())


def velocity(disc: nn.Module, h: HFunction, x: torch.Tensor, c: float = 0.0) -> torch.Tensor:
    """Per-particle MonoFlow velocity `∇_x h(d(x))`, h's parameter c (detached; the discriminator's weights get
    no gradient)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(h(logit(disc, x), c).sum(), x)
    return grad.detach()
