"""EDM training of a small denoiser: `log sigma ~ N(P_mean, P_std^2)`,
loss weight `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`,
loss `E lambda ||D(x + sigma n, sigma) - x||^2`; EMA weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from gentool.core.diffusion.denoisers import EDMPrecond
from gentool.core.diffusion.models import make_net
from gentool.core.errors import require
from gentool.core.nn import draw_seed, seeded
from gentool.core.progress import Progress, no_progress


@dataclass
class TrainConfig:
    """Defaults for 2-D toys on CPU: MLP 3x128, 3000 steps, batch 512, Adam lr 1e-3 (cosine), EMA 0.999."""

    arch: str = "mlp"
    width: int = 128
    depth: int = 3
    steps: int = 3000
    batch: int = 512
    lr: float = 1e-3
    ema: float = 0.999
    cosine: bool = True  # lr follows lr * (1 + cos(pi step / steps)) / 2
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float | None = None  # None: the data's standard deviation

    def validate(self) -> None:
        require(
            self.steps >= 1 and self.batch >= 1,
            f"steps and batch must be >= 1, got {self.steps}, {self.batch}",
        )
        require(
            self.width >= 1 and self.depth >= 1,
            f"width and depth must be >= 1, got {self.width}, {self.depth}",
        )
        require(self.lr > 0 and 0 <= self.ema < 1, f"need lr > 0 and 0 <= ema < 1, got {self.lr}, {self.ema}")


@dataclass
class TrainResult:
    """`denoiser`: the EMA model (eval mode, callable `D(x, sigma)`); `model`: raw weights;
    `state`: the checkpoint dict."""

    denoiser: EDMPrecond
    model: EDMPrecond
    losses: list[float]
    state: dict[str, Any] = field(default_factory=dict)


def edm_loss(
    model: EDMPrecond, x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """One minibatch of the EDM loss."""
    rnd = torch.randn(x.shape[0], generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    sigma = (rnd * cfg.p_std + cfg.p_mean).exp()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = ((model(x + sigma[:, None] * noise, sigma) - x) ** 2).sum(1)
    return (weight * err).mean()


def _snapshot(
    cfg: TrainConfig,
    model: EDMPrecond,
    ema: EDMPrecond,
    opt: torch.optim.Optimizer,
    step: int,
    losses: list[float],
    generator: torch.Generator,
) -> dict[str, Any]:
    return {
        "kind": "gentool-denoiser",
        "config": asdict(cfg),
        "dim": model.dim,
        "sigma_data": model.sigma_data,
        "model": copy.deepcopy(model.state_dict()),
        "ema": copy.deepcopy(ema.state_dict()),
        "step": step,
        "optimizer": copy.deepcopy(opt.state_dict()),
        "rng": generator.get_state(),
        "losses": list(losses),
    }


def train_denoiser(
    x_train: torch.Tensor,
    cfg: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
) -> TrainResult:
    """Train an EDM-preconditioned denoiser on `x_train (n, d)`; batches and noise come from `generator`.

    `resume` (a checkpoint dict) restores weights, EMA, optimizer, step, losses and generator state, so
    training continues bit-identically. `checkpoint(state)` is called every `checkpoint_every` steps.
    """
    cfg.validate()
    progress = progress or no_progress
    x_train = x_train.to(device=device, dtype=torch.float32)
    sd = cfg.sigma_data if cfg.sigma_data is not None else float(x_train.std())
    with seeded(draw_seed(generator)):  # weights from `generator`, not the global RNG
        model = EDMPrecond(make_net(cfg.arch, x_train.shape[1], cfg.width, cfg.depth), sd).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, losses = 0, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        step, losses = int(resume["step"]), list(resume["losses"])
        generator.set_state(resume["rng"])
    while step < cfg.steps:
        idx = torch.randint(
            0, x_train.shape[0], (cfg.batch,), generator=generator, device=generator.device
        ).to(device)
        if cfg.cosine:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        loss = edm_loss(model, x_train[idx], cfg, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))  # warm-up: early weights do not linger
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        progress(step, cfg.steps, loss=losses[-1])
        if checkpoint is not None and checkpoint_every > 0 and step % checkpoint_every == 0:
            checkpoint(_snapshot(cfg, model, ema, opt, step, losses, generator))
    state = _snapshot(cfg, model, ema, opt, step, losses, generator)
    return TrainResult(ema.eval(), model, losses, state)
