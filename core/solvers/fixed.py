"""Fixed-step explicit Runge–Kutta integration along a given time grid.

For a grid t_0, ..., t_N (increasing or decreasing, any spacing) the step i uses h_i = t_{i+1} - t_i and

    k_s = f(t_i + c_s h_i, x_i + h_i * sum_{j<s} a_sj k_j),    x_{i+1} = x_i + h_i * sum_s b_s k_s.

Everything that does not depend on the state (per-stage times, h_i * a_sj) is precomputed once in a
`FixedPlan`, so the loop body is only the field calls and fused `add(x, k, alpha=...)` kernels: no host
synchronisation, no `.item()`, and no Python work that scales with the batch. The same loop runs eagerly
or inside a CUDA graph capture (see `cuda_graph.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from gentool.core.solvers.tableau import ButcherTableau
from gentool.core.solvers.term import Field

Combination = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class FixedStep:
    """One precomputed step: per-stage time tensors (B,), per-stage `h*a_sj`, and final `h*b_s`."""

    stage_times: tuple[torch.Tensor, ...]
    stage_coeffs: tuple[Combination, ...]
    final_coeffs: Combination


@dataclass(frozen=True)
class FixedPlan:
    """All steps of a fixed-step solve on one grid for one batch size."""

    tableau: ButcherTableau
    steps: tuple[FixedStep, ...]

    @property
    def nfe_per_sample(self) -> int:
        return self.tableau.stages * len(self.steps)


def _combination(weights: Sequence[float], h: float) -> Combination:
    return tuple((j, h * w) for j, w in enumerate(weights) if w != 0.0)


@functools.lru_cache(maxsize=64)
def make_plan(tableau: ButcherTableau, grid: tuple[float, ...], batch: int, dtype: torch.dtype,
              device: torch.device) -> FixedPlan:
    """Precompute stage times and scaled coefficients for every step of `grid` (Python floats, float64).

    Memoised: a plan is immutable (its stage times are expanded, read-only views), so repeated solves on
    the same grid, batch size, dtype and device (a sampler called in a loop) reuse it.
    """
    n, s = len(grid) - 1, tableau.stages
    times = [grid[i + 1] if c == 1.0 else grid[i] + c * (grid[i + 1] - grid[i])
             for i in range(n) for c in tableau.c]
    flat = torch.tensor(times, dtype=dtype, device=device).unsqueeze(1).expand(n * s, batch).unbind(0)
    steps = []
    for i in range(n):
        h = grid[i + 1] - grid[i]
        steps.append(FixedStep(stage_times=tuple(flat[i * s:(i + 1) * s]),
                               stage_coeffs=tuple(_combination(row, h) for row in tableau.a),
                               final_coeffs=_combination(tableau.b, h)))
    return FixedPlan(tableau, tuple(steps))


def combine(x: torch.Tensor, ks: Sequence[torch.Tensor], coeffs: Combination) -> torch.Tensor:
    """`x + sum_j coeff_j * ks[j]` with one fused kernel per term (returns `x` itself when empty)."""
    if not coeffs:
        return x
    (j0, a0), *rest = coeffs
    out = torch.add(x, ks[j0], alpha=a0)
    for j, a in rest:
        out.add_(ks[j], alpha=a)
    return out


def rk_step(f: Field, x: torch.Tensor, step: FixedStep) -> torch.Tensor:
    """One explicit Runge–Kutta step `x_i -> x_{i+1}` (see the module docstring)."""
    ks: list[torch.Tensor] = []
    for t_s, coeffs in zip(step.stage_times, step.stage_coeffs, strict=True):
        ks.append(f(t_s, combine(x, ks, coeffs)))
    return combine(x, ks, step.final_coeffs)


def run_steps(f: Field, x: torch.Tensor, plan: FixedPlan, xs: torch.Tensor | None,
              start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Apply steps `start..stop-1` of `plan` to `x`; write `x_{i+1}` into `xs` (N+1, B, ...) if given.

    No host synchronisation happens here, so this loop can be captured in a CUDA graph.
    """
    for i in range(start, len(plan.steps) if stop is None else stop):
        x = rk_step(f, x, plan.steps[i])
        if xs is not None:
            xs[i + 1].copy_(x)
    return x


def first_non_finite_step(f: Field, x0: torch.Tensor, plan: FixedPlan) -> int | None:
    """Re-run the solve checking after every step; return the index of the first step giving NaN/inf."""
    x = x0
    for i in range(len(plan.steps)):
        x = rk_step(f, x, plan.steps[i])
        if not bool(torch.isfinite(x).all()):
            return i
    return None
