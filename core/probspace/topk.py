"""Smooth Top-k maps (SPEC §4b): `(x (..., n), k, τ) -> p` with `0 ≤ p_i ≤ 1`, `Σ_i p_i = k`.

`T_k(x)_i = 1` if `x_i` is among the k largest entries, else 0; `T_k(x) = argmax_{p ∈ C_k} ⟨x, p⟩` over the
capped simplex `C_k = {0 ≤ p ≤ 1, Σ p = k}`. The smooth maps regularise that linear program:

    threshold  p_i = σ((x_i − λ)/τ),   λ(x) solving Σ_i σ((x_i − λ)/τ) = k
    entropic   argmax_{p ∈ C_k} ⟨x, p⟩ + τ Σ_i H_b(p_i)       (= threshold; H_b the binary entropy)
    sparse     argmin_{p ∈ C_k} ‖p − x/τ‖²  = clip(x/τ − λ, 0, 1),   Σ = k
    hard       T_k(x)  (ties broken by index: the lower index wins), gradient zero

    p = smooth_topk(x, k=2, tau=0.1, map="threshold")      # or TOPK_MAPS["sparse"](x, 2, 0.1)

Every map is batched over the leading dimensions, returns the device and dtype of x (half precision is
computed in float32), and is invariant to adding a constant to x. k is an integer in [1, n − 1] (k = n would
put the threshold at −∞; its answer, all ones, needs no map); τ > 0 is a finite number (no gradient flows to
it); x is finite and real, and x/τ must not come within a factor 4 of overflowing.

Gradients are exact, by implicit differentiation of the equation that defines each map (no unrolled
iterations): threshold/entropic give `∂p/∂x = (1/τ)(diag(w) − w wᵀ/Σw)`, `w_i = p_i(1 − p_i)` (only the
scalar λ(x) is an autograd Function, `∂λ/∂x_j = w_j/Σw`, so second derivatives are exact too); sparse gives
`∂p/∂x = (1/τ)(I_S − 1_S 1_Sᵀ/|S|)` on the free set `S = {0 < p < 1}` and 0 elsewhere.

k = 1: the cap p ≤ 1 is implied by p ≥ 0 and Σp = 1, so sparse is exactly sparsemax(x/τ)
(`project_simplex`). threshold is *not* softmax: exactly, the odds `o_i = p_i/(1 − p_i) = exp(x_i/τ − λ/τ)`
are proportional to softmax, `softmax(x/τ) = o/Σo`; the two differ by `|p_i − softmax(x/τ)_i| ≤
softmax(x/τ)_i · m/(1 − m)`, `m = max_i p_i`, so they agree only when every p_i is small.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from gentool.core.errors import NumericalFailure, choose, require
from torch import Tensor


def check_topk(x: Tensor, k: object, tau: object) -> int:
    """Validate the arguments of a Top-k map; return n (the size of the last dimension)."""
    require(isinstance(x, Tensor) and x.is_floating_point(),
            f"x must be a real floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    require(x.ndim >= 1 and x.shape[-1] >= 2, f"x must have at least 2 entries in its last dimension (k is in "
            f"[1, n - 1]), got shape {tuple(x.shape)}")
    require(bool(torch.isfinite(x).all()), f"x must be finite, got {x.flatten()[:8].tolist()}")
    n = x.shape[-1]
    require(isinstance(k, numbers.Integral) and not isinstance(k, bool) and 1 <= int(k) <= n - 1,
            f"k must be an integer in [1, {n - 1}] (x has n = {n} entries), got {k!r}")
    require(isinstance(tau, numbers.Real) and not isinstance(tau, bool) and math.isfinite(tau) and tau > 0,
            f"tau must be a finite number > 0, got {tau!r}")
    return n


def _scaled(x: Tensor, tau: float) -> Tensor:
    """z = x/τ in the precision the maps compute in (float32 at least); refused when z is so large that
    differences of its entries could overflow."""
    z = (x if x.dtype in (torch.float32, torch.float64) else x.float()) / tau
    limit = torch.finfo(z.dtype).max / 4
    top = float(z.detach().abs().max()) if z.numel() else 0.0
    require(top < limit, f"x/tau must stay below {limit:.3g} in magnitude, got {top:.3g}; use a larger tau")
    return z


def _kth_largest(y: Tensor, k: int) -> Tensor:
    """The k-th largest entry along the last dimension, keeping it (shape (..., 1))."""
    return torch.kthvalue(y, y.shape[-1] - k + 1, dim=-1, keepdim=True).values


# ---- threshold / entropic -------------------------------------------------------------------------------

def solve_threshold(y: Tensor, k: int) -> Tensor:
    """μ (shape (...,)) solving `Σ_i σ(y_i − μ) = k` to machine precision (safeguarded Newton + bisection).

    `f(μ) = Σ σ(y_i − μ) − k` decreases in μ with `f′ = −Σ w_i`, `w_i = σ(y_i − μ)σ(μ − y_i)`. With `a ≥ b` the
    k-th and (k+1)-th largest y, the root lies in `[b − log k − 1, a + log(n − k) + 1]` (at the left end the top
    k + 1 entries exceed k/(k + 1), at the right end all but the top k − 1 stay below 1/(n − k + 1)). Newton
    starts at (a + b)/2 and every evaluation tightens the bracket; a Newton step that leaves the bracket, or is
    not at most half the step before (a stalling or cycling Newton), is replaced by bisection (the safeguard of
    Numerical Recipes' rtsafe). It stops once |f| ≤ 4 eps k or the step is within 2 eps of max(|μ|, 1).
    """
    n = y.shape[-1]
    a, b = _kth_largest(y, k).squeeze(-1), _kth_largest(y, k + 1).squeeze(-1)
    lo, hi = b - (math.log(k) + 1.0), a + (math.log(n - k) + 1.0)
    mu, last = a / 2 + b / 2, hi - lo
    info = torch.finfo(y.dtype)
    eps, steps = info.eps, 2 * math.ceil(math.log2(info.max) - math.log2(info.eps)) + 16  # halvings to eps, twice
    for _ in range(steps):
        t = y - mu.unsqueeze(-1)
        s = torch.sigmoid(t)
        f, sw = s.sum(-1) - k, (s * torch.sigmoid(-t)).sum(-1)
        lo, hi = torch.where(f > 0, mu, lo), torch.where(f < 0, mu, hi)
        newton = mu + f / sw
        bisect = ~((newton > lo) & (newton < hi)) | ((newton - mu).abs() > last / 2)
        new = torch.where(bisect, lo / 2 + hi / 2, newton)
        tol = 2 * eps * torch.maximum(mu.abs(), torch.ones_like(mu))
        done = (f.abs() <= 4 * eps * k) | ((new - mu).abs() <= tol) | (hi - lo <= tol)
        last = torch.where(done, last, (new - mu).abs())
        mu = torch.where(done, mu, new)
        if bool(done.all()):
            return mu
    raise NumericalFailure(f"the Top-k threshold did not converge in {steps} safeguarded Newton steps")


class _Threshold(torch.autograd.Function):
    """μ(y) defined by `Σ σ(y_i − μ) = k`; implicit differentiation: `∂μ/∂y_j = w_j/Σ w`."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, y: Tensor, k: int) -> Tensor:
        mu = solve_threshold(y.detach(), k)
        ctx.save_for_backward(y, mu)
        return mu

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        y, mu = ctx.saved_tensors
        t = y - mu.unsqueeze(-1)
        w = torch.sigmoid(t) * torch.sigmoid(-t)
        total = w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)  # all saturated: w = 0, grad 0
        return grad.unsqueeze(-1) * w / total, None


