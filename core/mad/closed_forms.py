"""Closed forms for Gaussian self-consuming loops (SPEC §5) and batched Gaussian distances.

Fitting N(μ, Σ) on n samples per generation and sampling N(μ_t, λΣ_t):
unbiased covariance `E[Σ_t] = λ^{t−1} Σ₀`, `Cov(μ_t) = (Σ₀/n) Σ_{k<t} λ^k`;
MLE covariance (λ = 1) `E[σ²_t] = σ₀² ((n−1)/n)^t`;
1-D drift of `log σ²_t`: `log λ + ψ((n−1)/2) + log(2/(n−1))`.
"""

from __future__ import annotations

import math

import torch
from gentool.core.metrics.gaussian import gaussian_w2_squared
from scipy.special import digamma


def expected_cov_scale(t: int, lam: float, n: int, cov: str = "unbiased") -> float:
    """`E[Σ_t] / Σ₀` at generation `t ≥ 1`: `λ^{t−1}` (unbiased) or `λ^{t−1} ((n−1)/n)^t` (MLE)."""
    base = lam ** (t - 1)
    return base if cov == "unbiased" else base * ((n - 1) / n) ** t


def mean_var_scale(t: int, lam: float, n: int) -> float:
    """`Cov(μ_t) / Σ₀ = (1/n) Σ_{k<t} λ^k` (unbiased covariance; λ = 1 gives t/n)."""
    return sum(lam**k for k in range(t)) / n


def log_variance_drift(n: int, lam: float = 1.0) -> float:
    """Per-generation drift of `log σ²_t` in 1-D: `log λ + ψ((n−1)/2) + log(2/(n−1))` (n = 20: −0.0536)."""
    return math.log(lam) + float(digamma((n - 1) / 2)) + math.log(2 / (n - 1))


def closed_form_curves(family: str, data: str, loop: str, n_real: int, n_synth: int, lam: float, cov: str,
                       trace0: float, generations: int) -> dict[str, list[float]]:
    """Expected `trace_cov` at generations 1..T for the Gaussian family on Gaussian data in a fully-synthetic
    loop with n_real = n_synth (`tr Σ₀ · expected_cov_scale`); empty where no closed form applies."""
    if family != "gaussian" or data != "gaussian" or loop != "fully-synthetic" or n_real != n_synth:
        return {}
    return {"trace_cov": [trace0 * expected_cov_scale(t, lam, n_synth, cov) for t in range(1, generations + 1)]}


def bures_w2(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Batched exact W2 between Gaussians (not squared): the square root of
    `gentool.core.metrics.gaussian.gaussian_w2_squared`; shapes `(..., d)`, `(..., d, d)`."""
    return gaussian_w2_squared(m1, s1, m2, s2).sqrt()
