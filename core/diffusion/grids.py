"""Time grids: decreasing noise levels `sigma_0 > ... > sigma_{N-1}`, followed by `sigma_N = 0`."""

from __future__ import annotations

import torch
from gentool.core.diffusion.schedules import get_schedule
from gentool.core.errors import choose, require

GRIDS: tuple[str, ...] = ("edm", "uniform-t", "log-sigma")


SIGMA_LIMIT = 1e10  # largest noise level a run takes (σ² and the EDM grid stay finite in float64)


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def edm_grid(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """EDM rho-grid `sigma_i = (s_max^{1/rho} + i/(N-1) (s_min^{1/rho} - s_max^{1/rho}))^rho`, then 0."""
    i = torch.arange(n, dtype=torch.float64)
    frac = i / max(n - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((hi + frac * (lo - hi)) ** rho).to(dtype)


def log_sigma_grid(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Uniform in `log sigma` from `sigma_max` to `sigma_min`, then 0."""
    u = torch.linspace(
        torch.tensor(sigma_max).log().item(), torch.tensor(sigma_min).log().item(), n, dtype=torch.float64
    )
    return _with_zero(u.exp()).to(dtype)


def uniform_t_grid(
    n: int,
    schedule: str = "vp-linear",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uniform in the schedule's `t` between `t(sigma_max)` and `t(sigma_min)`, mapped to sigma, then 0."""
    sch = get_schedule(schedule)
    ends = sch.t_of_sigma(torch.tensor([sigma_max, sigma_min], dtype=torch.float64))
    t = torch.linspace(ends[0].item(), ends[1].item(), n, dtype=torch.float64)
    return _with_zero(sch.sigma(t)).to(dtype)


def make_grid(
    name: str,
    steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    schedule: str = "vp-linear",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Grid `name` with `steps` steps (`steps + 1` entries, the last 0)."""
    choose("grid", name, GRIDS)
    require(int(steps) == steps and steps >= 1, f"steps must be an integer >= 1, got {steps}")
    require(0 < sigma_min < sigma_max, f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if name == "edm":
        return edm_grid(steps, sigma_min, sigma_max, rho, dtype)
    if name == "log-sigma":
        return log_sigma_grid(steps, sigma_min, sigma_max, dtype)
    return uniform_t_grid(steps, schedule, sigma_min, sigma_max, dtype)