def threshold_topk(x: Tensor, k: int, tau: float) -> Tensor:
    """`p_i = σ((x_i − λ)/τ)` with λ(x) solving `Σ_i σ((x_i − λ)/τ) = k`.

    Computed on `y = x/τ − c` with c the k-th largest x/τ (a constant: the map is shift invariant), so λ is
    resolved to machine precision next to the entries it separates.
    Jacobian `∂p/∂x = (1/τ)(diag(w) − w wᵀ/Σw)`, `w_i = p_i(1 − p_i)`.
    """
    check_topk(x, k, tau)
    z = _scaled(x, tau)
    y = z - _kth_largest(z.detach(), int(k))
    mu = _Threshold.apply(y, int(k))
    return torch.sigmoid(y - mu.unsqueeze(-1)).to(x.dtype)


def entropic_topk(x: Tensor, k: int, tau: float) -> Tensor:
    """`argmax_{p ∈ C_k} ⟨x, p⟩ + τ Σ_i H_b(p_i)`, `H_b(q) = −q log q − (1 − q) log(1 − q)`.

    H_b's slope `log((1 − q)/q)` is ±∞ at the bounds, so the maximiser is interior and stationarity
    `x_i + τ log((1 − p_i)/p_i) = λ` gives `p_i = σ((x_i − λ)/τ)` with `Σ p = k`: the threshold map (the
    objective is strictly concave, so this stationary point is the maximiser).
    """
    return threshold_topk(x, k, tau)


# ---- sparse -----------------------------------------------------------------------------------------------

