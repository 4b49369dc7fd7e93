"""Registry of monotone functions `h` that define a MonoFlow: particles move with `dx/dt = ∇_x h(d(x))`.

`d(x)` estimates `log r(x) = log p(x)/q(x)`. Each entry is one function `h(d, shift)`; adding a flow
is adding one entry. f-divergence flows use `h'(ℓ) = r² f''(r)` with `r = e^ℓ`:
reverse KL (f = −log r) gives `h = d` (`logit`), forward KL (f = r log r) `h = e^d`,
Pearson χ² (f = (r − 1)²) `h = e^{2d}`, squared Hellinger (f = (√r − 1)²) `h = e^{d/2}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gentool.core.errors import choose


@dataclass(frozen=True)
class HFunction:
    """A monotone increasing `h(d, shift)` and the equation it implements."""

    name: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]
    equation: str

    def __call__(self, d: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
        return self.fn(d, shift)


H_FUNCTIONS: dict[str, HFunction] = {h.name: h for h in (
    HFunction("logit", lambda d, c: d, "h = d (KL(q||p) Wasserstein gradient flow)"),
    HFunction("ns", lambda d, c: F.logsigmoid(d), "h = log σ(d) (non-saturating GAN)"),
    HFunction("vanilla", lambda d, c: F.softplus(d + c), "h = softplus(d + C) (minimax GAN, shift C)"),
    HFunction("arcsinh", lambda d, c: torch.asinh(d), "h = arcsinh(d)"),
    HFunction("forward-kl", lambda d, c: torch.exp(d), "h = e^d (forward KL(p||q) flow)"),
    HFunction("chi2", lambda d, c: torch.exp(2 * d), "h = e^{2d} (Pearson χ² flow)"),
    HFunction("hellinger", lambda d, c: torch.exp(d / 2), "h = e^{d/2} (squared Hellinger flow)"),
)}


def get_h(name: str) -> HFunction:
    """The registered `h` called `name` (unknown names are bad input)."""
    return H_FUNCTIONS[choose("h", name, H_FUNCTIONS)]


def h_prime(h: HFunction, d: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """`h'(d)` by autograd (elementwise)."""
    with torch.enable_grad():
        d = d.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(h(d, shift).sum(), d)
    return grad
