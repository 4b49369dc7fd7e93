"""Gaussian-kernel tools for particle flows: bandwidths, KDE score, SVGD field, MMD witness gradient.

Kernel `k(x, y) = exp(−‖x − y‖²/(2h²))`; particles `x (n, d)`.
"""

from __future__ import annotations

import math

import torch


def median_bandwidth(x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Median heuristic `h = sqrt(median ‖xᵢ − yⱼ‖² / 2)` (pairs i ≠ j when y is x)."""
    y = x if y is None else y
    d2 = torch.cdist(x, y) ** 2
    vals = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)] if y is x else d2.flatten()
    return max(math.sqrt(0.5 * float(vals.median())), 1e-8)


def silverman_bandwidth(x: torch.Tensor) -> float:
    """Silverman's rule `h = σ̄ (4/((d + 2) n))^{1/(d+4)}`, σ̄ the mean per-coordinate standard deviation."""
    n, d = x.shape
    sigma = float(x.std(dim=0).mean())
    return max(sigma * (4.0 / ((d + 2) * n)) ** (1.0 / (d + 4)), 1e-8)


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


def svgd_field(x: torch.Tensor, score: torch.Tensor, h: float | None = None) -> torch.Tensor:
    """Stein variational direction `φ(xᵢ) = (1/n) Σⱼ [k(xⱼ, xᵢ) ∇log π(xⱼ) + ∇_{xⱼ} k(xⱼ, xᵢ)]`,
    with `∇_{xⱼ} k(xⱼ, xᵢ) = k (xᵢ − xⱼ)/h²`. `h=None`: Liu & Wang's rule `2h² = med²/log n`, med² the
    median squared distance over all pairs (the distance matrix is computed once)."""
    d2 = torch.cdist(x, x) ** 2
    if h is None:
        h = max(math.sqrt(float(d2.flatten().median()) / (2 * math.log(max(len(x), 2)))), 1e-8)
    k = torch.exp(-d2 / (2 * h * h))
    repulsion = (k.sum(1, keepdim=True) * x - k @ x) / (h * h)
    return (k @ score + repulsion) / len(x)


def mmd_witness_grad(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    """Gradient at the particles x of the MMD witness `f(z) = (1/n) Σⱼ k(z, xⱼ) − (1/m) Σⱼ k(z, yⱼ)`;
    the MMD flow is `dx/dt = −∇f(x)` (first variation of ½MMD²(p, π))."""

    def grad_mean_k(z: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        k = gaussian_kernel(z, pts, h)
        return (k @ pts - k.sum(1, keepdim=True) * z) / (h * h * len(pts))

    return grad_mean_k(x, x) - grad_mean_k(x, y)

