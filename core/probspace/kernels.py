"""Kernel tools for particle flows: bandwidths, KDE score and log density, SVGD field, MMD witness gradients.

Gaussian kernel `k(x, y) = exp(−‖x − y‖²/(2h²))`; particles `x (n, d)`. Bandwidths follow one median
convention, `gentool.core.metrics.kernels.median_bandwidth` (the median pairwise distance).
"""

from __future__ import annotations

import math

import torch
from gentool.core.metrics.kernels import median_bandwidth

FLOW_MEDIAN_POINTS = 300  # fields re-estimate the median at every evaluation: a strided subset of 300 points

__all__ = ["FLOW_MEDIAN_POINTS", "energy_witness_grad", "gaussian_kernel", "kde_log_density", "kde_score",
           "median_bandwidth", "mmd_witness_grad", "silverman_factor", "svgd_bandwidth", "svgd_field",
           "whitened_kde_score"]


def silverman_factor(n: int, d: int) -> float:
    """Silverman's rule for whitened data, `h = (4/((d + 2) n))^{1/(d+4)}`: the KDE of n points in ℝᵈ uses the
    bandwidth matrix `H = h² Cov(x)` (scipy's `gaussian_kde` convention)."""
    return (4.0 / ((d + 2) * n)) ** (1.0 / (d + 4))


def _whiten(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`z = L⁻¹(x − x̄)` row-wise and the Cholesky factor L of the sample covariance `Cov(x) = LLᵀ`
    (a tiny ridge keeps a degenerate cloud factorisable)."""
    xc = x - x.mean(0, keepdim=True)
    cov = xc.T @ xc / max(len(x) - 1, 1)
    ridge = 1e-12 * (float(torch.diagonal(cov).mean()) + 1e-300)
    chol = torch.linalg.cholesky(cov + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device))
    return torch.linalg.solve_triangular(chol, xc.T, upper=False).T, chol


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    """Gram matrix `K_ij = exp(−‖xᵢ − yⱼ‖²/(2h²))`."""
    return torch.exp(-torch.cdist(x, y) ** 2 / (2 * h * h))


def kde_score(x: torch.Tensor, h: float) -> torch.Tensor:
    """Score of the Gaussian KDE `p̂(x) = (1/n) Σⱼ k(x, xⱼ)` at the particles:
    `∇log p̂(xᵢ) = Σⱼ Kᵢⱼ (xⱼ − xᵢ) / (h² Σⱼ Kᵢⱼ)` (softmax weights, computed stably). p̂ is p smoothed by
    N(0, h²I), so for Gaussian p the estimate is `−(C + h²I)⁻¹(x − m)`: an O(h²) bias; leaving the self
    term out removes the shrinkage but makes close pairs explode, so it is kept."""
    logits = -torch.cdist(x, x) ** 2 / (2 * h * h)
    w = torch.softmax(logits, dim=1)
    return (w @ x - x) / (h * h)


def whitened_kde_score(x: torch.Tensor, h: float) -> torch.Tensor:
    """Score of the KDE with bandwidth matrix `H = h² Cov(x)`: with `Cov(x) = LLᵀ` and `z = L⁻¹(x − x̄)`,
    `∇ₓlog p̂(xᵢ) = L⁻ᵀ ∇_z log p̂_z(zᵢ)` (the isotropic `kde_score` of z). For Gaussian p = N(m, C) the
    estimate is `−((1 + h²)C)⁻¹(x − m)`: every direction is shrunk by the same factor `1/(1 + h²)`."""
    z, chol = _whiten(x)
    return torch.linalg.solve_triangular(chol.T, kde_score(z, h).T, upper=True).T


def kde_log_density(x: torch.Tensor, h: float) -> torch.Tensor:
    """`log p̂(xᵢ)` of the KDE with bandwidth matrix `h² Cov(x)`:
    `logsumexp_j(−‖zᵢ − zⱼ‖²/(2h²)) − log n − (d/2) log(2πh²) − log det L`."""
    n, d = x.shape
    z, chol = _whiten(x)
    logk = -torch.cdist(z, z) ** 2 / (2 * h * h)
    return (torch.logsumexp(logk, 1) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h * h)
            - torch.log(torch.diagonal(chol)).sum())


def svgd_bandwidth(x: torch.Tensor) -> float:
    """Liu & Wang's rule `h² = med²/(2 log n)`, med the median pairwise distance (`median_bandwidth` on
    `FLOW_MEDIAN_POINTS` points)."""
    med = median_bandwidth(x, max_points=FLOW_MEDIAN_POINTS)
    return max(med / math.sqrt(2 * math.log(max(len(x), 2))), 1e-8)


def svgd_field(x: torch.Tensor, score: torch.Tensor, h: float | None = None) -> torch.Tensor:
    """Stein variational direction `φ(xᵢ) = (1/n) Σⱼ [k(xⱼ, xᵢ) ∇log π(xⱼ) + ∇_{xⱼ} k(xⱼ, xᵢ)]`,
    with `∇_{xⱼ} k(xⱼ, xᵢ) = k (xᵢ − xⱼ)/h²`; `h=None`: `svgd_bandwidth(x)`."""
    h = svgd_bandwidth(x) if h is None else h
    k = gaussian_kernel(x, x, h)
    repulsion = (k.sum(1, keepdim=True) * x - k @ x) / (h * h)
    return (k @ score + repulsion) / len(x)


def mmd_witness_grad(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    """Gradient at the particles x of the Gaussian-kernel MMD witness
    `f(z) = (1/n) Σⱼ k(z, xⱼ) − (1/m) Σⱼ k(z, yⱼ)`; the MMD flow is `dx/dt = −∇f(x)` (f is the first
    variation of ½MMD²(p, π))."""

    def grad_mean_k(z: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        k = gaussian_kernel(z, pts, h)
        return (k @ pts - k.sum(1, keepdim=True) * z) / (h * h * len(pts))

    return grad_mean_k(x, x) - grad_mean_k(x, y)


def _mean_unit_vector(z: torch.Tensor, pts: torch.Tensor, *, same: bool) -> torch.Tensor:
    """`(1/m) Σⱼ (zᵢ − pⱼ)/‖zᵢ − pⱼ‖` (terms with zᵢ = pⱼ are 0; `same`: pts is z, its diagonal is dropped)."""
    w = torch.cdist(z, pts).reciprocal_()
    if same:
        w.fill_diagonal_(0.0)
    w.masked_fill_(torch.isinf(w), 0.0)
    return (z * w.sum(1, keepdim=True) - w @ pts) / len(pts)


def energy_witness_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient at the particles x of the witness of the energy-distance MMD (kernel `k(a, b) = −‖a − b‖`),
    `f(z) = −(1/n) Σⱼ ‖z − xⱼ‖ + (1/m) Σⱼ ‖z − yⱼ‖`:
    `∇f(xᵢ) = −(1/n) Σⱼ (xᵢ − xⱼ)/‖xᵢ − xⱼ‖ + (1/m) Σⱼ (xᵢ − yⱼ)/‖xᵢ − yⱼ‖`. The kernel has no bandwidth
    and reaches every scale, so the flow `dx/dt = −∇f(x)` does not stall where a Gaussian kernel's does."""
    return _mean_unit_vector(x, y, same=False) - _mean_unit_vector(x, x, same=True)
