"""Registry of monotone functions `h` that define a MonoFlow: particles move with `dx/dt = ∇_x h(d(x))`.

`d(x)` estimates `log r(x) = log p(x)/q(x)`. Each entry is one function `h(d, c)` of d and the entry's one
parameter c (`param` names the setting that holds it: the vanilla shift C, the exp rate a); adding a flow is
adding one entry. f-divergence flows use `h'(ℓ) = r² f''(r)` with `r = e^ℓ`: reverse KL (f = −log r) gives
`h = d` (`logit`), forward KL (f = r log r) `h = e^d`, Pearson χ² (f = (r − 1)²) `h = e^{2d}`, squared
Hellinger (f = (√r − 1)²) `h = e^{d/2}`. The official MonoFlow code uses `ns`, `vanilla` (C = 5 by default),
`logit`, `arcsinh` (train_gan.py) and `exp` with a = 1.5 (its 2-D Gaussian notebooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gentool.core.errors import choose


@dataclass(frozen=True)
class HFunction:
    """A monotone increasing `h(d, c)`, the equation it implements, and the setting holding its parameter c
    (`shift`, `rate`; None when h has none)."""

    name: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]
    equation: str
    param: str | None = None

    def __call__(self, d: torch.Tensor, c: float = 0.0) -> torch.Tensor:
        return self.fn(d, c)


H_FUNCTIONS: dict[str, HFunction] = {h.name: h for h in (
    HFunction("logit", lambda d, c: d, "h = d (KL(q||p) Wasserstein gradient flow)"),
    HFunction("ns", lambda d, c: F.logsigmoid(d), "h = log σ(d) (non-saturating GAN)"),
    HFunction("vanilla", lambda d, c: F.softplus(d + c), "h = softplus(d + C) (minimax GAN, shift C)", "shift"),
    HFunction("arcsinh", lambda d, c: torch.asinh(d), "h = arcsinh(d)"),
    HFunction("forward-kl", lambda d, c: torch.exp(d), "h = e^d (forward KL(p||q) flow)"),
    HFunction("chi2", lambda d, c: torch.exp(2 * d), "h = e^{2d} (Pearson χ² flow)"),
    HFunction("hellinger", lambda d, c: torch.exp(d / 2), "h = e^{d/2} (squared Hellinger flow)"),
    HFunction("exp", lambda d, c: torch.exp(c * d), "h = e^{a d}, a > 0 (official 2-D toy: a = 1.5)", "rate"),
)}


def get_h(name: str) -> HFunction:
    """The registered `h` called `name` (unknown names are bad input)."""
    return H_FUNCTIONS[choose("h", name, H_FUNCTIONS)]


def h_prime(h: HFunction, d: torch.Tensor, c: float = 0.0) -> torch.Tensor:
    """`h'(d)` by autograd (elementwise), parameter c."""
    with torch.enable_grad():
        d = d.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(h(d, c).sum(), d)
    return grad
