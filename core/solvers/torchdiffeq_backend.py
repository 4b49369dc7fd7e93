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
    """`g(t_scalar, x) = f(t_scalar.expand(B), x)`, counting calls."""

    def __init__(self, f: Field) -> None:
        super().__init__()
        self.f, self.calls = f, 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
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
    batch, field = x0.shape[0], CountingField(f)
    grid = t.to(device=x0.device, dtype=x0.dtype)
    tt = grid[[0, -1]] if adaptive and save == "final" else grid
    options = {"max_num_steps": max_steps} if adaptive else {}
    if h0 is not None and adaptive:
        options["first_step"] = h0
    try:
        xs = torchdiffeq.odeint(field, x0, tt, method=METHOD_NAMES[method], rtol=rtol, atol=atol,
                                options=options)
    except AssertionError as exc:
        if "max_num_steps" in str(exc):
            raise MaxStepsExceeded(f"max_steps={max_steps} exceeded (torchdiffeq)") from None
        raise
    steps = -1 if adaptive else (len(grid) - 1)
    full = lambda v: torch.full((batch,), v, dtype=torch.long, device=x0.device)  # noqa: E731
    keep = save != "final"
    ts = tt if keep else grid[-1].expand(batch)
    return Solution(x=xs[-1], xs=xs if keep else None, ts=ts, nfe=full(field.calls), accepted=full(steps),
                    rejected=full(-1 if adaptive else 0),
                    reached=torch.ones(batch, dtype=torch.bool, device=x0.device))
