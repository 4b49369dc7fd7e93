"""The `optimize simplex` and `optimize particles` jobs.

Simplex: one unit = `chunk` iterations of a first-order method (stops early once the Frank–Wolfe gap ≤ tol);
outputs `final.npz` (p, gap, iters, converged), `objective.png`, `distribution.png`.
Particles: one unit = `log_every` steps of a particle method; rows are the trace (objective, mean, var, mmd2);
outputs `final.npz` (x, x0, snapshots), `objective.png`, `snapshots.png`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import check_float, check_int, parse_matrix, parse_vector, setting
from gentool.core.errors import NumericalFailure, choose, require
from gentool.core.io import atomic_save_npz
from gentool.core.nn import make_generator
from gentool.core.probspace import (
    FW_STEPS,
    METHODS,
    OBJECTIVES,
    PARTICLE_METHODS,
    TARGETS,
    FreeEnergy,
    check_simplex,
    kl_energy,
    make_objective,
    make_target,
    run_particles,
)
from gentool.core.probspace.simplex import SimplexRun
from gentool.core.run.contract import JobSpec, Row, SteppedUnits
from gentool.core.run.rundir import snapshot_path
from gentool.core.solvers import FIXED_METHODS

SIMPLEX_CHUNK = 100
DIVERGED = 1e6  # particles this many times farther out than the start and the target: blown up


def _vector(value: Any) -> tuple[float, ...]:
    return parse_vector(value, "vector")


@dataclass(frozen=True)
class SimplexConfig:
    """Minimise a convex objective over the probability simplex (SPEC §4)."""

    objective: str = setting("sparsemax", f"Built-in ({', '.join(OBJECTIVES)}) or module:function returning "
                             "F, grad or (F, grad).")
    x: tuple[float, ...] | None = setting((1.0, 0.5, -1.0), "Vector x (sparsemax/softmax), target q (kl) or b "
                                          "(quadratic); fixes the dimension of a module:function objective: "
                                          "'1,0.5,-1' or a .npy/.txt/.csv file.", parse=_vector, metavar="VECTOR")
    matrix: tuple[tuple[float, ...], ...] | None = setting(
        None, "Matrix A (quadratic) or returns R (portfolio): 'a,b;c,d' or a .npy/.txt/.csv file.",
        parse=parse_matrix, metavar="MATRIX")
    tau: float = setting(1.0, "Entropy temperature of the softmax objective.")
    p0: tuple[float, ...] | None = setting(None, "Initial point on the simplex (default uniform).", parse=_vector,
                                           metavar="VECTOR")
    method: str = setting("frank-wolfe", "Optimiser.", choices=tuple(METHODS))
    step: str = setting("open-loop", "Frank-Wolfe step rule.", choices=FW_STEPS)
    lr: float = setting(0.5, "Step size of the gradient methods.")
    iters: int = setting(1000, "Maximum iterations.")
    tol: float = setting(1e-8, "Stop once the gap p·∇F − min ∇F <= tol (negative: never stop early).")
    log_every: int = setting(1, "Trace every this many iterations.")

    def __post_init__(self) -> None:
        choose("method", self.method, METHODS)
        choose("step", self.step, FW_STEPS)
        check_float("tau", self.tau, 0.0, lo_open=True)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("tol", self.tol)
        check_int("iters", self.iters, 0, 10**9)
        check_int("log_every", self.log_every, 1)
        obj = self.make_objective()
        uniform = torch.full((obj.dim,), 1.0 / obj.dim, dtype=torch.float64)
        obj.value(uniform), obj.grad(uniform)  # a custom objective that fails or returns junk fails here
        if self.p0 is not None:
            start = check_simplex(torch.tensor(self.p0, dtype=torch.float64), "initial point p0")
            require(start.numel() == obj.dim, f"p0 has {start.numel()} entries, the objective has {obj.dim}")

    def make_objective(self) -> Any:
        vec = None if self.x is None else torch.tensor(self.x, dtype=torch.float64)
        if vec is None and self.p0 is not None:
            vec = torch.tensor(self.p0, dtype=torch.float64)
        matrix = None if self.matrix is None else torch.tensor(self.matrix, dtype=torch.float64)
        return make_objective(self.objective, vec, tau=self.tau, matrix=matrix)


class SimplexJob:
    """State: the `SimplexRun` (point, iteration, convergence)."""

    command = "optimize simplex"
    hint = "lower lr"

    def __init__(self, config: SimplexConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device("cpu")
        p0 = None if config.p0 is None else torch.tensor(config.p0, dtype=torch.float64)
        self.run = SimplexRun(config.make_objective(), config.method, p0=p0, iters=config.iters, tol=config.tol,
                              lr=config.lr, step=config.step, log_every=config.log_every)

    @property
    def units_total(self) -> int:
        return math.ceil((self.config.iters + 1) / SIMPLEX_CHUNK)

    @property
    def units_done(self) -> int:
        return math.ceil(self.run.t / SIMPLEX_CHUNK) if not self.run.finished else self.units_total

    @property
    def done(self) -> bool:
        return self.run.finished

    def advance(self) -> list[Row]:
        rows = self.run.iterate(SIMPLEX_CHUNK)
        if not bool(torch.isfinite(self.run.p).all()):
            raise NumericalFailure(f"the iterate became non-finite at iteration {self.run.t}; lower lr")
        return rows

    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run.load_state_dict(state)

    def samples(self) -> dict[str, Any]:
        return {"p": self.run.p}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        run = self.run
        atomic_save_npz(out / "final.npz", p=run.p.numpy(), gap=run.gap, iters=run.t, converged=run.converged)
        if plots_on:
            plots.curves(out / "objective.png", {"trace": rows}, "iter", ["objective", "gap"], log_keys=["gap"])
            plots.bar(out / "distribution.png", run.p)
        return {"p": ", ".join(f"{v:.6g}" for v in run.p.tolist()), "gap": run.gap, "iters": run.t,
                "converged": run.converged}


@dataclass(frozen=True)
class ParticlesConfig:
    """Move particles along a Wasserstein gradient flow (KL to a target, potential, interaction, entropy)."""

    target: str = setting("gmm-ring", "Target density, or none (no potential, e.g. the heat flow).",
                          choices=(*TARGETS, "none"))
    method: str = setting("langevin", "Particle method.", choices=PARTICLE_METHODS)
    n: int = setting(1000, "Number of particles.", short="-n")
    steps: int = setting(500, "Number of steps (a resumed run may raise it).", extendable=True)
    step_size: float = setting(0.01, "Step size (flow time per step).")
    entropy: float = setting(1.0, "Entropy weight eps (1 = KL to the target).")
    interaction: float = setting(0.0, "Quadratic interaction W(z) = a|z|^2/2 weight a.")
    init_mean: tuple[float, ...] | None = setting(None, "Mean of the Gaussian initial particles (default 0).",
                                                  parse=_vector, metavar="VECTOR")
    init_std: float = setting(1.0, "Std of the Gaussian initial particles.")
    dim: int = setting(2, "Dimension when target is none.")
    bandwidth: float | None = setting(None, "Kernel bandwidth (default: per-method heuristic).")
    solver: str = setting("euler", "Solver-core method for kde-flow.", choices=FIXED_METHODS)
    log_every: int = setting(10, "Steps per unit: trace row and checkpoint every this many steps.")

    def __post_init__(self) -> None:
        choose("target", self.target, (*TARGETS, "none"))
        choose("method", self.method, PARTICLE_METHODS)
        choose("solver", self.solver, FIXED_METHODS)
        check_int("n", self.n, 2, 10**8)
        check_int("steps", self.steps, 0, 10**9)
        check_int("log_every", self.log_every, 1)
        check_int("dim", self.dim, 1, 10_000)
        check_float("step_size", self.step_size, 0.0, lo_open=True)
        check_float("entropy", self.entropy, 0.0)
        check_float("interaction", self.interaction)
        check_float("init_std", self.init_std, 0.0, lo_open=True)
        if self.bandwidth is not None:
            check_float("bandwidth", self.bandwidth, 0.0, lo_open=True)
        if self.target == "none":
            require(self.entropy > 0 or self.interaction != 0, "target none needs entropy > 0 or an interaction")
        require(self.method != "svgd" or self.entropy > 0, "svgd needs a positive entropy weight")
        if self.method == "mmd-flow":
            require(self.target != "none" and make_target(self.target).sampler is not None,
                    f"mmd-flow needs a target with an exact sampler, not {self.target!r}")
        if self.init_mean is not None:
            require(len(self.init_mean) == self.d, f"init_mean has {len(self.init_mean)} entries, the target has "
                    f"dimension {self.d}")

    @property
    def d(self) -> int:
        return self.dim if self.target == "none" else make_target(self.target).dim


class ParticlesJob(SteppedUnits):
    """State: particles, step, the generator's state; the target sample `ref` is redrawn from the seed."""

    command = "optimize particles"
    hint = "reduce step_size"

    def __init__(self, config: ParticlesConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.target = None if config.target == "none" else make_target(config.target)
        base = FreeEnergy() if self.target is None else kl_energy(self.target)
        self.energy = FreeEnergy(base.potential, config.interaction, config.entropy, self.target)
        d = config.d
        mean = torch.zeros(d, dtype=torch.float64) if config.init_mean is None else torch.tensor(config.init_mean)
        self.g = make_generator(seed)
        self.x0 = (mean + config.init_std * torch.randn(config.n, d, generator=self.g, dtype=torch.float64)
                   ).to(self.device)
        self.ref = (self.target.sample(config.n, self.g).to(self.device)
                    if self.target is not None and self.target.sampler is not None else None)
        self.x, self.step = self.x0.clone(), 0
        self.snapshot_every = max(1, self.units_total // 4)

    @property
    def step_count(self) -> int:
        return self.step

    @property
    def step_total(self) -> int:
        return self.config.steps

    @property
    def step_chunk(self) -> int:
        return self.config.log_every

    def advance(self) -> list[Row]:
        cfg = self.config
        k = self.next_chunk()
        res = run_particles(self.energy, self.x, cfg.method, steps=k, step_size=cfg.step_size, generator=self.g,
                            bandwidth=cfg.bandwidth, target_samples=self.ref, solver=cfg.solver, log_every=k)
        first, last = res.trace[0], res.trace[-1]
        self.x, self.step = res.x, self.step + k
        scale = 1.0 + float(self.x0.abs().max()) + (float(self.ref.abs().max()) if self.ref is not None else 0.0)
        if not bool(torch.isfinite(self.x).all()) or float(self.x.abs().max()) > DIVERGED * scale:
            raise NumericalFailure(f"particles diverged by step {self.step} (max |x| "
                                   f"{float(self.x.abs().max()):.3g}); reduce step_size (now {cfg.step_size:g})")
        last = {**last, "step": self.step, "t": self.step * cfg.step_size}
        return [first, last] if self.step == k else [last]

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "step": self.step, "rng": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.step = state["x"].to(self.device), int(state["step"])
        self.g.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        return {"x": self.x, "step": self.step}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        snaps = {0: self.x0.cpu().numpy()}
        for unit in range(1, self.units_done + 1):
            if snapshot_path(out, unit).is_file():
                data = np.load(snapshot_path(out, unit))
                snaps[int(data["step"])] = data["x"]
        snaps[self.step] = self.x.cpu().numpy()
        steps = sorted(snaps)
        atomic_save_npz(out / "final.npz", x=self.x.cpu().numpy(), x0=self.x0.cpu().numpy(),
                        snapshot_steps=np.array(steps), snapshots=np.stack([snaps[s] for s in steps]))
        if plots_on:
            keys = ["objective", "mmd2"] if self.ref is not None else ["objective"]
            plots.curves(out / "objective.png", {"trace": rows}, "step", keys)
            plots.sample_panels(out / "snapshots.png", [(f"step {s}", snaps[s]) for s in steps], self.ref)
        return {k: v for k, v in rows[-1].items() if k in ("objective", "mmd2", "t")}


SIMPLEX = JobSpec("optimize simplex", SimplexConfig, SimplexJob,
                  "Minimise a convex objective over the probability simplex.")
PARTICLES = JobSpec("optimize particles", ParticlesConfig, ParticlesJob,
                    "Move particles along a Wasserstein gradient flow (KL to a target, potential/interaction/"
                    "entropy).")
