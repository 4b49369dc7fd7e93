"""The discrete VP noise table of DDPM-family models, in sigma-form.

A model trained on `T` discrete steps with betas `b_0..b_{T-1}` sees `x~_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`,
`abar_t = prod_{s<=t} (1 - b_s)`; dividing by `alpha_t = sqrt(abar_t)` gives the sigma-form `x = x_0 + sigma_t eps`
with `sigma_t = sqrt((1 - abar_t) / abar_t)`, increasing in `t`. A continuous sigma maps to the model's
(fractional) timestep by linear interpolation of `log sigma` between neighbouring table entries (as k-diffusion's
`DiscreteSchedule` does), clamped to `[0, T-1]`.

The beta schedules follow diffusers' scheduler configs (`num_train_timesteps`, `beta_start`, `beta_end`,
`beta_schedule`, `trained_betas`) and are computed in float32 as diffusers does, so the table is the one the model
was trained on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from gentool.core.errors import BadInput, choose, require


class Spacing(StrEnum):
    """`timestep_spacing` of a diffusers scheduler: how `N` inference timesteps are placed in `[0, T-1]`."""

    LINSPACE = "linspace"
    LEADING = "leading"
    TRAILING = "trailing"


class TimestepRule(StrEnum):
    """Whose `set_timesteps` places the inference timesteps (the three differ for linspace and leading):
    `euler` (EulerDiscrete, Heun, the Euler/LMS family), `ddim` (DDIM, PNDM, DDPM), `dpm-solver`
    (DPMSolverMultistep, UniPC: N + 1 points, the last dropped)."""

    EULER = "euler"
    DDIM = "ddim"
    DPM = "dpm-solver"

    @classmethod
    def of_scheduler(cls, name: str | None) -> TimestepRule:
        """The rule of the diffusers scheduler class `name` (unknown classes: euler)."""
        name = str(name or "")
        if name.startswith(("DPMSolverMultistep", "DPMSolverSinglestep", "UniPC", "DEIS")):
            return cls.DPM
        return cls.DDIM if name.startswith(("DDIM", "DDPM", "PNDM")) else cls.EULER


def _linear(n: int, start: float, end: float) -> torch.Tensor:
    """`b_i = start + i (end - start) / (T - 1)` (float32)."""
    return torch.linspace(start, end, n, dtype=torch.float32)


def _scaled_linear(n: int, start: float, end: float) -> torch.Tensor:
    """`b_i = (sqrt(start) + i (sqrt(end) - sqrt(start)) / (T - 1))^2` (latent diffusion)."""
    return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2


def _cosine(n: int, start: float, end: float, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal: `b_i = min(1 - abar(t_{i+1}) / abar(t_i), 0.999)`, `abar(t) = cos^2((t + 0.008) / 1.008
    pi / 2)`, `t_i = i / T` (start and end are unused)."""
    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float32)


def _sigmoid(n: int, start: float, end: float) -> torch.Tensor:
    """`b_i = start + (end - start) sigmoid(-6 + 12 i / (T - 1))` (GeoDiff)."""
    return torch.sigmoid(torch.linspace(-6, 6, n)) * (end - start) + start


BETA_SCHEDULES = {"linear": _linear, "scaled_linear": _scaled_linear, "squaredcos_cap_v2": _cosine,
                  "sigmoid": _sigmoid}


