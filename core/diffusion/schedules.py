"""Noise schedules and their map to the EDM sigma-form `x = x_0 + sigma * eps`.

A VP schedule `x~ = alpha(t) x_0 + sigma~(t) eps` maps to it by `x = x~ / alpha`, `sigma = sigma~ / alpha`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from gentool.core.errors import choose


@dataclass(frozen=True)
class Schedule:
    """A noise schedule on `t in [t_min, t_max]`: `sigma(t)` (sigma-form), `alpha(t)` (VP scale), inverse."""

    name: str
    t_min: float = 0.0
    t_max: float = 1.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_lo: float = 0.002
    sigma_hi: float = 80.0
    cosine_s: float = 0.008

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """VP: `alpha_bar(t)` (linear: `exp(-(b0 t + (b1 - b0) t^2 / 2))`; cosine: Nichol-Dhariwal)."""
        if self.name == "vp-linear":
            return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))
        s = self.cosine_s
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return f / math.cos(s / (1 + s) * math.pi / 2) ** 2

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Scale `alpha(t)` of the original process (1 for EDM and VE)."""
        if self.name in ("edm", "ve"):
            return torch.ones_like(t)
        return self.alpha_bar(t).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma-form noise level: EDM `t`; VE `s_lo (s_hi/s_lo)^t`; VP `sqrt(1/alpha_bar - 1)`."""
        if self.name == "edm":
            return t
        if self.name == "ve":
            return self.sigma_lo * (self.sigma_hi / self.sigma_lo) ** t
        return torch.sqrt(1.0 / self.alpha_bar(t) - 1.0)

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of `sigma(t)`."""
        if self.name == "edm":
            return sigma
        if self.name == "ve":
            return torch.log(sigma / self.sigma_lo) / math.log(self.sigma_hi / self.sigma_lo)
        log_ab = -torch.log1p(sigma**2)  # log alpha_bar
        if self.name == "vp-linear":
            b0, b1 = self.beta_min, self.beta_max - self.beta_min
            return (-b0 + torch.sqrt(b0**2 - 2 * b1 * log_ab)) / b1
        s = self.cosine_s
        c0 = math.cos(s / (1 + s) * math.pi / 2)
        return torch.acos(torch.exp(0.5 * log_ab) * c0) * 2 / math.pi * (1 + s) - s


SCHEDULES: dict[str, Schedule] = {
    "edm": Schedule("edm", t_min=0.002, t_max=80.0),
    "ve": Schedule("ve", t_min=0.0, t_max=1.0),
    "vp-linear": Schedule("vp-linear", t_min=1e-3, t_max=1.0),
    "vp-cosine": Schedule("vp-cosine", t_min=1e-3, t_max=0.999),
}


def get_schedule(name: str) -> Schedule:
    """The schedule called `name` (one of `SCHEDULES`)."""
    return SCHEDULES[choose("schedule", name, SCHEDULES)]
