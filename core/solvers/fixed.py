"""Fixed-step integrators as plans: explicit Runge–Kutta (Butcher tableaus) and Euler–Maruyama.

For a grid t_0, ..., t_N (increasing or decreasing, any spacing) step i uses h_i = t_{i+1} - t_i and

    RK:   k_s = f(t_i + c_s h_i, x_i + h_i sum_{j<s} a_sj k_j),    x_{i+1} = x_i + h_i sum_s b_s k_s
    EM:   x_{i+1} = x_i + h_i f(t_i, x_i) + g sqrt(|h_i|) z_i,     z_i ~ N(0, I)   (dx = f dt + g dW)

Everything that does not depend on the state (stage times, h_i a_sj, h_i b_s, g sqrt|h_i|) is
precomputed once in a memoised `Plan` (see `plan.py`), run by `runner.py`.
"""

from __future__ import annotations

import functools
import math

import torch
from gentool.core.solvers.plan import K, Plan, StepSpec, X, Z, make_plan, stage, step
from gentool.core.solvers.tableau import ButcherTableau


def tableau_step(tableau: ButcherTableau, t0: float, t1: float) -> StepSpec:
    """One Runge–Kutta step from t0 to t1 (the stage at c = 1 is evaluated at exactly t1)."""
    h = t1 - t0
    stages = [stage(t1 if c == 1.0 else t0 + c * h, {X: 1.0, **{K(j): h * a for j, a in enumerate(row)}})
              for c, row in zip(tableau.c, tableau.a, strict=True)]
    return step(stages, {X: 1.0, **{K(s): h * b for s, b in enumerate(tableau.b)}})


@functools.lru_cache(maxsize=64)
def tableau_plan(tableau: ButcherTableau, grid: tuple[float, ...], batch: int, dtype: torch.dtype,
                 device: torch.device) -> Plan:
    """The plan of `tableau` on `grid` (memoised: a sampler called in a loop reuses it)."""
    specs = [tableau_step(tableau, a, b) for a, b in zip(grid[:-1], grid[1:], strict=True)]
    return make_plan((tableau.name, grid, batch, dtype, device), specs, grid, batch, dtype, device)


def euler_maruyama_step(t0: float, t1: float, diffusion: float) -> StepSpec:
    """x' = x + h f(t0, x) + g sqrt(|h|) z."""
    h = t1 - t0
    return step([stage(t0, {X: 1.0})], {X: 1.0, K(0): h, Z: diffusion * math.sqrt(abs(h))})


@functools.lru_cache(maxsize=64)
def euler_maruyama_plan(grid: tuple[float, ...], diffusion: float, batch: int, dtype: torch.dtype,
                        device: torch.device) -> Plan:
    """Euler–Maruyama for dx = f(t, x) dt + g dW with constant g = `diffusion` on `grid`."""
    specs = [euler_maruyama_step(a, b, diffusion) for a, b in zip(grid[:-1], grid[1:], strict=True)]
    return make_plan(("euler-maruyama", diffusion, grid, batch, dtype, device), specs, grid, batch, dtype, device)
