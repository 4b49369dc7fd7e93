"""Batched ODE/SDE integration: one plan runner for every fixed-step method, per-sample adaptive
Runge–Kutta, CUDA-graph fast paths and torch.compile.

    from gentool.core.solvers import batch_odeint, odeint
    sol = batch_odeint(f, x0, t, method="rk4")   # f(t: (B,), x: (B, ...)) -> (B, ...); a `Solution`
    ys = odeint(func, y0, t)                     # torchdiffeq's convention: func(t: scalar, y); ys (T, ...)

Pieces (diffrax-style): `term` (the field), `tableau` (Butcher tableaus), `plan` (the linear-combination
step format every fixed-step method compiles to: Runge–Kutta, Euler–Maruyama, the diffusion samplers),
`fixed` (tableau and Euler–Maruyama plans), `runner` (the one loop that runs a plan: eager, compiled or
graphed, with the finiteness check, saving and progress), `controllers` (step size), `adaptive` (masked
per-sample embedded RK), `adaptive_graph` / `cuda_graph` (GPU fast paths), `compile` (torch.compile),
`cache` (per-owner graph/compiled-step caches), `saving` (what is returned), `torchdiffeq_backend`
(cross-check backend), `api` (`batch_odeint`, `sdeint`), `dropin` (torchdiffeq's `odeint`,
`odeint_adjoint`).
"""

from gentool.core.solvers.api import ADAPTIVE_METHODS, BACKENDS, FIXED_METHODS, batch_odeint, sdeint
from gentool.core.solvers.cache import CacheScope
from gentool.core.solvers.compile import CompileFallbackWarning
from gentool.core.solvers.dropin import odeint, odeint_adjoint
from gentool.core.solvers.errors import MaxStepsExceeded, NonFiniteState
from gentool.core.solvers.plan import Plan, StepSpec, make_plan
from gentool.core.solvers.runner import draw_noise, solve_plan
from gentool.core.solvers.saving import SAVE_MODES, Solution
from gentool.core.solvers.tableau import ButcherTableau

__all__ = ["odeint", "odeint_adjoint", "batch_odeint", "sdeint", "solve_plan", "draw_noise", "make_plan", "Plan",
           "StepSpec", "Solution", "CacheScope", "CompileFallbackWarning", "FIXED_METHODS", "ADAPTIVE_METHODS",
           "BACKENDS", "SAVE_MODES", "ButcherTableau", "MaxStepsExceeded", "NonFiniteState"]
