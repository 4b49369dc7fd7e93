"""Exact-ratio MonoFlow for analytic targets: `dx/dt = ∇_x h(log p(x) − log q_t(x))`.

`log p` is known in closed form (a Gaussian or `gentool.core.data.Mixture.log_prob`). `log q_t` of the
particle cloud is a **Gaussian fit of the particles** (sample mean and covariance, recomputed at every
field evaluation and held fixed while differentiating in x). For Gaussian p and q₀ the KL flow (h = d) has
a linear field, so q_t stays Gaussian and the fit is exact up to sampling error; the closed form is
`kl_flow_gaussian`. For a mixture target the fit is an approximation of q_t (documented, not exact).
The particle cloud is coupled through the fit, so only fixed-step solver methods are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from gentool.core.data import ring_mixture
from gentool.core.errors import choose, require
from gentool.core.metrics.gaussian import mean_cov
from gentool.core.monoflow.h import HFunction
from gentool.core.solvers import FIXED_METHODS, NonFiniteState, batch_odeint

LogProb = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Gaussian:
    """`N(mean, cov)` with `mean (d,)`, `cov (d, d)`."""

    mean: torch.Tensor
    cov: torch.Tensor

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """`−½ (x−μ)ᵀ Σ⁻¹ (x−μ) − ½ log det(2π Σ)`."""
        mean, cov = self.mean.to(x), self.cov.to(x)
        chol = torch.linalg.cholesky(cov)
        y = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False).T
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (y**2).sum(-1) - 0.5 * (x.shape[1] * math.log(2 * math.pi) + logdet)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return self.mean.double() + z @ torch.linalg.cholesky(self.cov.double()).T


def _gaussian(mean: list[float], cov: list[list[float]]) -> Gaussian:
    return Gaussian(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64))


@dataclass(frozen=True)
class AnalyticTarget:
    """Closed-form `log_prob`, a sampler `sample(n, generator)` and the initial particles `initial`."""

    name: str
    log_prob: LogProb
    sample: Callable[[int, torch.Generator], torch.Tensor]
    initial: Gaussian
    dim: int


def analytic_target(name: str) -> AnalyticTarget:
    """`gaussian-1d` (p = N(0,1), q₀ = N(2, 0.25)), `gaussian-2d` (p = N(0, [[1,.8],[.8,.89]]),
    q₀ = N((1,1), I)), `gmm-ring` (8-Gaussian ring, q₀ = N(0, I))."""
    choose("target", name, TARGETS)
    if name == "gaussian-1d":
        p = _gaussian([0.0], [[1.0]])
        return AnalyticTarget(name, p.log_prob, p.sample, _gaussian([2.0], [[0.25]]), 1)
    if name == "gaussian-2d":
        p = _gaussian([0.0, 0.0], [[1.0, 0.8], [0.8, 0.89]])
        return AnalyticTarget(name, p.log_prob, p.sample, _gaussian([1.0, 1.0], [[1.0, 0.0], [0.0, 1.0]]), 2)
    ring = ring_mixture()
    return AnalyticTarget(name, lambda x: ring.to(x.device, x.dtype).log_prob(x), ring.sample,
                          _gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), 2)


TARGETS: tuple[str, ...] = ("gaussian-1d", "gaussian-2d", "gmm-ring")


def gaussian_fit(x: torch.Tensor) -> Gaussian:
    """Sample mean and unbiased covariance of the particles `x (n, d)` (detached; `mean_cov`, ddof 1)."""
    return Gaussian(*mean_cov(x.detach(), ddof=1))


def exact_velocity(log_p: LogProb, h: HFunction, c: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                 torch.Tensor]:
    """Field `f(t, x) = ∇_x h(log p(x) − log q̂(x))`, `q̂` = Gaussian fit of the current cloud `x`."""

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = gaussian_fit(x)
        if not bool(torch.isfinite(q.cov).all()) or int(torch.linalg.cholesky_ex(q.cov)[1]):
            raise NonFiniteState("the particles' covariance is not positive definite", step=0, time=float(t[0]))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(h(log_p(xg) - q.log_prob(xg), c).sum(), xg)
        return grad.detach()

    return field


def exact_flow(x0: torch.Tensor, log_p: LogProb, h: HFunction, t_end: float, steps: int, *,
               method: str = "rk4", c: float = 0.0) -> torch.Tensor:
    """Integrate the exact-ratio flow from `x0 (n, d)` over `[0, t_end]` with `steps` fixed steps (h's
    parameter c)."""
    choose("method (exact mode needs a fixed-step method)", method, FIXED_METHODS)
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    require(x0.shape[0] >= 2, "exact mode needs at least 2 particles (Gaussian fit)")
    t = torch.linspace(0.0, float(t_end), steps + 1, dtype=x0.dtype, device=x0.device)
    return batch_odeint(exact_velocity(log_p, h, c), x0, t, method=method, graph="off").x


def kl_flow_gaussian(mean0: float, var0: float, t: float, mean: float = 0.0,
                     var: float = 1.0) -> tuple[float, float]:
    """Closed-form 1-D KL flow towards `N(mean, var)`: `μ_t = m + (μ₀ − m)e^{−t/s²}`,
    `σ²_t = s² + (σ₀² − s²)e^{−2t/s²}` (SPEC §3 with m = 0, s² = 1)."""
    return (mean + (mean0 - mean) * math.exp(-t / var), var + (var0 - var) * math.exp(-2 * t / var))
