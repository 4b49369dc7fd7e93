"""Particle mode (no generator): a cloud moves along the estimated field `∇_x h(d(x))`.

Each round refits the discriminator for `d_steps` logistic-regression steps (warm start) on real data vs the
current particles, then integrates `dx/dt = ∇_x h(d(x))` over time `dt` with `solver_steps` steps of the
solver core (`batch_odeint`, fixed-step `method`), the discriminator held fixed during the integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.errors import choose
from gentool.core.monoflow.config import MonoFlowConfig
from gentool.core.monoflow.data import FixedSample, RealData, minibatch
from gentool.core.monoflow.discriminator import discriminator_step, make_discriminator, velocity
from gentool.core.monoflow.exact import LogProb, exact_flow
from gentool.core.monoflow.h import get_h
from gentool.core.nn import seeded
from gentool.core.progress import Progress, no_progress
from gentool.core.solvers import FIXED_METHODS, batch_odeint
from gentool.core.solvers.errors import NonFiniteState
from torch import nn


@dataclass
class ParticleRun:
    """State of a particle-mode run: particles, discriminator and its optimiser, round counter."""

    cfg: MonoFlowConfig
    particles: torch.Tensor
    disc: nn.Module
    opt_d: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self, rng: torch.Generator) -> dict[str, Any]:
        return {"step": self.step, "particles": self.particles, "disc": self.disc.state_dict(),
                "opt_d": self.opt_d.state_dict(), "rng": rng.get_state(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any], rng: torch.Generator) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.particles = state["particles"].to(self.particles)
        self.step, self.history = int(state["step"]), list(state["history"])
        rng.set_state(state["rng"])


def init_particle_run(x0: torch.Tensor, cfg: MonoFlowConfig, *, seed: int) -> ParticleRun:
    """Particles start at `x0 (n, d)`; the discriminator is initialised from `seed`."""
    choose("method (particle mode needs a fixed-step method)", cfg.method, FIXED_METHODS)
    with seeded(seed):
        disc = make_discriminator(x0.shape[1], cfg.hidden, cfg.depth, cfg.activation).to(x0.device)
    opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    return ParticleRun(cfg, x0.float().clone(), disc, opt)


@contextmanager
def named_round(step: int, cfg: MonoFlowConfig) -> Iterator[None]:
    """A round whose solve ends non-finite, named by the round, its flow time and the knobs (the solve itself
    only knows its own step within the round)."""
    try:
        yield
    except NonFiniteState:
        t0, t1 = step * cfg.dt, (step + 1) * cfg.dt
        raise NonFiniteState(f"particles became non-finite in round {step + 1} (flow time {t0:.6g} -> {t1:.6g}); "
                             f"lower dt (now {cfg.dt:g}) or raise solver_steps (now {cfg.solver_steps})",
                             step=step, time=t0) from None


def particle_steps(run: ParticleRun, real: RealData | torch.Tensor, n_steps: int, rng: torch.Generator,
                   progress: Progress | None = None) -> dict[str, float]:
    """Advance by `n_steps` rounds (refit D on real minibatches vs minibatches of the particles, then integrate
    the particles over `dt`); `real` a fixed sample (tensor) or a fresh sampler."""
    cfg, h, progress = run.cfg, get_h(run.cfg.h), progress or no_progress
    real = FixedSample(real) if isinstance(real, torch.Tensor) else real
    t = torch.linspace(0.0, cfg.dt, cfg.solver_steps + 1, device=run.particles.device)
    field = lambda s, x: velocity(run.disc, h, x, cfg.h_param)  # noqa: E731
    d_loss = float("nan")
    for _ in range(n_steps):
        for _ in range(cfg.d_steps):
            d_loss = discriminator_step(run.disc, run.opt_d, real.batch(cfg.batch_size, rng),
                                        minibatch(run.particles, cfg.batch_size, rng))
        with named_round(run.step, cfg):
            run.particles = batch_odeint(field, run.particles, t, method=cfg.method, graph="off").x.detach()
        run.step += 1
        progress(run.step, cfg.steps, d_loss=d_loss)
    return {"d_loss": d_loss}


@dataclass
class ExactRun:
    """State of an exact-ratio run (analytic `log p`, Gaussian fit for `log q_t`): particles and step."""

    cfg: MonoFlowConfig
    particles: torch.Tensor
    log_p: LogProb
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self, rng: torch.Generator) -> dict[str, Any]:
        return {"step": self.step, "particles": self.particles, "rng": rng.get_state(),
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any], rng: torch.Generator) -> None:
        self.particles = state["particles"].to(self.particles)
        self.step, self.history = int(state["step"]), list(state["history"])
        rng.set_state(state["rng"])


def exact_steps(run: ExactRun, n_steps: int, progress: Progress | None = None) -> dict[str, float]:
    """Advance the exact-ratio flow by `n_steps` × `dt` (each over `solver_steps` fixed steps)."""
    cfg, h, progress = run.cfg, get_h(run.cfg.h), progress or no_progress
    for _ in range(n_steps):
        with named_round(run.step, cfg):
            run.particles = exact_flow(run.particles, run.log_p, h, cfg.dt, cfg.solver_steps,
                                       method=cfg.method, c=cfg.h_param)
        run.step += 1
        progress(run.step, cfg.steps, time=run.step * cfg.dt)
    return {"time": run.step * cfg.dt}
