"""The `monoflow` job: a MonoFlow generator, a particle cloud, or an exact-ratio flow; one unit = `eval_every`
steps (rounds), followed by metrics of the current samples against reference data.

The mode is dispatched once, when the job is built, to one of three small job classes sharing the loop.
Outputs besides the run contract's: `samples.npz` and `snapshots/*.npz` (the samples at every evaluation) and
`final.png` (the last four snapshots over the data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import check_int, setting
from gentool.core.data import DATASETS, sample_data
from gentool.core.errors import BadInput, NumericalFailure, choose
from gentool.core.monoflow import H_FUNCTIONS, MonoFlowConfig, init_generator_run, sample_generator, train_steps
from gentool.core.monoflow.evaluate import sample_metrics
from gentool.core.monoflow.exact import TARGETS, analytic_target
from gentool.core.monoflow.particles import ExactRun, exact_steps, init_particle_run, particle_steps
from gentool.core.nn import make_generator, seeded
from gentool.core.run.contract import JobSpec, Row, SteppedUnits
from gentool.core.run.rundir import snapshot_path
from gentool.core.solvers import FIXED_METHODS

MODES = ("generator", "particles", "exact")
DIVERGED = 1e6  # samples this many times farther out than the data: the flow has blown up


@dataclass(frozen=True)
class MonoFlowJobConfig:
    """A MonoFlow run (SPEC §3): the mode, its data or target, and the `MonoFlowConfig` hyper-parameters."""

    mode: str = setting("generator", "generator: train g(z); particles: move a cloud along the estimated "
                        "field; exact: analytic log-ratio (Gaussian fit of q_t).", choices=MODES)
    data: str = setting("ring", "Data set (generator and particles modes).", choices=DATASETS)
    target: str = setting("gaussian-1d", "Analytic target (exact mode).", choices=TARGETS)
    h: str = setting("logit", "Monotone h of the flow dx/dt = ∇h(d(x)).", choices=tuple(H_FUNCTIONS))
    shift: float = setting(0.0, "Shift C of the vanilla h = softplus(d + C).")
    steps: int = setting(2000, "Generator steps or particle rounds (a resumed run may raise it).",
                         extendable=True)
    eval_every: int = setting(500, "Steps per unit: metrics, snapshot and checkpoint every this many.")
    n: int = setting(2000, "Particles (particles, exact) and samples used for the metrics.", short="-n")
    n_train: int = setting(20_000, "Training samples drawn from data.")
    batch_size: int = setting(512, "Minibatch size.")
    lr_d: float = setting(2e-4, "Discriminator Adam learning rate.")
    lr_g: float = setting(1e-4, "Generator Adam learning rate.")
    beta1: float = setting(0.5, "Adam beta1 (both networks).")
    beta2: float = setting(0.999, "Adam beta2 (both networks).")
    hidden: int = setting(256, "Hidden units of both networks.")
    depth: int = setting(2, "Hidden layers of both networks.")
    latent_dim: int = setting(2, "Generator latent dimension.")
    k_gen: int = setting(1, "Generator steps per discriminator step (k > 1: distillation loss).")
    eps: float = setting(0.05, "Distillation step size (k_gen > 1).")
    d_steps: int = setting(1, "Discriminator steps per generator step or particle round.")
    dt: float = setting(0.05, "Flow time per round (particles, exact).")
    solver_steps: int = setting(1, "Solver steps per round (particles, exact).")
    method: str = setting("euler", "Fixed-step solver method (particles, exact).", choices=FIXED_METHODS)

    def __post_init__(self) -> None:
        choose("mode", self.mode, MODES)
        choose("data", self.data, DATASETS)
        choose("target", self.target, TARGETS)
        check_int("eval_every", self.eval_every, 1)
        check_int("n", self.n, 2, 10**8)
        check_int("n_train", self.n_train, 2, 10**8)
        choose("method", self.method, FIXED_METHODS)
        self.hyper()  # validates the MonoFlow hyper-parameters

    def hyper(self) -> MonoFlowConfig:
        """The `MonoFlowConfig` part of these settings."""
        names = {f.name for f in fields(MonoFlowConfig)}
        return MonoFlowConfig(**{k: getattr(self, k) for k in names if hasattr(self, k)})


class _MonoFlowJob(SteppedUnits, ABC):
    """The loop shared by the modes: `eval_every` steps, then metrics of `current()` against `real`."""

    command = "monoflow"
    hint = "lower the learning rates, dt or batch noise"
    snapshot_every = 1
    run: Any
    real: torch.Tensor
    cover: str | None

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        self.config, self.seed, self.device = config, int(seed), device
        self.rng = make_generator(self.seed)

    @property
    def step_count(self) -> int:
        return self.run.step

    @property
    def step_total(self) -> int:
        return self.config.steps

    @property
    def step_chunk(self) -> int:
        return self.config.eval_every

    @abstractmethod
    def _steps(self, k: int) -> dict[str, float]:
        """Advance the run by `k` steps; return the last step's losses or times."""

    def current(self) -> torch.Tensor:
        return self.run.particles

    def advance(self) -> list[Row]:
        info = self._steps(self.next_chunk())
        fake = self.current()
        scale = 1.0 + float(self.real.abs().max())
        if not bool(torch.isfinite(fake).all()) or float(fake.abs().max()) > DIVERGED * scale:
            raise NumericalFailure(f"samples diverged by step {self.run.step}; {self.hint}")
        row = {"step": self.run.step, **info, **sample_metrics(self.real, fake, data=self.cover, seed=self.seed)}
        return [row]

    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict(self.rng)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.run.load_state_dict(state, self.rng)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise BadInput(f"stored state does not match this run (data shape or other settings): "
                           f"{str(exc).splitlines()[0]}") from None

    def samples(self) -> dict[str, Any]:
        return {"x": self.current().detach().float().cpu()}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        if plots_on:
            units = [u for u in range(1, self.units_done + 1) if snapshot_path(out, u).is_file()][-4:]
            panels = [(f"step {min(u * self.config.eval_every, self.config.steps)}",
                       np.load(snapshot_path(out, u))["x"]) for u in units]
            plots.sample_panels(out / "final.png", panels or [("final", self.current())], self.real)
        return {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}


