"""Exact moments of the Fokker–Planck flow of a quadratic free energy (SPEC §4 checks).

`F[p] = ∫V p + (a/2)∫∫‖x − y‖² p(x)p(y) + ε∫p log p` with `V(x) = ½(x − m)ᵀP(x − m)` (P = C⁻¹ for KL to
N(m, C), P = 0 without a potential). Particles move by `dx = −P(x − m) dt − a(x − x̄) dt + √(2ε) dW` (or the
deterministic flow with `−ε∇log p_t`), and for *any* initial law the mean and covariance solve

    dμ/dt = −P(μ − m),        dΣ/dt = −KΣ − ΣK + 2εI,        K = P + aI,

so `μ_t = m + e^{−Pt}(μ₀ − m)` and, in the eigenbasis of P (K shares it, eigenvalues κᵢ = λᵢ + a),
`Σ̃ᵢⱼ(t) = Σ̃ᵢⱼ(0) e^{−(κᵢ+κⱼ)t} + δᵢⱼ ε (1 − e^{−2κᵢt})/κᵢ` (`2εt` when κᵢ = 0). Special cases: heat flow
(P = 0, a = 0) `Σ_t = Σ₀ + 2εt I`; KL to N(0, I) `m_t = m₀e^{−t}`, `C_t = I + (C₀ − I)e^{−2t}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gentool.core.metrics.gaussian import mean_cov

Moments = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class QuadraticFlow:
    """The free energy above: `precision` P (d, d) symmetric PSD, `center` m (d,), `interaction` a,
    `entropy` ε."""

    precision: torch.Tensor
    center: torch.Tensor
    interaction: float = 0.0
    entropy: float = 1.0

    def _eig(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.precision.double()
        return torch.linalg.eigh((p + p.T) / 2)

    def moments(self, t: float, mean0: torch.Tensor, cov0: torch.Tensor) -> Moments:
        """`(μ_t, Σ_t)` from `(μ₀, Σ₀)` at flow time t."""
        lam, u = self._eig()
        m, mu0, s0 = self.center.double(), mean0.double(), cov0.double()
        mean = m + u @ (torch.exp(-lam * t) * (u.T @ (mu0 - m)))
        kappa = lam + self.interaction
        decay = torch.exp(-(kappa[:, None] + kappa[None, :]) * t)
        tiny = kappa.abs() < 1e-12
        growth = torch.where(tiny, torch.full_like(kappa, 2 * t), -torch.expm1(-2 * kappa * t) / torch.where(
            tiny, torch.ones_like(kappa), kappa))
        st = (u.T @ s0 @ u) * decay + torch.diag(self.entropy * growth)
        return mean, u @ st @ u.T

    def limit(self, mean0: torch.Tensor) -> Moments | None:
        """`(μ_∞, Σ_∞ = εK⁻¹)` when K is positive definite, else None; μ_∞ keeps μ₀'s part in the null space
        of P (the mean is conserved there)."""
        lam, u = self._eig()
        kappa = lam + self.interaction
        if not bool((kappa > 1e-12).all()):
            return None
        free = lam.abs() <= 1e-12
        coef = torch.where(free, u.T @ (mean0.double() - self.center.double()), torch.zeros_like(lam))
        return self.center.double() + u @ coef, u @ torch.diag(self.entropy / kappa) @ u.T


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """`(‖x̄ − μ‖₂, ‖Ĉov(x) − Σ‖_F)`: the Euclidean mean error and the Frobenius covariance error of the
    particles `x (n, d)` (unbiased sample covariance) against the moments `(μ, Σ)`."""
    m, c = mean_cov(x.double())
    return float((m - mean.to(m)).norm()), float((c - cov.to(c)).norm())
