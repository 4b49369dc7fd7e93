"""Noise schedules and their map to the EDM sigma-form `x = x_0 + sigma * eps`.

A VP schedule `x~ = alpha(t) x_0 + sigma~(t) eps` maps to it by `x = x~ / alpha`, `sigma = sigma~ / alpha`.
Each schedule is a small class giving `sigma(t)`, `alpha(t)` and the inverse `t_of_sigma`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from gentool.core.errors import choose


@dataclass(frozen=True)
class Schedule(ABC):
    """A noise schedule on `t in [t_min, t_max]`: `sigma(t)` (sigma-form), `alpha(t)` (VP scale), inverse."""

    name: str
    t_min: float
    t_max: float

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Scale `alpha(t)` of the original process (1 for EDM and VE)."""
        return torch.ones_like(t)

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma-form noise level at `t`."""

    @abstractmethod
    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of `sigma(t)`."""


@dataclass(frozen=True)
class EDMSchedule(Schedule):
    """EDM: `sigma(t) = t`."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma


@dataclass(frozen=True)
class VESchedule(Schedule):
    """Variance exploding: `sigma(t) = s_lo (s_hi / s_lo)^t`."""

    sigma_lo: float = 0.002
    sigma_hi: float = 80.0

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_lo * (self.sigma_hi / self.sigma_lo) ** t

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.log(sigma / self.sigma_lo) / math.log(self.sigma_hi / self.sigma_lo)


@dataclass(frozen=True)
class VPSchedule(Schedule):
    """Variance preserving: `alpha = sqrt(alpha_bar(t))`, `sigma = sqrt(1/alpha_bar - 1)`; subclasses give
    `alpha_bar` and the inverse of `log alpha_bar`."""

    @abstractmethod
    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Signal fraction `alpha_bar(t)`."""

    @abstractmethod
    def t_of_log_alpha_bar(self, log_ab: torch.Tensor) -> torch.Tensor:
        """Inverse of `log alpha_bar(t)`."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar(t).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 / self.alpha_bar(t) - 1.0)

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.t_of_log_alpha_bar(-torch.log1p(sigma**2))


@dataclass(frozen=True)
class VPLinearSchedule(VPSchedule):
    """Linear beta: `alpha_bar(t) = exp(-(b0 t + (b1 - b0) t^2 / 2))`."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))

    def t_of_log_alpha_bar(self, log_ab: torch.Tensor) -> torch.Tensor:
        b0, b1 = self.beta_min, self.beta_max - self.beta_min
        return (-b0 + torch.sqrt(b0**2 - 2 * b1 * log_ab)) / b1


@dataclass(frozen=True)
class VPCosineSchedule(VPSchedule):
    """Nichol–Dhariwal cosine: `alpha_bar(t) = cos²((t + s)/(1 + s) π/2) / cos²(s/(1 + s) π/2)`."""

    s: float = 0.008

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        return f / math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2

    def t_of_log_alpha_bar(self, log_ab: torch.Tensor) -> torch.Tensor:
        c0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
        return torch.acos(torch.exp(0.5 * log_ab) * c0) * 2 / math.pi * (1 + self.s) - self.s


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    EDMSchedule("edm", t_min=0.002, t_max=80.0),
    VESchedule("ve", t_min=0.0, t_max=1.0),
    VPLinearSchedule("vp-linear", t_min=1e-3, t_max=1.0),
    VPCosineSchedule("vp-cosine", t_min=1e-3, t_max=0.999),
)}


def get_schedule(name: str) -> Schedule:
    """The schedule called `name` (one of `SCHEDULES`)."""
    return SCHEDULES[choose("schedule", name, SCHEDULES)]