class _DataJob(_MonoFlowJob):
    """Modes that learn from a data set: `n_train` training points and `n` reference points."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        self.x_train = sample_data(config.data, config.n_train, self.rng, device=device)
        self.real = sample_data(config.data, config.n, self.rng, device=device)
        self.cover = config.data


class GeneratorJob(_DataJob):
    """Generator mode: D and G trained alternately; samples are g(z) for a fixed latent draw."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        with seeded(self.seed):
            self.run = init_generator_run(self.x_train.shape[1], config.hyper(), device=device)

    def _steps(self, k: int) -> dict[str, float]:
        return train_steps(self.run, self.x_train, k, self.rng)

    def current(self) -> torch.Tensor:
        return sample_generator(self.run.generator, self.config.n, self.run.latent_dim,
                                generator=make_generator(self.seed + 1))


class ParticleJob(_DataJob):
    """Particle mode: the cloud starts at N(0, I) and follows the refitted discriminator's field."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        x0 = torch.randn(config.n, self.x_train.shape[1], generator=self.rng).to(device)
        self.run = init_particle_run(x0, config.hyper(), seed=self.seed)

    def _steps(self, k: int) -> dict[str, float]:
        return particle_steps(self.run, self.x_train, k, self.rng)


class ExactJob(_MonoFlowJob):
    """Exact mode: the analytic target's log-density against a Gaussian fit of the cloud."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        tg = analytic_target(config.target)
        x0 = tg.initial.sample(config.n, self.rng).float().to(device)
        self.real = tg.sample(config.n, self.rng).float().to(device)
        self.cover = "ring" if config.target == "gmm-ring" else None
        self.run = ExactRun(config.hyper(), x0, tg.log_prob)

    def _steps(self, k: int) -> dict[str, float]:
        return exact_steps(self.run, k)


def build(config: MonoFlowJobConfig, seed: int, device: torch.device) -> _MonoFlowJob:
    """The job class of `config.mode`."""
    return {"generator": GeneratorJob, "particles": ParticleJob, "exact": ExactJob}[config.mode](
        config, seed, device)


SPEC = JobSpec("monoflow", MonoFlowJobConfig, build,
               "MonoFlow: particles follow dx/dt = ∇h(d(x)), d the discriminator's log density ratio.")
