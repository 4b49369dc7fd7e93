"""`D(x, sigma)` around a net trained on a discrete VP table (diffusers' `UNet2DModel` and alike).

The net sees the VP sample `x~ = x / sqrt(sigma^2 + 1)` at the timestep `t(sigma)` of its noise table
(`DiscreteSchedule.sigma_to_t`) and predicts, in VP variables `alpha = 1/sqrt(sigma^2 + 1)`, `s = alpha sigma`:

    epsilon:       eps                      D = x - sigma eps
    v_prediction:  v = alpha eps - s x_0    D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v
    sample:        x_0                      D = x_0

Class-conditional nets take `class_labels`; classifier-free guidance with scale `w` is
`D_w = D(x, sigma, null) + w (D(x, sigma, y) - D(x, sigma, null))` (w = 1: the conditional model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from gentool.core.diffusion.denoisers import expand_sigma
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.errors import choose
from torch import nn


class Prediction(StrEnum):
    """What the net predicts (diffusers' `prediction_type`)."""

    EPSILON = "epsilon"
    V = "v_prediction"
    SAMPLE = "sample"

    @classmethod
    def named(cls, name: str) -> Prediction:
        """The prediction type `name`, else `BadInput` listing the allowed ones."""
        return cls(choose("prediction_type", str(name), [p.value for p in cls]))

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`D(x, sigma)` from the net output `out` (see the module docstring); `sigma` broadcasts against `x`."""
        if self is Prediction.EPSILON:
            return x - sigma * out
        if self is Prediction.V:
            return x / (sigma**2 + 1) - sigma / (sigma**2 + 1).sqrt() * out
        return out

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """`lambda(sigma)` with `lambda |D - x_0|^2 = |out - target|^2`, the net's plain MSE in its own output:
        `1/sigma^2` (epsilon), `(sigma^2 + 1)/sigma^2` (v), 1 (sample)."""
        if self is Prediction.EPSILON:
            return sigma**-2
        if self is Prediction.V:
            return (sigma**2 + 1) / sigma**2
        return torch.ones_like(sigma)


def _tensor(out: Any) -> torch.Tensor:
    """A diffusers model returns an output object with `.sample`; plain nets a tensor."""
    return out if isinstance(out, torch.Tensor) else out.sample


class DiscreteDenoiser(nn.Module):
    """`D(x, sigma[, class_labels])` for a net `net(x~, t, class_labels=...)` on images of `sample_shape`
    `(C, H, W)`. `x` is `(B, C, H, W)` or flattened `(B, C*H*W)`; the output has the shape of `x`.
    `integer_timesteps` evaluates the net at the nearest integer timestep (as diffusers' DPM-Solver does with
    Karras sigmas) instead of the interpolated fractional one."""

    def __init__(self, net: nn.Module, schedule: DiscreteSchedule, prediction: Prediction,
                 sample_shape: tuple[int, int, int], integer_timesteps: bool = False) -> None:
        super().__init__()
        self.net, self.schedule, self.prediction = net, schedule, prediction
        self.sample_shape, self.integer_timesteps = tuple(sample_shape), integer_timesteps

    @property
    def dim(self) -> int:
        return math.prod(self.sample_shape)

    @property
    def sigma_min(self) -> float:
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.schedule.sigma_max

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                **cond: torch.Tensor) -> torch.Tensor:
        """`D(x, sigma)`; `class_labels` and `cond` (e.g. `encoder_hidden_states`) go to the net, which runs in
        its own dtype (x~ cast to it, its output back to x's dtype)."""
        images = x.reshape(x.shape[0], *self.sample_shape)
        s = expand_sigma(sigma, images)
        t = self.schedule.sigma_to_t(s.reshape(-1), self.integer_timesteps).to(images.dtype)
        cond = cond if class_labels is None else {**cond, "class_labels": class_labels}
        dtype = getattr(self.net, "dtype", images.dtype)
        out = _tensor(self.net((images / (s**2 + 1).sqrt()).to(dtype), t, **cond)).to(images.dtype)
        channels = self.sample_shape[0]
        return self.prediction.denoised(images, s, out[:, :channels]).reshape(x.shape)


@dataclass(frozen=True, eq=False)
class ClassConditioned:
    """A class-conditional denoiser bound to `labels (B,)`, with guidance scale `scale` against the
    unconditional label `null` (needed when `scale != 1`): `D_w = D_null + scale (D_y - D_null)`."""

    denoiser: DiscreteDenoiser
    labels: torch.Tensor
    scale: float = 1.0
    null: int | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        labels = self.labels.to(x.device)
        if self.scale == 1.0:
            return self.denoiser(x, sigma, labels)
        s = expand_sigma(sigma, x).reshape(-1)
        both = self.denoiser(torch.cat([x, x]), torch.cat([s, s]),
                             torch.cat([labels, torch.full_like(labels, int(self.null))]))
        cond, uncond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)


CLIP_MODES = ("off", "clip", "dynamic")


@dataclass(frozen=True)
class Clipping:
    """What diffusers' schedulers do to the x_0 prediction `D` before stepping (`clip_sample`,
    `thresholding`): `off`; `clip`: `D <- clamp(D, -r, r)`, r = `clip_range`; `dynamic` (Imagen's dynamic
    thresholding, per sample): `s = clamp(quantile(|D|, ratio), 1, max_value)`, `D <- clamp(D, -s, s) / s`."""

    mode: str = "off"
    clip_range: float = 1.0
    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self) -> None:
        choose("clip_sample", self.mode, CLIP_MODES)

    @classmethod
    def from_config(cls, config: Any) -> Clipping:
        """The clipping a diffusers scheduler config asks for (`thresholding` wins over `clip_sample`)."""
        mode = "dynamic" if config.get("thresholding") else "clip" if config.get("clip_sample") else "off"
        return cls(mode, float(config.get("clip_sample_range", 1.0)),
                   float(config.get("dynamic_thresholding_ratio", 0.995)), float(config.get("sample_max_value", 1.0)))

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        if self.mode == "clip":
            return d.clamp(-self.clip_range, self.clip_range)
        if self.mode == "dynamic":
            flat = d.reshape(d.shape[0], -1)
            s = torch.quantile(flat.abs().float(), self.ratio, dim=1).clamp(1, self.max_value)[:, None].to(d.dtype)
            return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(d.shape)
        return d


