"""Exact Euclidean projection onto the probability simplex and simplex membership checks."""

from __future__ import annotations

import math

import torch
from gentool.core.errors import BadInput


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of `v` (..., n) onto Δⁿ⁻¹ = {p ≥ 0, Σp = 1} (sort-based, Held et al. 1974).

    `p = max(v − τ, 0)` with `τ = (Σ_{i≤ρ} u_i − 1)/ρ`, `u` sorted decreasingly and
    `ρ = max{j : u_j − (Σ_{i≤j} u_i − 1)/j > 0}`.
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - 1.0
    j = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / j) > 0).sum(dim=-1, keepdim=True)
    tau = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return torch.clamp(v - tau, min=0.0)


def on_simplex(p: torch.Tensor, tol: float = 1e-6) -> bool:
    """True when `p` is a finite 1-D vector with entries ≥ −tol summing to 1 within `tol`."""
    return bool(p.ndim == 1 and p.numel() >= 1 and torch.isfinite(p).all()
                and (p >= -tol).all() and abs(float(p.sum()) - 1.0) <= tol)


def check_simplex(p: torch.Tensor, name: str = "point", tol: float = 1e-6) -> torch.Tensor:
    """Return `p` if it lies on the simplex, else raise `BadInput` naming the offending values."""
    if not on_simplex(p, tol):
        vals = ",".join(f"{float(v):.6g}" for v in p.flatten()[:8])
        raise BadInput(f"{name} ({vals}) is not on the probability simplex: entries must be >= 0 and sum "
                       f"to 1 (sum={float(p.sum()):.6g})")
    return p


def prox_entropy_simplex(v: torch.Tensor, lam: float, iters: int = 100) -> torch.Tensor:
    """Euclidean prox of the entropy on the simplex: `argmin_{q ∈ Δ} ½‖q − v‖² + λ Σ q log q` (λ > 0).

    Stationarity `q_i − v_i + λ(log q_i + 1) + μ = 0` gives `q_i = λ ω(u_i)`, `u_i = (v_i − μ)/λ − 1 − log λ`,
    with ω the Wright omega function (ω + log ω = u). `s(μ) = Σ q_i(μ)` is decreasing and convex, so Newton's
    method on `s(μ) = 1` (`s′ = −Σ ω/(1 + ω)`) started left of the root, where every q_i ≥ 1/n, climbs to it
    monotonically.
    """
    from scipy.special import wrightomega

    n = v.numel()
    vn = v.detach().cpu().numpy()
    c = 1.0 / n + lam * math.log(1.0 / n)  # q + λ log q at q = 1/n
    mu = float(vn.min()) - lam - c  # every q_i ≥ 1/n here: s(μ) ≥ 1
    for _ in range(iters):
        w = wrightomega((vn - mu) / lam - 1.0 - math.log(lam)).real
        excess = lam * float(w.sum()) - 1.0
        if excess <= 1e-15:
            break
        mu += excess / float((w / (1.0 + w)).sum())
    q = torch.as_tensor(lam * w, dtype=v.dtype, device=v.device)
    return q / q.sum()
