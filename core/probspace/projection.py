"""Exact Euclidean projection onto the probability simplex and simplex membership checks."""

from __future__ import annotations

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
