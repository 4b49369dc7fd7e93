"""Generator mode: train `g_θ(z)` so that its samples follow the MonoFlow `dx/dt = ∇_x h(d(x))`.

Per step: one (or `d_steps`) logistic-regression steps for D (each on a real minibatch: from a fixed sample, or
fresh from the data distribution), then either one generator step on
`E_z[−h(d(g_θ(z)))]` (= distilling one Euler step of the particle ODE), or, with `k_gen > 1`, `k_gen`
steps on `‖g_θ(z) − stopgrad(g_{θ_t}(z) + eps ∇_x h(d(g_{θ_t}(z))))‖²` with fixed targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.errors import require
from gentool.core.monoflow.config import MonoFlowConfig
from gentool.core.monoflow.data import FixedSample, RealData
from gentool.core.monoflow.discriminator import discriminator_step, logit, make_discriminator, velocity
from gentool.core.monoflow.h import get_h
from gentool.core.nn import draw_seed, mlp, seeded
from gentool.core.progress import Progress, no_progress
from torch import nn


class AffineGenerator(nn.Module):
    """`g(z) = μ + A z` (the 2-D Gaussian toy of SPEC §3); `μ`, `A` learnable."""

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        super().__init__()
        self.mean = nn.Parameter(mean.clone().float())
        self.matrix = nn.Parameter(matrix.clone().float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + z @ self.matrix.T


def make_mlp_generator(latent_dim: int, dim: int, hidden: int, depth: int, activation: str = "leaky_relu") -> nn.Module:
    """MLP generator `R^latent -> R^dim`."""
    return mlp([latent_dim, *([hidden] * depth), dim], activation)


def _adam(module: nn.Module, lr: float, cfg: MonoFlowConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2))


@dataclass
class GeneratorRun:
    """Everything a generator-mode run needs to continue: networks, optimisers, step, RNG, history."""

    cfg: MonoFlowConfig
    generator: nn.Module
    disc: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    latent_dim: int
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self, rng: torch.Generator) -> dict[str, Any]:
        return {"step": self.step, "generator": self.generator.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": rng.get_state(),
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any], rng: torch.Generator) -> None:
        for name in ("generator", "disc", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        self.step, self.history = int(state["step"]), list(state["history"])
        rng.set_state(state["rng"])


def init_generator_run(dim: int, cfg: MonoFlowConfig, *, device: torch.device | str = "cpu",
                       init_generator: nn.Module | None = None) -> GeneratorRun:
    """Fresh networks and Adam optimisers (weights drawn from torch's global RNG: seed it for determinism)."""
    gen = init_generator or make_mlp_generator(cfg.latent_dim, dim, cfg.hidden, cfg.depth, cfg.activation)
    latent = gen.matrix.shape[1] if isinstance(gen, AffineGenerator) else cfg.latent_dim
    gen, disc = gen.to(device), make_discriminator(dim, cfg.hidden, cfg.depth, cfg.activation).to(device)
    return GeneratorRun(cfg, gen, disc, _adam(gen, cfg.lr_g, cfg), _adam(disc, cfg.lr_d, cfg), latent)


def sample_generator(gen: nn.Module, n: int, latent_dim: int, *, generator: torch.Generator,
                     latent_scale: float = 1.0) -> torch.Tensor:
    """`g(z)`, `z ~ N(0, latent_scale² I)` (latent_scale < 1 truncates towards the modes)."""
    require(n >= 1, f"number of samples must be >= 1, got {n}")
    require(latent_scale > 0, f"latent_scale must be > 0, got {latent_scale}")
    dev = next(gen.parameters()).device
    z = torch.randn(n, latent_dim, generator=generator, device=generator.device).to(dev)
    with torch.no_grad():
        return gen(latent_scale * z)


def _generator_update(run: GeneratorRun, z: torch.Tensor) -> float:
    cfg, h = run.cfg, get_h(run.cfg.h)
    if cfg.k_gen == 1:
        run.opt_g.zero_grad(set_to_none=True)
        loss = -h(logit(run.disc, run.generator(z)), cfg.h_param).mean()
        loss.backward()
        run.opt_g.step()
        return float(loss.detach())
    with torch.no_grad():
        x_t = run.generator(z)
    target = x_t + cfg.eps * velocity(run.disc, h, x_t, cfg.h_param)
    for _ in range(cfg.k_gen):
        run.opt_g.zero_grad(set_to_none=True)
        loss = ((run.generator(z) - target) ** 2).sum(-1).mean()
        loss.backward()
        run.opt_g.step()
    return float(loss.detach())


def _latent(run: GeneratorRun, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(n, run.latent_dim, generator=rng, device=rng.device).to(device)


def train_steps(run: GeneratorRun, real: RealData | torch.Tensor, n_steps: int, rng: torch.Generator,
                progress: Progress | None = None, total: int | None = None) -> dict[str, float]:
    """Advance `run` by `n_steps` (D step(s) then generator step(s)) on the `real` data (a tensor is a fixed
    sample); reports via `progress`."""
    cfg, progress = run.cfg, progress or no_progress
    real = FixedSample(real) if isinstance(real, torch.Tensor) else real
    device = next(run.generator.parameters()).device
    for _ in range(n_steps):
        for _ in range(cfg.d_steps):
            z = _latent(run, cfg.batch_size, rng, device)
            with torch.no_grad():
                fake = run.generator(z)
            d_loss = discriminator_step(run.disc, run.opt_d, real.batch(cfg.batch_size, rng), fake)
        z = _latent(run, cfg.batch_size, rng, device)
        g_loss = _generator_update(run, z)
        run.step += 1
        progress(run.step, total or cfg.steps, d_loss=d_loss, g_loss=g_loss)
    return {"d_loss": d_loss, "g_loss": g_loss}


def _check_train_data(x_train: torch.Tensor) -> None:
    require(isinstance(x_train, torch.Tensor) and x_train.dim() == 2 and x_train.shape[0] >= 2,
            f"training data must have shape (n, d) with n >= 2, got {getattr(x_train, 'shape', None)}")
    require(bool(torch.isfinite(x_train).all()), "training data contains non-finite values")


def train_generator(x_train: torch.Tensor, cfg: MonoFlowConfig, *, generator: torch.Generator,
                    device: torch.device | str = "cpu", progress: Progress | None = None,
                    init_generator: nn.Module | None = None, eval_every: int | None = None,
                    on_eval: Callable[[GeneratorRun], dict[str, Any]] | None = None) -> GeneratorRun:
    """Train a MonoFlow generator on `x_train (n, d)` for `cfg.steps` steps.

    Network weights are initialised from a seed drawn from `generator`, so the result depends only on it.
    `on_eval(run)` (every `eval_every` steps and at the end) returns metrics appended to `run.history`.
    Returns the run: `.generator` (z -> x), `.latent_dim`, `.history`.
    """
    _check_train_data(x_train)
    x_train = x_train.to(device=device, dtype=torch.float32)
    with seeded(draw_seed(generator)):
        run = init_generator_run(x_train.shape[1], cfg, device=device, init_generator=init_generator)
    probe = torch.Generator(device=generator.device).manual_seed(0)
    out_dim = sample_generator(run.generator, 1, run.latent_dim, generator=probe).shape[1]
    require(out_dim == x_train.shape[1], f"data shape mismatch: generator outputs dimension {out_dim}, "
            f"data has dimension {x_train.shape[1]}")
    every = eval_every or cfg.steps
    while run.step < cfg.steps:
        losses = train_steps(run, x_train, min(every, cfg.steps - run.step), generator, progress)
        run.history.append({"step": run.step, **losses, **(on_eval(run) if on_eval is not None else {})})
    return run
