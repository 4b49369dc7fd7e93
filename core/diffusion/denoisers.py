"""The denoiser interface `D(x, sigma)` (sigma-form), adapters from eps/v nets, EDM preconditioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from gentool.core.diffusion.schedules import Schedule
from gentool.core.solvers.term import broadcast_to_state
from torch import nn


class Denoiser(Protocol):
    """`D(x, sigma) ~ E[x_0 | x_0 + sigma eps = x]`; `x (B, ...)`, `sigma` a scalar or `(B,)` tensor."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


def expand_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast `sigma` (scalar or `(B,)`, any number type) to shape `(B, 1, ..., 1)` matching `x`: the solver
    core's `broadcast_to_state` after converting it to x's dtype and device."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return broadcast_to_state(s.expand(x.shape[0]) if s.ndim == 0 else s, x)


def _vp_inputs(schedule: Schedule, x: torch.Tensor, sigma: torch.Tensor):
    s = expand_sigma(sigma, x)
    t = schedule.t_of_sigma(s)
    alpha = schedule.alpha(t)
    return s, t.reshape(-1), alpha, alpha * s


class EpsDenoiser:
    """From an eps-prediction net `eps(x~, t)`: `D(x, sigma) = x - sigma eps(alpha(t) x, t)`."""

    def __init__(self, eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: Schedule):
        self.eps_model, self.schedule = eps_model, schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s, t, alpha, _ = _vp_inputs(self.schedule, x, sigma)
        return x - s * self.eps_model(alpha * x, t)


class VDenoiser:
    """From a v-prediction net (`v = alpha eps - sigma~ x_0`, `x~ = alpha x_0 + sigma~ eps`):

    `D = (alpha x~ - sigma~ v) / (alpha^2 + sigma~^2)` with `x~ = alpha x`, `sigma~ = alpha sigma`.
    """

    def __init__(self, v_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: Schedule):
        self.v_model, self.schedule = v_model, schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        _, t, alpha, sig_t = _vp_inputs(self.schedule, x, sigma)
        xt = alpha * x
        return (alpha * xt - sig_t * self.v_model(xt, t)) / (alpha**2 + sig_t**2)


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """EDM: `c_skip = sd^2/(s^2+sd^2)`, `c_out = s sd/sqrt(s^2+sd^2)`, `c_in = 1/sqrt(s^2+sd^2)`,
    `c_noise = log(s)/4`."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


class EDMPrecond(nn.Module):
    """`D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)` around a raw net `F(x, c_noise)`."""

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)

    @property
    def dim(self) -> int:
        return int(self.net.dim)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = expand_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1))