@dataclass(frozen=True, eq=False)
class Clipped:
    """`D_c(x, sigma) = clipping(D(x, sigma))` (exact for diffusers' Heun, DPM-Solver, UniPC and DDPM, which
    step with the clipped x_0, and for its DDIM with `use_clipped_model_output=True`; DDIM's default, the net's
    own epsilon, is `ClippedNetEpsilon`)."""

    denoiser: Any
    clipping: Clipping

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.clipping(self.denoiser(x, sigma))


@dataclass(frozen=True, eq=False)
class ClippedNetEpsilon:
    """diffusers' DDIM step with clipping at its pipelines' default (`use_clipped_model_output=False`): the x_0
    prediction clipped, the noise estimate the net's own. With `r = s_down / s` of the `ddim` step from sigma
    (`ddim_step_ratios`), that step is `x~ = D_c + r (x - D) + s_up z`; `ddim` steps `x~ = D~ + r (x - D~) +
    s_up z` on its denoiser, so this denoiser is

        D~(x, sigma) = D_c + r / (1 - r) (D_c - D),      D_c = clipping(D),

    with r of the grid level nearest sigma in log sigma (`log_levels` the log of the grid's positive levels,
    `weights` r/(1 - r) per level; float64 tables on the sampling device, so that a captured graph reads no host
    memory). It belongs to one grid and one eta."""

    denoiser: Any
    clipping: Clipping
    log_levels: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def for_ddim(cls, denoiser: Any, clipping: Clipping, sigmas: torch.Tensor, ratios: Any,
                 device: torch.device | str = "cpu") -> ClippedNetEpsilon:
        """The denoiser for `ddim` on grid `sigmas` whose steps have the ratios `ratios` (one per step)."""
        r = torch.as_tensor([float(v) for v in ratios], dtype=torch.float64)
        log_levels = sigmas[:len(r)].double().log()
        return cls(denoiser, clipping, log_levels.to(device), (r / (1 - r)).to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        d = self.denoiser(x, sigma)
        d_c = self.clipping(d)
        s = expand_sigma(sigma, x).reshape(-1).double().log()
        nearest = (self.log_levels[None, :] - s[:, None]).abs().argmin(1)
        w = self.weights[nearest].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return d_c + w * (d_c - d)


@dataclass(frozen=True, eq=False)
class TextConditioned:
    """A text-conditional denoiser bound to prompt embeddings `embeds (B, L, E)` (the net's
    `encoder_hidden_states`), guided with scale `scale` against the negative (or empty) prompt's `negative`:
    `D_w = D_neg + scale (D_text - D_neg)`, evaluated as one batch [negative, text] (StableDiffusionPipeline's
    order); scale 1 is the text-conditional model alone."""

    denoiser: DiscreteDenoiser
    embeds: torch.Tensor
    negative: torch.Tensor
    scale: float = 1.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if self.scale == 1.0:
            return self.denoiser(x, sigma, encoder_hidden_states=self.embeds)
        s = expand_sigma(sigma, x).reshape(-1)
        both = self.denoiser(torch.cat([x, x]), torch.cat([s, s]),
                             encoder_hidden_states=torch.cat([self.negative, self.embeds]))
        uncond, cond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)
