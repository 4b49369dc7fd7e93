"""The `monoflow` job: a MonoFlow generator, a particle cloud, or an exact-ratio flow; one unit = `eval_every`
steps (rounds), followed by metrics of the current samples against reference data.

The mode is dispatched once, when the job is built, to one of three small job classes sharing the loop.
Data: a bundled set, a Gaussian N(data_mean, data_cov), or an array file; real minibatches come from a fixed
training sample, or (`fresh_real`) fresh from the distribution at every discriminator step. Outputs besides the
run contract's: `samples.npz` and `snapshots/*.npz` at every evaluation (the samples `x` that the metrics score,
the `step`, and an affine generator's `mean`, `matrix` and `cov` = matrix matrixᵀ), `reference.npz` (the real
points the metrics compare with) and `final.png` (the last four snapshots over the data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from gentool.core import plots
from gentool.core.config import (
    check_int,
    float64_tensor,
    is_array_file,
    matrix_parser,
    read_array,
    setting,
    vector_parser,
)
from gentool.core.data import DATASETS, sample_data
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.io import atomic_save_npz, check_allocation
from gentool.core.metrics.gaussian import mean_cov
from gentool.core.monoflow import (
    H_FUNCTIONS,
    AffineGenerator,
    MonoFlowConfig,
    get_h,
    init_generator_run,
    sample_generator,
    train_steps,
)
from gentool.core.monoflow.data import FixedSample, FreshSampler, RealData
from gentool.core.monoflow.evaluate import sample_metrics
from gentool.core.monoflow.exact import TARGETS, analytic_target
from gentool.core.monoflow.particles import ExactRun, exact_steps, init_particle_run, particle_steps
from gentool.core.nn import ACTIVATIONS, make_generator, seeded
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row, SteppedUnits
from gentool.core.run.rundir import read_snapshot, snapshot_path
from gentool.core.solvers import FIXED_METHODS

MODES = ("generator", "particles", "exact")
GENERATORS = ("mlp", "affine")
AFFINE = {"mode": ("generator",), "generator": ("affine",)}  # the settings of the affine generator apply there
EPS_DEFAULT = 0.05  # the distillation step size eps
LEARNED = {"mode": ("generator", "particles")}  # data and discriminator settings: not in exact mode


def h_taking(param: str) -> tuple[str, ...]:
    """The h functions whose parameter is `param` (shift, rate)."""
    return tuple(name for name, h in H_FUNCTIONS.items() if h.param == param)

DATA = (*DATASETS, "gaussian")
N_TRAIN = 20_000
LATENT = 2
EXP_RATE = 1.5  # the official 2-D toy's h = exp(1.5 d)
DIVERGED = 1e6  # samples this many times farther out than the data: the flow has blown up





def network_bytes(hidden: int, depth: int, batch: int, n: int) -> float:
    """Rough float32 memory of the two MLPs (an estimate to refuse hopeless sizes up front): weights counted 4
    times (weights, gradients, two Adam moments) for both nets, `depth hidden²` each, plus the activations of
    `max(batch, n)` points through `depth + 2` layers (forward and backward)."""
    return 4.0 * (2 * 4 * depth * hidden**2 + 2 * 3 * max(batch, n) * hidden * (depth + 2))


@dataclass(frozen=True)
class MonoFlowJobConfig:
    """A MonoFlow run (SPEC §3): the mode, its data or target, and the `MonoFlowConfig` hyper-parameters."""

    mode: str = setting("generator", "generator: train g(z); particles: move a cloud along the estimated "
                        "field; exact: analytic log-ratio (Gaussian fit of q_t).", choices=MODES)
    data: str = setting("ring", f"Data (generator and particles modes): {', '.join(DATA)} (N(data_mean, "
                        "data_cov)), or an array file (n, d): .npy/.npz/.csv/.txt, FILE.npz:NAME.", metavar="NAME",
                        applies=LEARNED)
    data_mean: tuple[float, ...] | None = setting(None, "Mean of the gaussian data (default 0).",
                                                  parse=vector_parser("data_mean"), metavar="VECTOR", applies=LEARNED)
    data_cov: tuple[tuple[float, ...], ...] | None = setting(
        None, "Covariance of the gaussian data (default I): 'a,b;c,d' or an array file; the official toy is "
        "'1,0.8;0.8,0.89'.", parse=matrix_parser("data_cov"), metavar="MATRIX", applies=LEARNED)
    fresh_real: bool = setting(False, "Draw a fresh real minibatch from the data distribution at every "
                               "discriminator step (as the official 2-D toy) instead of from n_train fixed points.")
    target: str = setting("gaussian-1d", "Analytic target (exact mode).", choices=TARGETS,
                          applies={"mode": ("exact",)})
    h: str = setting("logit", "Monotone h of the flow dx/dt = ∇h(d(x)).", choices=tuple(H_FUNCTIONS))
    shift: float = setting(0.0, "Shift C of the vanilla h = softplus(d + C) (the official code uses 5).",
                           applies={"h": h_taking("shift")})
    rate: float | None = setting(None, f"Rate a of h = exp(a d) (h exp; default {EXP_RATE:g}, the official toy's).",
                                 applies={"h": h_taking("rate")})
    steps: int = setting(2000, "Generator steps or particle rounds (a resumed run may raise it).",
                         extendable=True)
    eval_every: int = setting(500, "Steps per unit: metrics, snapshot and checkpoint every this many.")
    n: int = setting(2000, "Particles (particles, exact) and samples used for the metrics.", short="-n")
    n_train: int | None = setting(None, f"Fixed training points drawn from the data (default {N_TRAIN}; not with "
                                  "fresh_real or a data file).", applies=LEARNED)
    batch_size: int = setting(512, "Minibatch size.", applies=LEARNED)
    lr_d: float = setting(2e-4, "Discriminator Adam learning rate.", applies=LEARNED)
    lr_g: float = setting(1e-4, "Generator Adam learning rate.", applies={"mode": ("generator",)})
    beta1: float = setting(0.5, "Adam beta1 (both networks).", applies=LEARNED)
    beta2: float = setting(0.999, "Adam beta2 (both networks).", applies=LEARNED)
    hidden: int = setting(256, "Hidden units of both networks (per hidden layer).", applies=LEARNED)
    depth: int = setting(2, "Hidden layers of both networks.", applies=LEARNED)
    activation: str = setting("leaky_relu", "Hidden activation of both networks (leaky_relu: slope 0.01; "
                              "leaky_relu_0.2: the official code's).", choices=tuple(ACTIVATIONS), applies=LEARNED)
    generator: str = setting("mlp", "Generator (generator mode): mlp, or affine g(z) = mean + matrix z.",
                             choices=GENERATORS, applies={"mode": ("generator",)})
    generator_mean: tuple[float, ...] | None = setting(None, "Initial mean of the affine generator (default 1, as "
                                                       "the official toy).", parse=vector_parser("generator_mean"),
                                                       metavar="VECTOR", applies=AFFINE)
    generator_matrix: tuple[tuple[float, ...], ...] | None = setting(
        None, "Initial matrix (d, k) of the affine generator (default I; k is its latent dimension).",
        parse=matrix_parser("generator_matrix"), metavar="MATRIX", applies=AFFINE)
    latent_dim: int | None = setting(None, f"Latent dimension of the mlp generator (default {LATENT}).",
                                     applies={"mode": ("generator",), "generator": ("mlp",)})
    k_gen: int = setting(1, "Generator steps per discriminator step (k > 1: distillation loss).",
                         applies={"mode": ("generator",)})
    eps: float = setting(EPS_DEFAULT, "Distillation step size (k_gen > 1).", applies={"mode": ("generator",)})
    d_steps: int = setting(1, "Discriminator steps per generator step or particle round.", applies=LEARNED)
    dt: float = setting(0.05, "Flow time per round (particles, exact).", applies={"mode": ("particles", "exact")})
    solver_steps: int = setting(1, "Solver steps per round (particles, exact).",
                                applies={"mode": ("particles", "exact")})
    method: str = setting("euler", "Fixed-step solver method (particles, exact).", choices=FIXED_METHODS,
                          applies={"mode": ("particles", "exact")})

    def __post_init__(self) -> None:
        choose("mode", self.mode, MODES)
        choose("target", self.target, TARGETS)
        choose("generator", self.generator, GENERATORS)
        check_int("eval_every", self.eval_every, 1)
        check_int("n", self.n, 6, 10**8)  # precision/recall use the 5 nearest neighbours of each sample
        if self.n_train is not None:
            check_int("n_train", self.n_train, 2, 10**8)
        if self.latent_dim is not None:
            check_int("latent_dim", self.latent_dim, 1, 10**6)
        choose("method", self.method, FIXED_METHODS)
        self._check_data()
        self._check_generator()
        self.hyper()  # validates the MonoFlow hyper-parameters
        self._check_h()

    def _check_data(self) -> None:
        from_file = is_array_file(self.data)
        if not from_file:
            choose("data", self.data, DATA)
        require(self.data == "gaussian" or (self.data_mean is None and self.data_cov is None),
                f"data_mean and data_cov set the gaussian data, not {self.data!r}")
        require(not (from_file and self.fresh_real), "fresh_real needs a data distribution; a data file is a fixed "
                "sample")
        require(not (self.n_train is not None and (from_file or self.fresh_real)),
                "n_train applies to a fixed sample drawn from the data (not with fresh_real or a data file)")
        require(self.mode != "exact" or not self.fresh_real, "fresh_real applies to the generator and particles "
                "modes (exact mode has an analytic target)")
        if self.data == "gaussian":
            self.gaussian_data()
        if from_file:
            self.file_data()

    def _check_generator(self) -> None:
        affine = self.generator == "affine"
        require(self.mode == "generator" or not affine, f"generator affine applies to generator mode, not {self.mode}")
        require(affine or (self.generator_mean is None and self.generator_matrix is None),
                "generator_mean and generator_matrix set the affine generator (generator affine)")
        require(not (affine and self.latent_dim is not None), "latent_dim is that of the mlp generator; the affine "
                "generator's is the number of columns of generator_matrix")
        require(self.k_gen > 1 or self.eps == EPS_DEFAULT, f"eps applies when k_gen > 1 (the distillation step); "
                f"with k_gen {self.k_gen} the generator loss has no step size")
        if affine:
            self.affine_generator(self.data_dim())

    def _check_h(self) -> None:
        param = get_h(self.h).param
        require(param == "shift" or self.shift == 0.0, f"shift applies to h vanilla, not {self.h}")
        require(param == "rate" or self.rate is None, f"rate applies to h exp, not {self.h}")

    def hyper(self) -> MonoFlowConfig:
        """The `MonoFlowConfig` part of these settings (unset latent_dim and rate take their defaults)."""
        names = {f.name for f in fields(MonoFlowConfig)} - {"latent_dim", "rate"}
        values = {k: getattr(self, k) for k in names if hasattr(self, k)}
        return MonoFlowConfig(**values, latent_dim=self.latent_dim or LATENT,
                              rate=EXP_RATE if self.rate is None else self.rate)

    def gaussian_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, Cholesky factor) of the gaussian data, checked."""
        d = len(self.data_mean) if self.data_mean is not None else (len(self.data_cov) if self.data_cov else 2)
        mean = float64_tensor(self.data_mean, torch.zeros(d, dtype=torch.float64))
        cov = float64_tensor(self.data_cov, torch.eye(d, dtype=torch.float64))
        require(cov.shape == (d, d), f"data_cov must be {d} x {d} to match data_mean, got {tuple(cov.shape)}")
        require(bool(torch.allclose(cov, cov.T)), "data_cov must be symmetric")
        chol, info = torch.linalg.cholesky_ex(cov)
        require(int(info) == 0, "data_cov must be positive definite")
        return mean, chol

    def file_data(self) -> torch.Tensor:
        """The data file's points (n, d), checked finite with n >= 2."""
        x = torch.as_tensor(read_array(self.data, "data"), dtype=torch.float32)
        require(x.dim() == 2 and x.shape[0] >= 2, f"data must hold an (n >= 2, d) array, got shape {tuple(x.shape)}")
        require(bool(torch.isfinite(x).all()), "data contains NaN/inf")
        return x

    def data_dim(self) -> int:
        if is_array_file(self.data):
            return int(self.file_data().shape[1])
        if self.data == "gaussian":
            return int(self.gaussian_data()[0].numel())
        return 64 if self.data == "digits" else 2

    def affine_generator(self, d: int) -> AffineGenerator:
        """`g(z) = mean + matrix z` from generator_mean (default 1) and generator_matrix (default I), checked."""
        mean = float64_tensor(self.generator_mean, torch.ones(d, dtype=torch.float64))
        matrix = float64_tensor(self.generator_matrix, torch.eye(d, dtype=torch.float64))
        require(mean.numel() == d, f"generator_mean has {mean.numel()} entries, the data has dimension {d}")
        require(matrix.shape[0] == d, f"generator_matrix has {matrix.shape[0]} rows, the data has dimension {d}")
        return AffineGenerator(mean, matrix)


