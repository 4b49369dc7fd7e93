"""Closed forms for Gaussian self-consuming loops (SPEC §5) and batched Gaussian distances.

Fitting N(μ, Σ) on n samples per generation and sampling N(μ_t, λΣ_t):
unbiased covariance `E[Σ_t] = λ^{t−1} Σ₀`, `Cov(μ_t) = (Σ₀/n) Σ_{k<t} λ^k`;
MLE covariance (λ = 1) `E[σ²_t] = σ₀² ((n−1)/n)^t`;
1-D drift of `log σ²_t`: `log λ + ψ((n−1)/2) + log(2/(n−1))`.
"""

from __future__ import annotations

import math

import torch
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


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root of a batch `(..., d, d)` by eigendecomposition (eigenvalues ≥ 0)."""
    w, v = torch.linalg.eigh(0.5 * (a + a.transpose(-1, -2)))
    return (v * w.clamp_min(0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def bures_w2(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Batched exact W2 between Gaussians (not squared):
    `W2² = |m1 − m2|² + tr(S1 + S2 − 2 (S2^{1/2} S1 S2^{1/2})^{1/2})`; shapes `(..., d)`, `(..., d, d)`."""
    r2 = sqrtm_psd(s2)
    cross = sqrtm_psd(r2 @ s1 @ r2)
    tr = torch.diagonal(s1 + s2 - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    return (((m1 - m2) ** 2).sum(-1) + tr).clamp_min(0).sqrt()
