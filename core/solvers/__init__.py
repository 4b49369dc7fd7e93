"""Batched ODE integration: fixed-step and per-sample adaptive Runge–Kutta, CUDA-graph fast path.

    from gentool.core.solvers import odeint
    sol = odeint(f, x0, t, method="rk4")   # f(t: (B,), x: (B, ...)) -> (B, ...)

Pieces (diffrax-style): `term` (the field), `tableau` (the step method), `controllers` (step size),
`saving` (what is returned), `fixed` / `adaptive` (the loops), `cuda_graph` (GPU fast path),
`torchdiffeq_backend` (cross-check backend), `api` (`odeint`).
"""

from gentool.core.solvers.api import ADAPTIVE_METHODS, BACKENDS, FIXED_METHODS, odeint
from gentool.core.solvers.errors import MaxStepsExceeded, NonFiniteState
from gentool.core.solvers.saving import SAVE_MODES, Solution
from gentool.core.solvers.tableau import ButcherTableau

__all__ = ["odeint", "Solution", "FIXED_METHODS", "ADAPTIVE_METHODS", "BACKENDS", "SAVE_MODES",
           "ButcherTableau", "MaxStepsExceeded", "NonFiniteState"]