def betas_from_config(config: Mapping[str, Any]) -> torch.Tensor:
    """The float32 betas `(T,)` a diffusers scheduler config describes (diffusers' defaults for missing keys:
    1000 steps, linear from 1e-4 to 0.02); `trained_betas` wins over the named schedule."""
    require(not config.get("rescale_betas_zero_snr"), "rescale_betas_zero_snr models have an infinite sigma_max; "
            "they are not supported")
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    n = int(config.get("num_train_timesteps", 1000))
    require(n >= 2, f"num_train_timesteps must be >= 2, got {n}")
    name = choose("beta_schedule", str(config.get("beta_schedule", "linear")), BETA_SCHEDULES)
    return BETA_SCHEDULES[name](n, float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)))


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """The sigma table `sigmas (T,)` (float64, increasing in t) of a model trained on discrete timesteps, and
    how its own scheduler spaces inference timesteps (`spacing`, `steps_offset`)."""

    sigmas: torch.Tensor
    spacing: Spacing = Spacing.LINSPACE
    steps_offset: int = 0
    rule: TimestepRule = TimestepRule.EULER
    final_zero: bool = True

    def __post_init__(self) -> None:
        s = self.sigmas
        if s.ndim != 1 or len(s) < 2 or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise BadInput(f"a discrete noise table needs >= 2 finite positive sigmas, got shape {tuple(s.shape)}")
        if not bool((s[1:] > s[:-1]).all()):
            raise BadInput("the noise table's sigmas must increase with the timestep (betas in (0, 1))")

    @classmethod
    def from_betas(cls, betas: torch.Tensor, spacing: Spacing = Spacing.LINSPACE,
                   steps_offset: int = 0) -> DiscreteSchedule:
        """`sigma_t = sqrt((1 - abar_t) / abar_t)`, `abar_t = cumprod(1 - b)`, computed in float32 as diffusers
        does, then kept in float64."""
        abar = torch.cumprod(1 - betas.float(), dim=0)
        return cls((((1 - abar) / abar) ** 0.5).double(), spacing, steps_offset)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiscreteSchedule:
        """The table and timestep spacing of a diffusers scheduler config; its class gives the timestep rule,
        and `set_alpha_to_one = false` (DDIM, PNDM) or `final_sigmas_type = sigma_min` (DPM-Solver, UniPC) a
        model grid that ends at the table's smallest sigma instead of 0."""
        spacing = Spacing(choose("timestep_spacing", str(config.get("timestep_spacing", "linspace")),
                                 [s.value for s in Spacing]))
        table = cls.from_betas(betas_from_config(config), spacing, int(config.get("steps_offset", 0)))
        name = str(config.get("_class_name") or "")
        if name.startswith(("DDIM", "PNDM")):  # configs converted between classes keep the other class's keys
            final_zero = config.get("set_alpha_to_one") is not False
        else:
            final_zero = config.get("final_sigmas_type") != "sigma_min"
        return dataclasses.replace(table, rule=TimestepRule.of_scheduler(name), final_zero=final_zero)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor, integer: bool = False) -> torch.Tensor:
        """Fractional timestep `t = i + w`, `w = (log sigma - log s_i) / (log s_{i+1} - log s_i)` for
        `s_i <= sigma <= s_{i+1}`, clamped to `[0, T-1]` (float64, same shape as `sigma`); with `integer`, the
        nearest timestep in log sigma (`round(t)`)."""
        table = self.sigmas.to(sigma.device).log()
        log_sigma = sigma.double().clamp_min(1e-30).log()
        high = torch.searchsorted(table, log_sigma.reshape(-1).contiguous()).clamp(1, len(table) - 1)
        low = high - 1
        w = ((log_sigma.reshape(-1) - table[low]) / (table[high] - table[low])).clamp(0, 1)
        t = (low + w).reshape(sigma.shape)
        return t.round() if integer else t

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """`sigma(t) = exp((1 - w) log s_i + w log s_{i+1})`, `i = floor(t)`, `w = t - i` (inverse of
        `sigma_to_t` on `[0, T-1]`)."""
        t = t.double().clamp(0, len(self.sigmas) - 1)
        table = self.sigmas.to(t.device).log()
        low = t.floor().long().clamp(max=len(table) - 2)
        w = t - low
        return ((1 - w) * table[low] + w * table[low + 1]).exp()

    def inference_timesteps(self, steps: int) -> torch.Tensor:
        """The `steps` decreasing timesteps `t_k` (k < N) that `self.rule`'s scheduler places:

            linspace  euler: (T-1)(1 - k/(N-1)) (0 for N = 1);  ddim: round of that;  dpm-solver: round((T-1)(N-k)/N)
            leading   (N-1-k) floor(T/N) + offset;  dpm-solver: (N-k) floor(T/(N+1)) + offset
            trailing  round(T - k T/N) - 1
        """
        require(steps >= 1, f"steps must be >= 1, got {steps}")
        n_train, rule = self.num_train_timesteps, self.rule
        k = torch.arange(steps, dtype=torch.float64)
        if self.spacing is Spacing.LINSPACE and rule is TimestepRule.DPM:
            return torch.round((n_train - 1) * (steps - k) / steps)
        if self.spacing is Spacing.LINSPACE:
            t = (n_train - 1) * (1 - k / (steps - 1)) if steps > 1 else k  # numpy's linspace(0, T-1, 1) is [0]
            return t.round() if rule is TimestepRule.DDIM else t
        if self.spacing is Spacing.LEADING and rule is TimestepRule.DPM:
            return (steps - k) * (n_train // (steps + 1)) + self.steps_offset
        if self.spacing is Spacing.LEADING:
            return (steps - 1 - k) * (n_train // steps) + self.steps_offset
        return torch.round(n_train - k * n_train / steps) - 1

    def final_sigma(self) -> float:
        """Where the last step ends: 0, or with `final_zero` false the table's smallest sigma."""
        return 0.0 if self.final_zero else self.sigma_min

    def ddim_targets(self, steps: int) -> torch.Tensor:
        """Where diffusers' DDIMScheduler steps from each inference timestep t: `sigma_{t - T//N}` (the table
        entry), or `final_sigma` where t - T//N < 0 (its `final_alpha_cumprod`). One per step of `model_grid`
        (a grid left without its final step ends at timestep 0, whose target is the final sigma: no move)."""
        t = self.inference_timesteps(steps).long() - self.num_train_timesteps // steps
        to = torch.where(t >= 0, self.sigmas[t.clamp(min=0)], torch.full_like(self.sigmas[:1], self.final_sigma()))
        return to[:len(self.model_grid(steps)) - 1]

    def model_grid(self, steps: int) -> torch.Tensor:
        """The model's own sigma grid: `inference_timesteps` mapped to sigma by linear interpolation of the table
        in t (as diffusers' schedulers), then 0, or with `final_zero` false the table's smallest sigma (left out
        when the last timestep is 0 already: that step would not move)."""
        t = self.inference_timesteps(steps).clamp(0, self.num_train_timesteps - 1)
        low = t.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = t - low
        s = (1 - w) * self.sigmas[low] + w * self.sigmas[low + 1]
        if not self.final_zero:
            return s if bool(t[-1] == 0) else torch.cat([s, self.sigmas[:1]])
        return torch.cat([s, s.new_zeros(1)])
