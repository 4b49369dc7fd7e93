"""Route an `odeint` call through `torchdiffeq.odeint` and return the same `Solution`.

torchdiffeq calls the field with a scalar time; the wrapper expands it to the per-sample (B,) tensor
our fields expect, and counts field calls (one step size for the whole batch, so NFE is shared).
Method names map as euler->euler, midpoint->midpoint, heun->heun2, rk4->rk4 (torchdiffeq's rk4 is the
3/8-rule variant, also 4th order), bosh3->bosh3, dopri5->dopri5.
"""

from __future__ import annotations

import torch
import torchdiffeq
from gentool.core.errors import BadInput
from gentool.core.solvers.errors import MaxStepsExceeded
from gentool.core.solvers.saving import Solution
from gentool.core.solvers.tableau import ADAPTIVE_TABLEAUS
from gentool.core.solvers.term import Field

METHOD_NAMES = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4",
                "bosh3": "bosh3", "dopri5": "dopri5"}


class CountingField(torch.nn.Module):
    """`g(t_scalar, x) = f(t_scalar.expand(B), x)`, counting calls; beyond `budget` calls it raises
    `MaxStepsExceeded` itself (so the step limit is ours, not torchdiffeq's assertion)."""

    def __init__(self, f: Field, budget: int | None = None, max_steps: int = 0) -> None:
        super().__init__()
        self.f, self.calls, self.budget, self.max_steps = f, 0, budget, max_steps

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.budget is not None and self.calls > self.budget:
            raise MaxStepsExceeded(f"max_steps={self.max_steps} exceeded (torchdiffeq) at t={float(t):.6g}; raise "
                                   "max_steps or loosen rtol/atol")
        return self.f(t.to(x.dtype).expand(x.shape[0]), x)


def solve_torchdiffeq(f: Field, x0: torch.Tensor, t: torch.Tensor, method: str, *, save: str, rtol: float,
                      atol: float, max_steps: int, on_max_steps: str, h0: float | None) -> Solution:
    """Solve with torchdiffeq; accepted/rejected are -1 for adaptive methods (not reported by torchdiffeq)."""
    adaptive = method in ADAPTIVE_TABLEAUS
    if adaptive and save == "trajectory":
        raise BadInput("save='trajectory' is not available for adaptive methods with backend torchdiffeq; "
                       "allowed: final, times")
    if adaptive and on_max_steps == "return":
        raise BadInput("on_max_steps='return' is not available with backend torchdiffeq; allowed: raise")
    tableau = ADAPTIVE_TABLEAUS.get(method)
    # initial call + Hairer's starting step, then (stages - FSAL) calls per attempted step
    budget = 2 + max_steps * (tableau.stages - int(tableau.fsal)) if tableau is not None else None
    batch, field = x0.shape[0], CountingField(f, budget, max_steps)
    grid = t.to(device=x0.device, dtype=x0.dtype)
    tt = grid[[0, -1]] if adaptive and save == "final" else grid
    options = {"max_num_steps": 2**31 - 1} if adaptive else {}  # the field enforces max_steps
    if h0 is not None and adaptive:
        options["first_step"] = h0
    xs = torchdiffeq.odeint(field, x0, tt, method=METHOD_NAMES[method], rtol=rtol, atol=atol, options=options)
    steps = -1 if adaptive else (len(grid) - 1)
    full = lambda v: torch.full((batch,), v, dtype=torch.long, device=x0.device)  # noqa: E731
    keep = save != "final"
    ts = tt if keep else grid[-1].expand(batch)
    return Solution(x=xs[-1], xs=xs if keep else None, ts=ts, nfe=full(field.calls), accepted=full(steps),
                    rejected=full(-1 if adaptive else 0),
                    reached=torch.ones(batch, dtype=torch.bool, device=x0.device))
