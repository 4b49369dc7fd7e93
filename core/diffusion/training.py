"""Training of a small denoiser by `E lambda(sigma) ||D(x + sigma n, sigma) - x||^2`; EMA weights; learning rate
(`learning_rate`) warmed up linearly over the first `W = ceil(warmup K)` of `K` steps, then cosine-decayed to
`LR_FLOOR lr`. Two parametrisations (EDM table 1):

- mlp, conv: EDM preconditioning, `log sigma ~ N(P_mean, P_std^2)`, `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`;
- unet: a diffusers `UNet2DModel` on the discrete VP table of `T = 1000` linear betas (1e-4 to 0.02), DDPM's
  objective: `sigma = sigma_t` with `t ~ U{0..T-1}` and `lambda` making the loss the net's plain MSE in its
  prediction type (`Prediction.loss_weight`), so the result is an ordinary diffusers model.

`DenoiserTrainer` advances training by any number of steps and round-trips its whole state (weights, EMA,
optimiser, step, losses, RNG), so a run split into chunks and resumed equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from gentool.core.config import check_float, check_int
from gentool.core.diffusion.denoisers import EDMPrecond
from gentool.core.diffusion.discrete import DiscreteSchedule, betas_from_config
from gentool.core.diffusion.discrete_denoiser import DiscreteDenoiser, Prediction
from gentool.core.diffusion.models import ARCH_DEFAULTS, ARCHS, image_shape, make_net
from gentool.core.errors import NumericalFailure, choose, require
from gentool.core.nn import draw_seed, seeded
from gentool.core.progress import Progress, no_progress

KIND = "gentool-denoiser"
DIVERGED_LOSS = 1e8  # the EDM loss is O(1) by construction; beyond this the weights have blown up
# Peak Adam learning rate per architecture. mlp: on moons (3x128, batch 512) 1e-3 left the EDM loss flat over
# 400 steps (1.94 -> 1.92) and at 1.54 after 3000; 1e-2 with the warm-up gives 1.94 -> 1.59 and 1.49.
LR_DEFAULTS = {"mlp": 1e-2, "conv": 1e-3, "unet": 1e-3}
LR_FLOOR = 0.1  # the cosine decays to this fraction of the peak, so the last steps still learn
# The mlp's noise-level features [cos, sin](f_k c_noise) (`models.fourier_embedding`): 2, one frequency. With 16
# (8 frequencies up to 100) next to 2-D data, the first layer saw mostly noise-level features and training on
# data symmetric about 0 (ring, grid) stayed at the untrained loss (~2.0 over 3000 steps; the ring's optimum is
# ~1.09): with 2, 1500 steps give ring 1.13, grid 1.55, and moons, swissroll, checkerboard as before.
MLP_NOISE_FEATURES = 2
LEGACY_MLP_NOISE_FEATURES = 16  # what checkpoints whose config predates `mlp_noise_features` were trained with
LOSS_MARGIN = 0.05  # training "learned" when the final loss is this fraction below the first
# The unet's noise table (a diffusers scheduler config): DDPM's 1000 linear betas
UNET_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
                  "timestep_spacing": "linspace"}


@dataclass(frozen=True)
class TrainConfig:
    """Defaults for 2-D toys on CPU: MLP 3x128, 3000 steps, batch 512, Adam (peak lr per arch, `LR_DEFAULTS`;
    warm-up over the first `warmup` fraction of the steps, then cosine to `LR_FLOOR lr`, or constant with
    `cosine=False`), EMA 0.999. `width`/`depth` default per arch (`models.ARCH_DEFAULTS`); `prediction` is the
    unet's prediction type."""

    arch: str = "mlp"
    width: int | None = None
    depth: int | None = None
    steps: int = 3000
    batch: int = 512
    lr: float | None = None
    ema: float = 0.999
    cosine: bool = True
    warmup: float = 0.1
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float | None = None  # None: the data's standard deviation
    prediction: str = "epsilon"
    mlp_noise_features: int = MLP_NOISE_FEATURES

    def __post_init__(self) -> None:
        choose("arch", self.arch, ARCHS)
        width, depth = ARCH_DEFAULTS[self.arch]
        object.__setattr__(self, "width", width if self.width is None else self.width)
        object.__setattr__(self, "depth", depth if self.depth is None else self.depth)
        object.__setattr__(self, "lr", LR_DEFAULTS[self.arch] if self.lr is None else self.lr)
        Prediction.named(self.prediction)
        check_int("steps", self.steps, 1)
        check_int("batch", self.batch, 1)
        check_int("width", self.width, 1)
        check_int("depth", self.depth, 1)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("ema", self.ema, 0.0, 1.0, hi_open=True)
        check_float("warmup", self.warmup, 0.0, 1.0, hi_open=True)
        check_float("p_mean", self.p_mean)
        check_float("p_std", self.p_std, 0.0, lo_open=True)
        if self.sigma_data is not None:
            check_float("sigma_data", self.sigma_data, 0.0, lo_open=True)
        check_int("mlp_noise_features", self.mlp_noise_features, 2)
        require(self.mlp_noise_features % 2 == 0, f"mlp_noise_features must be even, got {self.mlp_noise_features}")