def project_capped_simplex(z: Tensor, k: int) -> Tensor:
    """Euclidean projection of z (..., n) onto `C_k`: `p = clip(z − λ, 0, 1)`, `Σ p = k`, exact.

    `g(λ) = Σ clip(z_i − λ, 0, 1)` is continuous, piecewise linear and nonincreasing with breakpoints
    `z_i − 1` and `z_i`. A binary search over the sorted breakpoints finds consecutive t_lo < t_hi with
    `g(t_lo) > k ≥ g(t_hi)`; on that segment the ones U, the free set F (|F| ≥ 1, as g falls) and the zeros are
    fixed, so `λ = (Σ_F z + |U| − k)/|F|` exactly (computed relative to t_hi, so the free entries keep their
    digits). When k entries sit at least 1 above the rest, λ is the (k+1)-th largest z and p = T_k exactly.
    """
    lower = z - 1.0
    t = torch.sort(torch.cat([lower, z], dim=-1), dim=-1).values
    lo = torch.zeros(z.shape[:-1], dtype=torch.long, device=z.device)
    hi = torch.full_like(lo, t.shape[-1] - 1)  # g(t_0) = n > k ≥ 0 = g(t_last)
    for _ in range(t.shape[-1].bit_length()):
        mid = (lo + hi) // 2
        t_mid = t.gather(-1, mid.unsqueeze(-1))
        above = (z - t_mid).clamp(0.0, 1.0).sum(-1) > k
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    t_lo, t_hi = t.gather(-1, lo.unsqueeze(-1)), t.gather(-1, hi.unsqueeze(-1))
    free = (lower <= t_lo) & (z >= t_hi)
    ones = (lower >= t_hi).sum(-1, keepdim=True)
    y = z - t_hi
    lam = (torch.where(free, y, 0.0).sum(-1, keepdim=True) + ones - k) / free.sum(-1, keepdim=True).clamp_min(1)
    lam = torch.minimum(torch.maximum(lam, t_lo - t_hi), torch.zeros_like(lam))
    return (y - lam).clamp(0.0, 1.0)


class _CappedProjection(torch.autograd.Function):
    """p = proj_{C_k}(z); Jacobian `I_S − 1_S 1_Sᵀ/|S|` on the free set `S = {0 < p < 1}`, 0 elsewhere."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, z: Tensor, k: int) -> Tensor:
        p = project_capped_simplex(z.detach(), k)
        ctx.save_for_backward((p > 0) & (p < 1))
        return p

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (free,) = ctx.saved_tensors
        g = torch.where(free, grad, 0.0)
        mean = g.sum(-1, keepdim=True) / free.sum(-1, keepdim=True).clamp_min(1)
        return torch.where(free, g - mean, 0.0), None


def sparse_topk(x: Tensor, k: int, tau: float) -> Tensor:
    """`argmin_{p ∈ C_k} ‖p − x/τ‖²` = `clip(x/τ − λ, 0, 1)` with `Σ p = k` (exactly k ones once τ ≤ the gap
    between the k-th and (k+1)-th largest x). Jacobian `(1/τ)(I_S − 1_S 1_Sᵀ/|S|)` on `S = {0 < p < 1}`."""
    check_topk(x, k, tau)
    return _CappedProjection.apply(_scaled(x, tau), int(k)).to(x.dtype)


# ---- hard -------------------------------------------------------------------------------------------------

class _ZeroGrad(torch.autograd.Function):
    """Identity on a piecewise-constant value: the gradient with respect to x is zero."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, value: Tensor) -> Tensor:
        return value

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return torch.zeros_like(grad), None


def hard_topk(x: Tensor, k: int, tau: float) -> Tensor:
    """`T_k(x)`: 1 for the k largest entries (equal entries: the lower index first), else 0; τ is checked
    but unused; the gradient is zero (T_k is piecewise constant)."""
    check_topk(x, k, tau)
    order = torch.sort(x.detach(), dim=-1, descending=True, stable=True).indices
    value = torch.zeros_like(x).scatter_(-1, order[..., : int(k)], 1.0)
    return _ZeroGrad.apply(x, value) if x.requires_grad else value


# ---- the registry ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopkMap:
    """One Top-k map: its name, the function `(x, k, tau) -> p`, and a one-line description."""

    name: str
    fn: Callable[[Tensor, int, float], Tensor]
    summary: str

    def __call__(self, x: Tensor, k: int, tau: float) -> Tensor:
        return self.fn(x, k, tau)


TOPK_MAPS: dict[str, TopkMap] = {m.name: m for m in (
    TopkMap("threshold", threshold_topk, "sigmoid((x - lambda)/tau) with sum k"),
    TopkMap("entropic", entropic_topk, "argmax <x,p> + tau * binary entropy over the capped simplex"),
    TopkMap("sparse", sparse_topk, "Euclidean projection of x/tau onto the capped simplex"),
    TopkMap("hard", hard_topk, "T_k: ones at the k largest entries (ties: lower index)"),
)}


def smooth_topk(x: Tensor, k: int, tau: float, map: str = "threshold") -> Tensor:
    """The Top-k map named `map` (one of `TOPK_MAPS`) applied to x."""
    return TOPK_MAPS[choose("map", map, TOPK_MAPS)](x, k, tau)