class _MonoFlowJob(SteppedUnits, Reports, ABC):
    """The loop shared by the modes: `eval_every` steps, then metrics of `current()` against `real`."""

    command = "monoflow"
    hint = "lower the learning rates, dt or batch noise"
    snapshot_every = 1
    run: Any
    real: torch.Tensor
    cover: str | None

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        self.config, self.seed, self.device = config, int(seed), device
        c = config
        check_allocation(network_bytes(c.hidden, c.depth, c.batch_size, c.n), f"monoflow networks (hidden={c.hidden}, "
                         f"depth={c.depth}, batch_size={c.batch_size}, n={c.n})", device)
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
        row = {"step": self.run.step, **info, **sample_metrics(self.real, fake, data=self.cover, seed=self.seed),
               **self.moment_errors(fake)}
        return [row]

    def moment_errors(self, fake: torch.Tensor) -> Row:
        """Moment errors against a Gaussian data distribution ({} otherwise)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict(self.rng)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.run.load_state_dict(state, self.rng)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise BadInput(f"stored state does not match this run (data shape or other settings): "
                           f"{str(exc).splitlines()[0]}") from None

    def samples(self) -> dict[str, Any]:
        """What the metrics score: the samples x (n, d) at this step."""
        return {"x": self.current().detach().float().cpu(), "step": self.run.step}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        atomic_save_npz(out / "reference.npz", x=self.real.detach().float().cpu().numpy())
        if plots_on:
            units = [u for u in range(1, self.units_done + 1) if snapshot_path(out, u).is_file()][-4:]
            panels = [(f"step {min(u * self.config.eval_every, self.config.steps)}",
                       read_snapshot(out, u)["x"]) for u in units]
            with one_step(self.progress, "figure"):
                plots.sample_panels(out / "final.png", panels or [("final", self.current())], self.real,
                                    reference_label="real data")
        return {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}


def _sampler(config: MonoFlowJobConfig, device: torch.device) -> Callable[[int, torch.Generator], torch.Tensor]:
    """`draw(n, generator)` of the data distribution (a bundled set or the gaussian data), float32 on device."""
    if config.data == "gaussian":
        mean, chol = config.gaussian_data()

        def gaussian(n: int, g: torch.Generator) -> torch.Tensor:
            z = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
            return (mean + z @ chol.T).to(device=device, dtype=torch.float32)

        return gaussian
    return lambda n, g: sample_data(config.data, n, g, device=device)


def real_data(config: MonoFlowJobConfig, rng: torch.Generator, device: torch.device) -> tuple[RealData, torch.Tensor]:
    """The real data the discriminator sees and the `n` reference points the metrics compare with: a data file
    (all rows train; the reference is n of them, or all), a fresh sampler, or `n_train` fixed points."""
    if is_array_file(config.data):
        x = config.file_data().to(device)
        ref = x[torch.randperm(len(x), generator=rng)[:config.n].to(device)] if len(x) > config.n else x
        return FixedSample(x), ref
    draw = _sampler(config, device)
    if config.fresh_real:
        return FreshSampler(draw, config.data_dim(), device), draw(config.n, rng)
    x_train = draw(config.n_train or N_TRAIN, rng)
    return FixedSample(x_train), draw(config.n, rng)


class _DataJob(_MonoFlowJob):
    """Modes that learn from data: `self.data` feeds the discriminator, `self.real` (n points) the metrics."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        self.data, self.real = real_data(config, self.rng, device)
        self.cover = config.data if config.data in ("ring", "grid") else None
        self.gaussian = (tuple(t.to(device) for t in config.gaussian_data()) if config.data == "gaussian"
                         else None)

    def moment_errors(self, fake: torch.Tensor) -> Row:
        """For gaussian data: the Euclidean mean error and Frobenius covariance error of the samples."""
        if self.gaussian is None:
            return {}
        mean, chol = self.gaussian
        m, c = mean_cov(fake.double())
        return {"mean_err": float((m - mean).norm()), "cov_err": float((c - chol @ chol.T).norm())}