@dataclass
class TrainResult:
    """`denoiser`: the EMA model (eval mode, callable `D(x, sigma)`); `model`: raw weights;
    `state`: the checkpoint dict."""

    denoiser: EDMPrecond | DiscreteDenoiser
    model: EDMPrecond | DiscreteDenoiser
    losses: list[float]
    state: dict[str, Any] = field(default_factory=dict)


def build_denoiser(cfg: TrainConfig, dim: int, sigma_data: float) -> EDMPrecond | DiscreteDenoiser:
    """The untrained denoiser `D(x, sigma)` of `cfg` for flattened data of dimension `dim` (global RNG for weights)."""
    net = make_net(cfg.arch, dim, cfg.width, cfg.depth, cfg.mlp_noise_features)
    if cfg.arch == "unet":
        schedule = DiscreteSchedule.from_betas(betas_from_config(UNET_SCHEDULER))
        return DiscreteDenoiser(net, schedule, Prediction.named(cfg.prediction), image_shape(dim))
    return EDMPrecond(net, sigma_data)


def denoising_loss(model: EDMPrecond | DiscreteDenoiser, x: torch.Tensor, cfg: TrainConfig,
                   generator: torch.Generator) -> torch.Tensor:
    """One minibatch of the loss of `model`'s parametrisation (module docstring)."""
    if isinstance(model, DiscreteDenoiser):
        return discrete_loss(model, x, generator)
    return edm_loss(model, x, cfg, generator)


