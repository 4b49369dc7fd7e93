"""Wasserstein gradient flows with particles.

Free energy `F[p] = ∫V p + ½∫∫W(x − y) p(x) p(y) + ε ∫p log p`, with quadratic interaction
`W(z) = a‖z‖²/2`; KL(p‖π) is the case `V = −log π`, ε = 1. The flow `∂p/∂t = ∇·(p ∇δF/δp)` moves
particles along `dx/dt = −∇V(x) − (∇W * p)(x) − ε∇log p_t(x)`. Methods:

- `kde-flow`: deterministic ODE with a Gaussian-KDE estimate of `∇log p_t`;
- `langevin`: unadjusted Langevin `x ← x − η(∇V + ∇W*p) + √(2εη) ξ` (Euler–Maruyama);
- `svgd`: Stein variational gradient descent towards `π_eff ∝ exp(−(V + W*p)/ε)` (Euler steps);
- `mmd-flow`: `dx/dt = −∇f(x)`, f the MMD witness between particles and samples of the target (Euler).

Every method is a field on the solver core (`odeint`, `sdeint`): one runner, one finiteness check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.errors import choose, require
from gentool.core.metrics import mmd2
from gentool.core.probspace.kernels import (
    kde_score,
    median_bandwidth,
    mmd_witness_grad,
    silverman_bandwidth,
    svgd_field,
)
from gentool.core.probspace.targets import Target, autograd_score
from gentool.core.solvers import NonFiniteState, odeint, sdeint

PARTICLE_METHODS = ("kde-flow", "langevin", "svgd", "mmd-flow")


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

    def value(self, x: torch.Tensor, h: float) -> float:
        """Particle estimate of F: `mean V + (a/2) mean‖xᵢ − xⱼ‖² + ε mean log p̂(xᵢ)` (p̂ = KDE)."""
        n, d = x.shape
        out = 0.0 if self.potential is None else float(self.potential(x).mean())
        if self.interaction:
            out += 0.5 * self.interaction * float((torch.cdist(x, x) ** 2).mean())
        if self.entropy:
            logk = -torch.cdist(x, x) ** 2 / (2 * h * h)
            logp = torch.logsumexp(logk, 1) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h * h)
            out += self.entropy * float(logp.mean())
        return out


def kl_energy(target: Target) -> FreeEnergy:
    """`KL(p‖π)` up to a constant: V = −log π, ε = 1."""
    return FreeEnergy(potential=lambda x: -target.log_prob(x), entropy=1.0, target=target)


@dataclass
class ParticleResult:
    """Final particles, trace rows (one per logged step) and snapshots {step: particles}."""

    x: torch.Tensor
    trace: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Stepper:
    energy: FreeEnergy
    method: str
    step_size: float
    generator: torch.Generator | None
    bandwidth: float | None
    target_samples: torch.Tensor | None
    solver: str

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """The method's deterministic velocity of the particle cloud x (n, d):
        kde-flow `-grad V - grad W*p - eps grad log p_KDE`, langevin the drift `-grad V - grad W*p`,
        svgd the Stein direction towards `exp(-(V + W*p)/eps)`, mmd-flow `-grad f` (MMD witness)."""
        if self.method == "kde-flow":
            v = self.energy.drift(x)
            h = self.bandwidth or silverman_bandwidth(x)
            return v - self.energy.entropy * kde_score(x, h) if self.energy.entropy else v
        if self.method == "langevin":
            return self.energy.drift(x)
        if self.method == "svgd":
            return svgd_field(x, self.energy.drift(x) / self.energy.entropy, self.bandwidth)
        h = self.bandwidth or median_bandwidth(x, self.target_samples)
        return -mmd_witness_grad(x, self.target_samples, h)

    def advance(self, x: torch.Tensor, n_steps: int, done: int) -> torch.Tensor:
        """Steps done+1..done+n_steps on the solver core: the cloud is one sample (its particles interact),
        langevin is Euler–Maruyama with noise sqrt(2 eps) dW from the run's generator, kde-flow uses the
        `solver` method, svgd and mmd-flow are Euler steps. graph="off": the fields read bandwidths on the
        host, so they cannot be captured in a CUDA graph."""
        grid = (done + torch.arange(n_steps + 1, dtype=torch.float64)) * self.step_size
        field = lambda t, z: self.velocity(z[0])[None]  # noqa: E731
        try:
            if self.method == "langevin":
                sol = sdeint(field, x[None], grid, math.sqrt(2 * self.energy.entropy), generator=self.generator,
                             graph="off")
            else:
                sol = odeint(field, x[None], grid, method=self.solver if self.method == "kde-flow" else "euler",
                             graph="off")
        except NonFiniteState as exc:
            step = done + (exc.step or 0) + 1
            raise NonFiniteState(f"particles became non-finite at step {step} (t={step * self.step_size:.6g}); "
                                 f"reduce the step size", step=step, time=step * self.step_size) from None
        return sol.x[0]


def _trace_row(energy: FreeEnergy, x: torch.Tensor, step: int, t: float, ref: torch.Tensor | None,
               ref_h: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "t": t, "objective": energy.value(x, silverman_bandwidth(x)),
                           "mean": x.mean(0).tolist(), "var": x.var(0).tolist()}
    if ref is not None and ref_h is not None:
        row["mmd2"] = mmd2(x, ref, bandwidth=ref_h)
    return row


def run_particles(energy: FreeEnergy, x0: torch.Tensor, method: str, *, steps: int, step_size: float,
                  generator: torch.Generator | None = None, bandwidth: float | None = None,
                  target_samples: torch.Tensor | None = None, solver: str = "euler", log_every: int = 10,
                  snapshot_every: int | None = None,
                  progress: Callable[..., None] | None = None) -> ParticleResult:
    """Evolve particles `x0 (n, d)` by `method` for `steps` steps of size `step_size` (time steps·step_size).

    `target_samples` (needed by mmd-flow) are also the reference for the `mmd2` trace column (median
    bandwidth of the reference, fixed for the run). `bandwidth=None` picks each method's heuristic per step.
    """
    choose("particle method", method, PARTICLE_METHODS)
    require(steps >= 0, f"steps must be >= 0, got {steps}")
    require(step_size > 0 and math.isfinite(step_size),
            f"step size must be a positive number, got {step_size}")
    require(bandwidth is None or bandwidth > 0, f"bandwidth must be > 0, got {bandwidth}")
    require(log_every >= 1, f"log_every must be >= 1, got {log_every}")
    require(x0.ndim == 2 and len(x0) >= 2, f"particles must have shape (n >= 2, d), got {tuple(x0.shape)}")
    if method == "svgd":
        require(energy.entropy > 0, "svgd needs a positive entropy weight (a target density)")
    if method == "mmd-flow":
        require(target_samples is not None, "mmd-flow needs a target with an exact sampler")
    require(bool(torch.isfinite(x0).all()), "initial particles contain NaN/inf")
    x = x0.clone()
    stepper = _Stepper(energy, method, step_size, generator, bandwidth, target_samples, solver)
    ref_h = median_bandwidth(target_samples) if target_samples is not None else None
    snap_every = snapshot_every or max(steps // 4, 1)
    res = ParticleResult(x, snapshots={0: x.clone()})
    res.trace.append(_trace_row(energy, x, 0, 0.0, target_samples, ref_h))
    done = 0
    while done < steps:
        chunk = min(log_every - done % log_every, snap_every - done % snap_every, steps - done)
        x = stepper.advance(x, chunk, done)
        done += chunk
        if done % log_every == 0 or done == steps:
            res.trace.append(_trace_row(energy, x, done, done * step_size, target_samples, ref_h))
            if progress is not None:
                progress(done, steps, objective=res.trace[-1]["objective"])
        if done % snap_every == 0 or done == steps:
            res.snapshots[done] = x.clone()
    res.x = x
    return res

