"""Linear regression as a self-consuming loop (Gerstgrasser et al. 2024, "Is model collapse inevitable?";
Dohmatob et al. 2024; Collapse-or-Thrive).

A data point is a row `(x, y)` with `x ∈ ℝ^d` and `y = x·w* + σ ε`. A fit is ordinary least squares (minimum-norm,
`ŵ = X⁺ y`); a fitted model labels the fixed design `X` of the first generation's real data (n rows):
`ỹ = X ŵ + σ √λ ε` (σ known, as in the papers). The test error is the exact population risk of the fit against
the true coefficients, `E_x[(x·(ŵ − w*))²] = (ŵ − w*)ᵀ Σ_x (ŵ − w*)`.

Closed forms (fixed design, x ~ N(0, Σ_x), n > d + 1, `E tr(Σ_x (XᵀX)⁻¹) = d/(n − d − 1)`):
Replace `E[err_t] = σ² d/(n − d − 1) (1 + λ (t − 1))` (linear growth);
Accumulate `E[err_t] = σ² d/(n − d − 1) (1 + λ Σ_{i=2}^t 1/i²) ≤ σ² d/(n − d − 1) π²/6` (bounded), because
`ŵ_{t+1} − w* = (ŵ_t − w*) + (XᵀX)⁻¹Xᵀε_t/(t + 1)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from gentool.core.mad.families import Context, Generators, normal


@dataclass(frozen=True)
class LinearModel:
    """Fitted coefficients `coef (S, d)` and the design they label, `design (S, n, d)`."""

    coef: torch.Tensor
    design: torch.Tensor


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares `X⁺ y`, batched: `x (S, n, d)`, `y (S, n)` → `(S, d)`."""
    return (torch.linalg.pinv(x) @ y[..., None])[..., 0]


@dataclass
class LinearRegressionFamily:
    """OLS on rows `(x, y)`; samples relabel the first generation's real design with noise `noise · √λ`."""

    noise: float = 1.0
    vectorised: bool = True
    has_density: bool = False

    def fit(self, data: torch.Tensor, gens: Generators, context: Context | None = None) -> LinearModel:
        x, y = data[..., :-1].double(), data[..., -1].double()
        design = context.real[..., :-1].double() if context is not None and context.real is not None else x
        return LinearModel(least_squares(x, y), design)

    def sample(self, model: LinearModel, n: int, lam: float, gens: Generators) -> torch.Tensor:
        """Rows `(x_i, x_i·ŵ + σ√λ ε_i)` for the n design rows `x_i` (n must be the design's size)."""
        if n != model.design.shape[1]:
            raise ValueError(f"linear regression labels its {model.design.shape[1]}-row design, asked for {n}")
        eps = normal(gens, n, 1)[..., 0]
        y = (model.design @ model.coef[..., None])[..., 0] + self.noise * math.sqrt(lam) * eps
        return torch.cat([model.design, y[..., None]], dim=-1)


def population_risk(model: LinearModel, coef: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Population risk `(ŵ − w*)ᵀ Σ_x (ŵ − w*)` per seed, `(S,)`."""
    diff = model.coef - coef
    return ((diff @ cov) * diff).sum(-1)


def expected_test_error(t: int, d: int, n: int, noise: float, lam: float, accumulate: bool) -> float:
    """`E[err_t]` (module docstring) for Replace (`accumulate=False`) or Accumulate; NaN when `n ≤ d + 1`."""
    if n <= d + 1:
        return math.nan
    scale = noise**2 * d / (n - d - 1)
    growth = sum(1 / i**2 for i in range(2, t + 1)) if accumulate else t - 1
    return scale * (1 + lam * growth)