class GeneratorJob(_DataJob):
    """Generator mode: D and G trained alternately; samples are g(z) for a fixed latent draw."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        init = config.affine_generator(self.data.dim) if config.generator == "affine" else None
        with seeded(self.seed):
            self.run = init_generator_run(self.data.dim, config.hyper(), device=device, init_generator=init)

    def _steps(self, k: int) -> dict[str, float]:
        return train_steps(self.run, self.data, k, self.rng)

    def current(self) -> torch.Tensor:
        return sample_generator(self.run.generator, self.config.n, self.run.latent_dim,
                                generator=make_generator(self.seed + 1))

    def affine(self) -> dict[str, torch.Tensor]:
        """The affine generator's law N(mean, matrix matrixᵀ) ({} for an mlp generator)."""
        gen = self.run.generator
        if not isinstance(gen, AffineGenerator):
            return {}
        mean, matrix = gen.mean.detach().cpu(), gen.matrix.detach().cpu()
        return {"mean": mean, "matrix": matrix, "cov": matrix @ matrix.T}

    def moment_errors(self, fake: torch.Tensor) -> Row:
        law = self.affine()
        if self.gaussian is None or not law:
            return super().moment_errors(fake)
        mean, chol = (t.cpu() for t in self.gaussian)
        return {"mean_err": float((law["mean"].double() - mean).norm()),
                "cov_err": float((law["cov"].double() - chol @ chol.T).norm())}

    def samples(self) -> dict[str, Any]:
        return super().samples() | self.affine()


class ParticleJob(_DataJob):
    """Particle mode: the cloud starts at N(0, I) and follows the refitted discriminator's field."""

    def __init__(self, config: MonoFlowJobConfig, seed: int, device: torch.device) -> None:
        super().__init__(config, seed, device)
        x0 = torch.randn(config.n, self.data.dim, generator=self.rng).to(device)
        self.run = init_particle_run(x0, config.hyper(), seed=self.seed)

    def _steps(self, k: int) -> dict[str, float]:
        return particle_steps(self.run, self.data, k, self.rng)


class ExactJob(_MonoFlowJob):
    """Exact mode: the analytic target's log-density against a Gaussian fit of the cloud."""

    hint = "lower dt or raise solver_steps"

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
