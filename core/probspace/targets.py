"""Target densities π for particle flows: Gaussians (any mean, covariance, dimension), Gaussian mixtures,
banana, double well, and the user's own `module:function` (which may receive a data file).

Each target gives `log_prob(x)` (unnormalised allowed), `score(x) = ∇log π(x)` and, where exact
sampling is possible, `sample(n, generator)` (used for MMD flows and for evaluation); Gaussian targets also
carry their exact `moments` (mean, covariance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from gentool.core.data import Mixture, grid_mixture, ring_mixture
from gentool.core.errors import BadInput, choose, require
from gentool.core.probspace.objectives import Data, checking_user_code, user_caller


def autograd_score(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`∇_x log π(x)` for a batch `x (n, d)` by autograd (rows are independent)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_prob(xg).sum(), xg)
    return g


@dataclass(frozen=True)
class Target:
    """A named density on ℝᵈ: `log_prob (n, d) -> (n,)`, optional exact sampler `sample(n, generator)` and,
    for a Gaussian, its exact `moments` (mean (d,), covariance (d, d))."""

    name: str
    dim: int
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sampler: Callable[[int, torch.Generator | None], torch.Tensor] | None = None
    moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """`∇log π(x)`."""
        return autograd_score(self.log_prob, x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples (float64); raises for targets without a sampler."""
        if self.sampler is None:
            raise ValueError(f"target {self.name!r} has no exact sampler")
        return self.sampler(n, generator)


def gaussian_target(mean: torch.Tensor, cov: torch.Tensor, name: str = "gaussian") -> Target:
    """`N(m, C)` in any dimension: `log π = −½(x − m)ᵀC⁻¹(x − m) − ½ log det(2πC)`; C must be symmetric
    positive definite."""
    mean, cov = torch.as_tensor(mean, dtype=torch.float64).reshape(-1), torch.as_tensor(cov, dtype=torch.float64)
    d = mean.numel()
    require(cov.shape == (d, d), f"target covariance must be {d} x {d} to match the mean, got {tuple(cov.shape)}")
    require(bool(torch.isfinite(mean).all() and torch.isfinite(cov).all()), "target mean and covariance must be "
            "finite")
    require(bool(torch.allclose(cov, cov.T, rtol=1e-10, atol=1e-12)), "target covariance must be symmetric")
    chol, info = torch.linalg.cholesky_ex(cov)
    require(int(info) == 0, "target covariance must be positive definite")
    prec = torch.cholesky_inverse(chol)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        z = x - mean.to(x)
        return -0.5 * ((z @ prec.to(x)) * z).sum(-1) - torch.log(torch.diagonal(chol)).sum().to(x) \
            - 0.5 * mean.numel() * math.log(2 * math.pi)

    def sampler(n: int, g: torch.Generator | None) -> torch.Tensor:
        return mean + torch.randn(n, mean.numel(), generator=g, dtype=torch.float64) @ chol.T

    return Target(name, d, log_prob, sampler, (mean, cov))


def mixture_target(mix: Mixture, name: str) -> Target:
    """Gaussian mixture target from `gentool.core.data.Mixture`."""
    mix = mix.to(dtype=torch.float64)
    return Target(name, mix.dim, lambda x: mix.to(x.device, x.dtype).log_prob(x), mix.sample)


def banana_target(b: float = 0.5, s: float = 2.0) -> Target:
    """Banana (twisted Gaussian): `x₁ ~ N(0, s²)`, `x₂ | x₁ ~ N(b(x₁² − s²), 1)`."""

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x[:, 0] / s) ** 2 - 0.5 * (x[:, 1] - b * (x[:, 0] ** 2 - s**2)) ** 2

    def sampler(n: int, g: torch.Generator | None) -> torch.Tensor:
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        x1 = s * z[:, 0]
        return torch.stack([x1, z[:, 1] + b * (x1**2 - s**2)], dim=1)

    return Target("banana", 2, log_prob, sampler)


def double_well_target(depth: float = 4.0) -> Target:
    """Double well `π ∝ exp(−V)`, `V(x) = depth (x₁² − 1)² + ½ x₂²` (modes at x₁ = ±1); no exact sampler."""
    return Target("double-well", 2, lambda x: -depth * (x[:, 0] ** 2 - 1) ** 2 - 0.5 * x[:, 1] ** 2)


TARGETS: dict[str, Callable[[], Target]] = {
    "gaussian": lambda: gaussian_target(torch.zeros(2), torch.eye(2)),
    "gaussian-corr": lambda: gaussian_target(torch.tensor([1.0, -1.0]),
                                             torch.tensor([[1.0, 0.8], [0.8, 1.0]]), "gaussian-corr"),
    "gmm-ring": lambda: mixture_target(ring_mixture(8, 2.0, 0.2), "gmm-ring"),
    "gmm-grid": lambda: mixture_target(grid_mixture(3, 2.0, 0.2), "gmm-grid"),
    "banana": banana_target,
    "double-well": double_well_target,
}


def custom_target(spec: str, dim: int, data: Data = None) -> Target:
    """The user's `module:function`: `function(x)` (or `function(x, data)` when data is given) returns
    `log π(x)` up to a constant, shape (n,), for particles `x (n, d)` (a float64 tensor; differentiable in x:
    the score is taken by autograd); no exact sampler. `check_target` tests it on points."""
    call = user_caller(spec, data, kind="target", arg="x")

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        out = call(x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            raise BadInput(f"target {spec!r} must return a tensor of shape (n,) = ({x.shape[0]},) for x of shape "
                           f"{tuple(x.shape)}; got {getattr(out, 'shape', type(out).__name__)}")
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            raise BadInput(f"target {spec!r} returns log π(x) without a gradient in x (the score is taken by "
                           "autograd): compute it from x with torch operations, not detached or through numpy")
        return out

    return Target(spec, dim, log_prob)


def check_target(target: Target, x: torch.Tensor) -> None:
    """Bad input unless `log π` and its score are finite at the points `x (n, d)` (e.g. initial particles); the
    user's code failing here is bad input too."""
    with checking_user_code():
        require(bool(torch.isfinite(target.log_prob(x)).all()), f"target {target.name!r} is not finite at the "
                "initial particles")
        require(bool(torch.isfinite(target.score(x)).all()), f"target {target.name!r} has a non-finite gradient "
                "at the initial particles")


def make_target(name: str) -> Target:
    """A built-in target by name (see `TARGETS`)."""
    return TARGETS[choose("target", name, TARGETS)]()
