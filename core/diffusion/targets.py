"""Analytic targets with exact denoisers (no training): Gaussian, Gaussian mixtures, point mass."""

from __future__ import annotations

import torch
from gentool.core.data import Mixture, random_mixture, ring_mixture
from gentool.core.data import grid_mixture as _grid_mixture
from gentool.core.diffusion.denoisers import expand_sigma
from gentool.core.errors import choose, require

TARGETS: tuple[str, ...] = ("gaussian", "gmm-ring", "gmm-grid", "gmm-random", "point")


class MixtureTarget:
    """`p = sum_k w_k N(mu_k, s_k^2 I)`; `p_sigma` has variances `s_k^2 + sigma^2`.

    `D(x, sigma) = sum_k r_k(x) (mu_k + s_k^2/(s_k^2 + sigma^2) (x - mu_k))`, with responsibilities
    `r_k ∝ w_k N(x; mu_k, (s_k^2 + sigma^2) I)` (log-sum-exp). A single component is a Gaussian,
    `s_k = 0` a point mass.
    """

    def __init__(self, mixture: Mixture, name: str = "mixture"):
        self.mixture, self.name = mixture, name
        self._placed: dict[tuple[torch.device, torch.dtype], Mixture] = {}

    def on(self, x: torch.Tensor) -> Mixture:
        """The mixture on x's device and dtype, converted once (no host-to-device copy per call, so the
        denoiser can be captured in a CUDA graph)."""
        key = (x.device, x.dtype)
        if key not in self._placed:
            self._placed[key] = self.mixture.to(device=x.device, dtype=x.dtype)
        return self._placed[key]

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def _parts(self, x: torch.Tensor, sigma: torch.Tensor | float):
        """Responsibilities `r (B, K)`, `var = s_k^2 + sigma^2 (B, K)` and the mixture on x's device/dtype."""
        m = self.on(x)
        var = m.stds[None] ** 2 + expand_sigma(sigma, x) ** 2
        sq = ((x[:, None, :] - m.means[None]) ** 2).sum(-1)
        logits = torch.log(m.weights)[None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(var)
        return torch.softmax(logits, dim=1), var, m

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        resp, var, m = self._parts(x, sigma)
        shrink = (m.stds[None] ** 2 / var)[..., None]  # (B, K, 1)
        post = m.means[None] + shrink * (x[:, None, :] - m.means[None])
        return (resp[..., None] * post).sum(1)

    def direction(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """PF-ODE direction `(x - D)/sigma = sigma sum_k r_k (x - mu_k)/(s_k^2 + sigma^2)` (finite at 0)."""
        resp, var, m = self._parts(x, sigma)
        diff = x[:, None, :] - m.means[None]
        return expand_sigma(sigma, x) * ((resp / var)[..., None] * diff).sum(1)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Exact samples of the target."""
        return self.mixture.to(dtype=dtype).sample(n, generator)

    def exact_flow(self, x: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor | None:
        """Exact PF-ODE map `sigma0 -> sigma1` (one component): `m + (x - m) sqrt((s^2+s1^2)/(s^2+s0^2))`."""
        if self.mixture.means.shape[0] != 1:
            return None
        m = self.on(x)
        s2 = m.stds[0] ** 2
        return m.means[0] + (x - m.means[0]) * torch.sqrt((s2 + sigma1**2) / (s2 + sigma0**2))


def gaussian_target(mean: torch.Tensor, std: float) -> MixtureTarget:
    """`N(mean, std^2 I)`: `D = m + s^2 (x - m)/(s^2 + sigma^2)`."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
    one = torch.ones(1, dtype=torch.float64)
    return MixtureTarget(Mixture(mean, one * std, one), "gaussian")


def point_target(point: torch.Tensor) -> MixtureTarget:
    """A point mass at `point`: `D = point` (Euler is exact for any grid)."""
    point = torch.as_tensor(point, dtype=torch.float64).reshape(1, -1)
    return MixtureTarget(
        Mixture(point, torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)), "point"
    )


def make_target(name: str, dim: int = 2) -> MixtureTarget:
    """Target `name`: gaussian (N(0, I) in `dim`), gmm-ring, gmm-grid (2-D), gmm-random (`dim`), point (0)."""
    choose("target", name, TARGETS)
    require(dim >= 1, f"dim must be >= 1, got {dim}")
    if name == "gaussian":
        return gaussian_target(torch.zeros(dim), 1.0)
    if name == "point":
        return point_target(torch.zeros(dim))
    if name == "gmm-random":
        return MixtureTarget(random_mixture(dim), name)
    return MixtureTarget(ring_mixture() if name == "gmm-ring" else _grid_mixture(), name)


def reference_flow(
    target: MixtureTarget,
    x: torch.Tensor,
    sigma0: float,
    sigma1: float = 0.0,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> torch.Tensor:
    """High-accuracy float64 PF-ODE solution `x(sigma1)` from `x(sigma0) = x`: the exact flow for a single
    component, else scipy DOP853 on `dx/dsigma = direction(x, sigma)` (all samples as one system).
    """
    from scipy.integrate import solve_ivp

    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    exact = target.exact_flow(x64, sigma0, sigma1)
    if exact is not None:
        return exact.to(x.device)
    shape = x64.shape

    def rhs(sigma: float, y):
        xs = torch.from_numpy(y).reshape(shape)
        return target.direction(xs, torch.tensor(sigma, dtype=torch.float64)).reshape(-1).numpy()

    sol = solve_ivp(rhs, (sigma0, sigma1), x64.reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=atol)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(x.device)