def discrete_loss(model: DiscreteDenoiser, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DDPM's loss in sigma-form: `t ~ U{0..T-1}`, `sigma = sigma_t`, `E lambda(sigma) ||D(x + sigma n) - x||^2`."""
    table = model.schedule.sigmas
    t = torch.randint(0, len(table), (x.shape[0],), generator=generator, device=generator.device).cpu()
    sigma = table[t].to(device=x.device, dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    err = ((model(x + sigma[:, None] * noise, sigma) - x) ** 2).sum(1)
    return (model.prediction.loss_weight(sigma) * err).mean()


def edm_loss(model: EDMPrecond, x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """One minibatch of the EDM loss."""
    rnd = torch.randn(x.shape[0], generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    sigma = (rnd * cfg.p_std + cfg.p_mean).exp()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = ((model(x + sigma[:, None] * noise, sigma) - x) ** 2).sum(1)
    return (weight * err).mean()


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `k` (0-based) of `K = cfg.steps`, with `W = ceil(warmup K)` warm-up steps:

        lr (k + 1) / W                                                 for k < W,
        lr (f + (1 - f) (1 + cos(pi (k - W) / (K - W))) / 2)           after (f = LR_FLOOR; lr without cosine).
    """
    warm = math.ceil(cfg.warmup * cfg.steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if not cfg.cosine:
        return cfg.lr
    phase = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, phase))))


def loss_warning(losses: list[float], cfg: TrainConfig) -> str | None:
    """A message when training did not reduce the loss: the mean over the last tenth of the steps is not
    `LOSS_MARGIN` below the mean over the first tenth (None when it is, or with fewer than 20 steps)."""
    if len(losses) < 20:
        return None
    k = len(losses) // 10
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if last < (1 - LOSS_MARGIN) * first:
        return None
    return (f"training did not reduce the loss: mean {last:.4g} over the last {k} steps vs {first:.4g} over the "
            f"first {k} (wanted {LOSS_MARGIN:.0%} lower); raise steps (now {cfg.steps}) or lr (now {cfg.lr:g}), "
            f"or shorten warmup (now {cfg.warmup:g})")


class DenoiserTrainer:
    """Training state of one denoiser on `x_train (n, d)`; batches and noise come from `generator`."""

    def __init__(self, x_train: torch.Tensor, cfg: TrainConfig, *, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        self.cfg, self.generator, self.device = cfg, generator, device
        self.x = x_train.to(device=device, dtype=torch.float32)
        self.sigma_data = cfg.sigma_data if cfg.sigma_data is not None else float(self.x.std())
        with seeded(draw_seed(generator)):  # weights from `generator`, not the global RNG
            self.model = build_denoiser(cfg, self.x.shape[1], self.sigma_data).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.step, self.losses = 0, []

    def _lr(self) -> float:
        return learning_rate(self.cfg, self.step)

    def train(self, n_steps: int, progress: Progress | None = None) -> list[float]:
        """Take `n_steps` optimiser steps (fewer if `cfg.steps` is reached); returns their losses.

        Raises `NumericalFailure` naming the step when the loss is non-finite or explodes."""
        progress = progress or no_progress
        new: list[float] = []
        for _ in range(min(n_steps, self.cfg.steps - self.step)):
            idx = torch.randint(0, self.x.shape[0], (self.cfg.batch,), generator=self.generator,
                                device=self.generator.device).to(self.device)
            for group in self.opt.param_groups:
                group["lr"] = self._lr()
            loss = denoising_loss(self.model, self.x[idx], self.cfg, self.generator)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))  # warm-up
                for pe, pm in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            self.step += 1
            value = float(loss.detach())
            if not math.isfinite(value) or value > DIVERGED_LOSS:
                raise NumericalFailure(f"training diverged at step {self.step} (loss {value:.3g}); lower lr "
                                       f"(now {self.cfg.lr:g})")
            self.losses.append(value)
            new.append(value)
            progress(self.step, self.cfg.steps, loss=value)
        return new

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict (`kind` gentool-denoiser): config, weights, EMA, optimiser, step, losses, RNG."""
        return {"kind": KIND, "config": asdict(self.cfg), "dim": self.model.dim,
                "sigma_data": self.sigma_data, "model": copy.deepcopy(self.model.state_dict()),
                "ema": copy.deepcopy(self.ema.state_dict()), "step": self.step,
                "optimizer": copy.deepcopy(self.opt.state_dict()), "rng": self.generator.get_state(),
                "losses": list(self.losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.losses = int(state["step"]), list(state["losses"])
        self.generator.set_state(state["rng"])

    def result(self) -> TrainResult:
        return TrainResult(self.ema.eval(), self.model, list(self.losses), self.state_dict())


def train_denoiser(x_train: torch.Tensor, cfg: TrainConfig, *, generator: torch.Generator,
                   device: torch.device | str = "cpu", progress: Progress | None = None,
                   resume: dict[str, Any] | None = None,
                   checkpoint: Callable[[dict[str, Any]], None] | None = None,
                   checkpoint_every: int = 0) -> TrainResult:
    """Train an EDM-preconditioned denoiser on `x_train (n, d)` to `cfg.steps` steps.

    `resume` (a checkpoint dict) restores weights, EMA, optimizer, step, losses and generator state, so
    training continues bit-identically. `checkpoint(state)` is called every `checkpoint_every` steps.
    """
    trainer = DenoiserTrainer(x_train, cfg, generator=generator, device=device)
    if resume is not None:
        trainer.load_state_dict(resume)
    every = checkpoint_every if checkpoint is not None and checkpoint_every > 0 else cfg.steps
    while trainer.step < cfg.steps:
        trainer.train(every - trainer.step % every, progress)
        if checkpoint is not None and checkpoint_every > 0 and trainer.step % checkpoint_every == 0:
            checkpoint(trainer.state_dict())
    return trainer.result()
