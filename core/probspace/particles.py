"""Wasserstein gradient flows with particles, each method on the solver core (`batch_odeint`, `sdeint`).

Free energy `F[p] = ∫V p + ½∫∫W(x − y) p(x) p(y) + ε ∫p log p`, with quadratic interaction
`W(z) = a‖z‖²/2`; KL(p‖π) is the case `V = −log π`, ε = 1. Its Wasserstein gradient flow
`∂p/∂t = ∇·(p ∇δF/δp)` moves particles along `dx/dt = −∇V(x) − a(x − x̄) − ε∇log p_t(x)`.

Time: `t` is always the flow time of the objective the method discretises (steps × step size = t):

- `kde-flow`: the flow above (Fokker–Planck time of F), `∇log p_t` from a Gaussian KDE of the particles
  (bandwidth matrix h²Cov(x), Silverman's h), which biases covariances low by a factor `1/(1 + h²)`;
- `langevin`: the same flow in law (Fokker–Planck time), Euler–Maruyama
  `x ← x − η(∇V + a(x − x̄)) + √(2εη) ξ` (its stationary law is O(η) off);
- `svgd`: the Stein variational gradient flow of KL(p‖π_eff), `π_eff ∝ exp(−(V + W*p)/ε)`:
  `dx/dt = E_{y∼p}[k(y, x)∇log π_eff(y) + ∇_y k(y, x)]` (the Wasserstein velocity smoothed by the kernel,
  so its time runs slower than Fokker–Planck time: by about E[k] ≪ 1);
- `mmd-flow`: the Wasserstein gradient flow of ½MMD²(p, π), `dx/dt = −∇f(x)`, f the witness between the
  particles and `target_samples` drawn once from π (energy kernel −‖x − y‖ by default, or Gaussian).

Each method has a default time and step that reach the 2-D targets from N(0, I) (see `DEFAULTS`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from gentool.core.errors import NumericalFailure, choose, require
from gentool.core.probspace.closed_forms import QuadraticFlow
from gentool.core.probspace.kernels import (
    FLOW_MEDIAN_POINTS,
    energy_witness_grad,
    kde_log_density,
    kde_score,
    median_bandwidth,
    mmd_witness_grad,
    silverman_factor,
    svgd_field,
    whitened_kde_score,
)
from gentool.core.probspace.targets import Target, autograd_score
from gentool.core.solvers import FIXED_METHODS, NonFiniteState, batch_odeint, sdeint


@dataclass(frozen=True)
class FreeEnergy:
    """`F[p] = ∫V p + (a/2)∫∫‖x − y‖² p p + ε∫p log p`; `potential` V (n, d) -> (n,) or None (V = 0)."""

    potential: Callable[[torch.Tensor], torch.Tensor] | None = None
    interaction: float = 0.0
    entropy: float = 1.0
    target: Target | None = None

    def drift(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic part of the velocity: `−∇V(x) − a(x − x̄)` (since ∇W*p(x) = a(x − mean))."""
        v = torch.zeros_like(x) if self.potential is None else autograd_score(lambda z: -self.potential(z), x)
        if self.interaction:
            v = v - self.interaction * (x - x.mean(0, keepdim=True))
        return v

    def value(self, x: torch.Tensor) -> float:
        """Particle estimate of F: `mean V + (a/2) mean‖xᵢ − xⱼ‖² + ε mean log p̂(xᵢ)` (p̂ the KDE with
        bandwidth matrix h²Cov(x), Silverman's h)."""
        n, d = x.shape
        out = 0.0 if self.potential is None else float(self.potential(x).mean())
        if self.interaction:
            out += 0.5 * self.interaction * float((torch.cdist(x, x) ** 2).mean())
        if self.entropy:
            out += self.entropy * float(kde_log_density(x, silverman_factor(n, d)).mean())
        return out

    def quadratic(self, dim: int) -> QuadraticFlow | None:
        """The exact moment dynamics in dimension `dim` when V is quadratic (no potential, or KL to a Gaussian
        target), else None."""
        zeros = torch.zeros(dim, dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
        if self.potential is None:
            return QuadraticFlow(*zeros, self.interaction, self.entropy)
        if self.target is None or self.target.moments is None:
            return None
        mean, cov = self.target.moments
        return QuadraticFlow(torch.linalg.inv(cov), mean, self.interaction, self.entropy)


def kl_energy(target: Target) -> FreeEnergy:
    """`KL(p‖π)` up to a constant: V = −log π, ε = 1."""
    return FreeEnergy(potential=lambda x: -target.log_prob(x), entropy=1.0, target=target)


# ---- methods: one small type each ------------------------------------------------------------------------

class FlowMethod(ABC):
    """A particle method: the velocity of the cloud and how it is integrated over a time grid."""

    name: ClassVar[str]
    fokker_planck: ClassVar[bool] = False  # its time is the Fokker–Planck time of F (exact moments apply)
    solver: str

    @abstractmethod
    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic velocity of the particle cloud x (n, d)."""

    def integrate(self, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Solve over `grid` with the fixed-step `solver` (the cloud is one sample: its particles interact;
        graph="off": the fields read bandwidths on the host)."""
        field_ = lambda t, z: self.velocity(z[0])[None]  # noqa: E731
        return batch_odeint(field_, x[None], grid, method=self.solver, graph="off").x[0]


@dataclass(frozen=True)
class KdeFlow(FlowMethod):
    """`dx/dt = −∇V − a(x − x̄) − ε∇log p̂`, p̂ the KDE of the particles: bandwidth matrix h²Cov(x) with
    Silverman's h (`bandwidth=None`), or the isotropic kernel of width `bandwidth`."""

    name: ClassVar[str] = "kde-flow"
    fokker_planck: ClassVar[bool] = True
    energy: FreeEnergy
    bandwidth: float | None = None
    solver: str = "euler"

    def score(self, x: torch.Tensor) -> torch.Tensor:
        if self.bandwidth is not None:
            return kde_score(x, self.bandwidth)
        return whitened_kde_score(x, silverman_factor(*x.shape))

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        v = self.energy.drift(x)
        return v - self.energy.entropy * self.score(x) if self.energy.entropy else v


@dataclass(frozen=True)
class Langevin(FlowMethod):
    """Unadjusted Langevin: Euler–Maruyama for `dx = (−∇V − a(x − x̄)) dt + √(2ε) dW`."""

    name: ClassVar[str] = "langevin"
    fokker_planck: ClassVar[bool] = True
    energy: FreeEnergy
    solver: str = "euler"

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy.drift(x)

    def integrate(self, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        field_ = lambda t, z: self.velocity(z[0])[None]  # noqa: E731
        return sdeint(field_, x[None], grid, math.sqrt(2 * self.energy.entropy), generator=generator,
                      graph="off").x[0]


@dataclass(frozen=True)
class Svgd(FlowMethod):
    """Stein variational gradient flow towards `π_eff ∝ exp(−(V + W*p)/ε)` (`svgd_field` with the score
    `drift/ε`); `bandwidth=None`: Liu & Wang's median rule at every evaluation."""

    name: ClassVar[str] = "svgd"
    energy: FreeEnergy
    bandwidth: float | None = None
    solver: str = "euler"

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return svgd_field(x, self.energy.drift(x) / self.energy.entropy, self.bandwidth)


@dataclass(frozen=True)
class EnergyKernel:
    """MMD kernel `k(a, b) = −‖a − b‖` (energy distance): no bandwidth."""

    name: ClassVar[str] = "energy"

    def witness_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return energy_witness_grad(x, y)


@dataclass(frozen=True)
class GaussianMmdKernel:
    """MMD kernel `exp(−‖a − b‖²/(2h²))`; `bandwidth=None`: h = the median distance of particles ∪ samples,
    re-estimated at every evaluation."""

    name: ClassVar[str] = "gaussian"
    bandwidth: float | None = None

    def witness_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mmd_witness_grad(x, y, self.bandwidth or median_bandwidth(x, y, max_points=FLOW_MEDIAN_POINTS))


MMD_KERNELS = {k.name: k for k in (EnergyKernel, GaussianMmdKernel)}


@dataclass(frozen=True)
class MmdFlow(FlowMethod):
    """`dx/dt = −∇f(x)`, f the MMD witness between the particles and `target_samples` (fixed for the run)."""

    name: ClassVar[str] = "mmd-flow"
    target_samples: torch.Tensor
    kernel: EnergyKernel | GaussianMmdKernel = field(default_factory=EnergyKernel)
    solver: str = "euler"

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return -self.kernel.witness_grad(x, self.target_samples)


METHODS: dict[str, type[FlowMethod]] = {m.name: m for m in (KdeFlow, Langevin, Svgd, MmdFlow)}
PARTICLE_METHODS: tuple[str, ...] = tuple(METHODS)


@dataclass(frozen=True)
class Defaults:
    """A method's default flow time and step (steps = time / step)."""

    time: float
    step: float


# Chosen on the 2-D targets from N(0, I): Langevin's step keeps its O(step) stationary bias small on the
# gmm-ring modes (std 0.2); the deterministic methods' explicit steps are stable on every built-in target for
# 30 to 2000 particles (tests/test_particles.py). svgd at 0.5 diverged on gmm-ring, gmm-grid and double-well
# below ~1000 particles (stiff mode scores, kernel averages over fewer points); kde-flow at 0.02 on double-well
# above ~150 (the quartic wall's stiffness at the outermost initial particles).
DEFAULTS: dict[str, Defaults] = {"kde-flow": Defaults(10.0, 0.01), "langevin": Defaults(10.0, 0.002),
                                 "svgd": Defaults(200.0, 0.25), "mmd-flow": Defaults(500.0, 1.0)}


def make_method(name: str, energy: FreeEnergy, *, bandwidth: float | None = None,
                target_samples: torch.Tensor | None = None, kernel: str = "energy",
                solver: str = "euler") -> FlowMethod:
    """The method `name` for `energy` (mmd-flow: towards `target_samples` with the MMD `kernel`)."""
    choose("particle method", name, METHODS)
    choose("solver", solver, FIXED_METHODS)
    require(bandwidth is None or bandwidth > 0, f"bandwidth must be > 0, got {bandwidth}")
    if name == "langevin":
        require(solver == "euler", "langevin is Euler–Maruyama; solver applies to kde-flow, svgd and mmd-flow")
        return Langevin(energy)
    if name == "kde-flow":
        return KdeFlow(energy, bandwidth, solver)
    if name == "svgd":
        require(energy.entropy > 0, "svgd needs a positive entropy weight (a target density)")
        return Svgd(energy, bandwidth, solver)
    require(target_samples is not None, "mmd-flow needs a target with an exact sampler")
    choose("kernel", kernel, MMD_KERNELS)
    k = EnergyKernel() if kernel == "energy" else GaussianMmdKernel(bandwidth)
    return MmdFlow(target_samples, k, solver)


# ---- stepping --------------------------------------------------------------------------------------------

def steps_between(t0: float, t1: float, dt: float) -> int:
    """Steps of size `dt` from t0 to t1, the last one shortened to land on t1."""
    return max(0, math.ceil((t1 - t0) / dt - 1e-9))


def time_grid(t0: float, t1: float, dt: float, steps: int) -> torch.Tensor:
    """`t0, t0 + dt, …` (`steps` steps), capped at t1."""
    grid = t0 + dt * torch.arange(steps + 1, dtype=torch.float64)
    return grid.clamp(max=t1)


def advance(method: FlowMethod, x: torch.Tensor, t0: float, t1: float, dt: float, *, max_steps: int | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, int]:
    """Move the particles from flow time t0 towards t1 by steps of `dt` (at most `max_steps`); returns the
    particles, the time reached and the number of steps."""
    steps = steps_between(t0, t1, dt)
    steps = steps if max_steps is None else min(steps, max_steps)
    if steps == 0:
        return x, t0, 0
    grid = time_grid(t0, t1, dt, steps)
    try:
        x = method.integrate(x, grid, generator)
    except NonFiniteState as exc:
        t = float(grid[min((exc.step or 0) + 1, steps)])
        raise NonFiniteState(f"particles became non-finite by t={t:.6g}; reduce the step size",
                             step=exc.step, time=t) from None
    except torch.linalg.LinAlgError:  # a kernel flow whitens by the cloud's covariance (`kernels._whiten`)
        raise NumericalFailure(f"the particles' covariance stopped being positive definite between t={t0:.6g} and "
                               f"t={float(grid[-1]):.6g} (the cloud diverging or collapsing); reduce the step size"
                               ) from None
    return x, float(grid[-1]), steps


@dataclass
class ParticleResult:
    """Final particles, trace rows (one per logged step) and snapshots {step: particles}."""

    x: torch.Tensor
    trace: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def _trace_row(energy: FreeEnergy, x: torch.Tensor, step: int, t: float) -> dict[str, Any]:
    return {"step": step, "t": t, "objective": energy.value(x), "mean": x.mean(0).tolist(),
            "var": x.var(0).tolist()}


def run_particles(energy: FreeEnergy, x0: torch.Tensor, method: str | FlowMethod, *, time: float | None = None,
                  step_size: float | None = None, generator: torch.Generator | None = None,
                  bandwidth: float | None = None, target_samples: torch.Tensor | None = None,
                  kernel: str = "energy", solver: str = "euler", log_every: int = 10,
                  progress: Callable[..., None] | None = None) -> ParticleResult:
    """Evolve particles `x0 (n, d)` by `method` over flow time `time` in steps of `step_size` (defaults: the
    method's `DEFAULTS`); a trace row every `log_every` steps, snapshots at the quarters."""
    flow = method if isinstance(method, FlowMethod) else make_method(
        method, energy, bandwidth=bandwidth, target_samples=target_samples, kernel=kernel, solver=solver)
    time = DEFAULTS[flow.name].time if time is None else time
    dt = DEFAULTS[flow.name].step if step_size is None else step_size
    require(math.isfinite(time) and time >= 0, f"time must be a number >= 0, got {time}")
    require(dt > 0 and math.isfinite(dt), f"step size must be a positive number, got {dt}")
    require(log_every >= 1, f"log_every must be >= 1, got {log_every}")
    require(x0.ndim == 2 and len(x0) >= 2, f"particles must have shape (n >= 2, d), got {tuple(x0.shape)}")
    require(bool(torch.isfinite(x0).all()), "initial particles contain NaN/inf")
    total = steps_between(0.0, time, dt)
    quarter = max(total // 4, 1)
    x, t, step = x0.clone(), 0.0, 0
    res = ParticleResult(x, [_trace_row(energy, x, 0, 0.0)], {0: x.clone()})
    while step < total:
        chunk = min(log_every - step % log_every, quarter - step % quarter)
        x, t, k = advance(flow, x, t, time, dt, max_steps=chunk, generator=generator)
        step += k
        if step % log_every == 0 or step == total:
            res.trace.append(_trace_row(energy, x, step, t))
            if progress is not None:
                progress(step, total, objective=res.trace[-1]["objective"])
        if step % quarter == 0 or step == total:
            res.snapshots[step] = x.clone()
    res.x = x
    return res
