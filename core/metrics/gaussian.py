"""Gaussian closed forms: moments, Bures-Wasserstein W2 and the Frechet distance."""

from __future__ import annotations

import numpy as np
import torch
from gentool.core.errors import BadInput, require
from gentool.core.metrics._checks import as_pair


def mean_cov(x: torch.Tensor, ddof: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean `(..., d)` and covariance `(..., d, d)` of samples `x (..., n, d)`, dividing by `n - ddof`
    (ddof 1: unbiased, 0: maximum likelihood). Batched over leading dims; needs n > ddof."""
    x = torch.as_tensor(x)
    require(x.dim() >= 2 and x.shape[-2] > ddof, f"mean_cov needs samples (..., n, d) with n > {ddof}, got shape "
            f"{tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.double()
    mean = x.mean(dim=-2)
    xc = x - mean.unsqueeze(-2)
    return mean, xc.transpose(-1, -2) @ xc / (x.shape[-2] - ddof)


def sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of (batches of) PSD matrices by `eigh`; negative eigenvalues clipped to 0."""
    s = (s + s.transpose(-1, -2)) / 2
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)


def regular_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Whether the ascending eigenvalues `w (..., d)` of symmetric PSD matrices are those of regular ones:
    `w_1 > d eps w_d` (eps of the dtype). Below that a matrix is singular up to rounding: its determinant is 0,
    and its rounded eigenvalues near 0 (tiny, or negative) say nothing. A sample covariance of n <= d points
    always is singular (rank <= n - 1)."""
    return w[..., 0] > w.shape[-1] * torch.finfo(w.dtype).eps * w[..., -1]


def psd_log_det(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log det S, regular)` of (batches of) symmetric PSD matrices `(..., d, d)`: `sum_i log w_i` over the
    eigenvalues where `regular_spectrum`, else -inf (det S = 0)."""
    w = torch.linalg.eigvalsh((s + s.transpose(-1, -2)) / 2)
    regular = regular_spectrum(w)
    logdet = torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)).sum(-1)
    return torch.where(regular, logdet, torch.full_like(logdet, -torch.inf)), regular


def gaussian_w2_squared(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor,
                        s2: torch.Tensor) -> torch.Tensor:
    """Batched Bures formula `W2^2 = |m1 - m2|^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2)`.

    Means `(..., d)`, covariances `(..., d, d)`; returns shape `(...)` (differentiable, any device/dtype).
    """
    r2 = sqrtm_psd(s2)
    cross = sqrtm_psd(r2 @ s1 @ r2)
    tr = torch.diagonal(s1 + s2 - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    return (((m1 - m2) ** 2).sum(-1) + tr).clamp_min(0)


def _as_moments(m: torch.Tensor | np.ndarray, s: torch.Tensor | np.ndarray,
                name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(d,)` and covariance `(d, d)` as finite float64 CPU tensors, else `BadInput`."""
    mt, st = torch.as_tensor(m).double().cpu(), torch.as_tensor(s).double().cpu()
    if mt.dim() != 1 or st.shape != (mt.shape[0], mt.shape[0]):
        shapes = f"{tuple(mt.shape)} and {tuple(st.shape)}"
        raise BadInput(f"{name}: mean must be (d,) and covariance (d, d), got {shapes}")
    finite = bool(torch.isfinite(mt).all() and torch.isfinite(st).all())
    require(finite, f"{name} contains NaN or infinite values")
    return mt, st


def gaussian_w2(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> float:
    """W2 (not squared) between `N(m1, S1)` and `N(m2, S2)` by the Bures closed form, in float64."""
    a, sa = _as_moments(m1, s1, "first Gaussian")
    b, sb = _as_moments(m2, s2, "second Gaussian")
    if a.shape != b.shape:
        raise BadInput(f"Gaussians of different dimension: means {tuple(a.shape)} and {tuple(b.shape)}")
    return float(gaussian_w2_squared(a, sa, b, sb).sqrt())


def frechet_distance(fx: torch.Tensor, fy: torch.Tensor) -> float:
    """Frechet distance (FID-style, squared): `W2^2` between Gaussians fitted (unbiased cov) to `fx`, `fy`."""
    fx, fy = as_pair(fx, fy, ("fx", "fy"))
    m1, s1 = mean_cov(fx.double())
    m2, s2 = mean_cov(fy.double())
    return float(gaussian_w2_squared(m1, s1, m2, s2))
