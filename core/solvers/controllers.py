"""Step-size controllers for embedded Runge–Kutta pairs (per-sample, tensor in / tensor out).

With the scaled error norm err_n of step n (accept iff err_n <= 1) and k = error_order + 1:

* integral (I):   h_{n+1} = h_n * safety * err_n^(-1/k)
* PI (Gustafsson; Hairer & Wanner II.4):
                  h_{n+1} = h_n * safety * err_n^(-(1/k - 0.75 beta)) * err_prev^beta,   beta = 0.2 / k,

where err_prev is the error of the last accepted step (floored at 1e-4). The factor is clipped to
[fac_min, fac_max], and to at most 1 right after a rejection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gentool.core.errors import choose

CONTROLLERS = ("integral", "pi")
ERR_FLOOR = 1e-4


@dataclass(frozen=True)
class StepController:
    """Computes the per-sample step-size factor from the current and previous error norms."""

    kind: str = "pi"
    safety: float = 0.9
    fac_min: float = 0.2
    fac_max: float = 10.0

    def __post_init__(self) -> None:
        choose("controller", self.kind, CONTROLLERS)

    def factor(self, err: torch.Tensor, err_prev: torch.Tensor, accept: torch.Tensor,
               error_order: int) -> torch.Tensor:
        """Step multiplier for every sample (see the module docstring)."""
        k = error_order + 1
        err = err.clamp_min(1e-10)
        if self.kind == "integral":
            fac = self.safety * err.pow(-1.0 / k)
        else:
            beta = 0.2 / k
            fac = self.safety * err.pow(-(1.0 / k - 0.75 * beta)) * err_prev.pow(beta)
        fac = torch.nan_to_num(fac, nan=self.fac_min, posinf=self.fac_max)
        upper = torch.where(accept, self.fac_max, 1.0)
        return torch.minimum(fac.clamp_min(self.fac_min), upper)
