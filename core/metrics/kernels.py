"""Kernel two-sample distances: unbiased Gaussian-kernel MMD^2 and the energy distance (chunked, torch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from gentool.core.errors import require
from gentool.core.metrics._checks import as_pair, cdist, row_chunks

MEDIAN_SUBSAMPLE = 1000


def _block_sum(a: torch.Tensor, b: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`sum_ij fn(|a_i - b_j|)` accumulated in float64 over row chunks."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for rows in row_chunks(a.shape[0], b.shape[0]):
        total += fn(cdist(a[rows], b)).sum(dtype=torch.float64)
    return total


def median_bandwidth(x: torch.Tensor, y: torch.Tensor | None = None, *, max_points: int = MEDIAN_SUBSAMPLE) -> float:
    """The median heuristic, gentool's one convention: `h = median ‖zᵢ − zⱼ‖` over the distinct pairs of the pooled
    sample z = x (or x ∪ y), on an evenly strided subset of at most `max_points` points; 1.0 when every
    distance is 0. Kernels written `exp(−‖a − b‖²/(2h²))` with this h are the "median-distance" kernels
    (SVGD's rule and the MMD flow scale it; see `gentool.core.probspace.kernels`)."""
    z = x if y is None else torch.cat([x, y])
    if z.shape[0] > max_points:
        z = z[torch.linspace(0, z.shape[0] - 1, max_points, device=z.device).long()]
    d = cdist(z, z)
    off = d[~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)]
    h = float(off.median()) if off.numel() else 0.0
    return h if h > 0 else 1.0


def _bandwidths(x: torch.Tensor, y: torch.Tensor, bandwidth: float | Sequence[float] | None) -> tuple[float, ...]:
    hs = (median_bandwidth(x, y),) if bandwidth is None else (
        tuple(float(b) for b in bandwidth) if isinstance(bandwidth, Sequence) else (float(bandwidth),))
    require(len(hs) > 0 and all(0 < h < float("inf") for h in hs),
            f"bandwidth must be finite numbers > 0, got {bandwidth}")
    return hs


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | Sequence[float] | None = None) -> float:
    """Unbiased MMD^2 with `k(a, b) = mean_h exp(-|a - b|^2 / (2 h^2))` over the bandwidths h: `bandwidth`
    (one number or a set of them; a set gives a multi-scale kernel), or the median heuristic.

    `MMD^2_u = sum_{i!=j} k(x_i,x_j)/(n(n-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_ij k(x_i,y_j)/(nm)`;
    it can be slightly negative when both sets come from one distribution. Needs n, m >= 2.
    """
    x, y = as_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    require(n >= 2 and m >= 2, f"mmd2 needs >= 2 points per set, got {tuple(x.shape)} and {tuple(y.shape)}")
    hs = _bandwidths(x, y, bandwidth)
    c = torch.cat([x, y]).mean(dim=0)
    x, y = x - c, y - c

    def kern(d: torch.Tensor) -> torch.Tensor:
        d2 = d**2
        return sum(torch.exp(-d2 / (2 * h * h)) for h in hs) / len(hs)

    kxx = (_block_sum(x, x, kern) - n) / (n * (n - 1))
    kyy = (_block_sum(y, y, kern) - m) / (m * (m - 1))
    kxy = _block_sum(x, y, kern) / (n * m)
    return float(kxx + kyy - 2 * kxy)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance (V-statistic, >= 0): `2 E|X - Y| - E|X - X'| - E|Y - Y'|` over all pairs."""
    x, y = as_pair(x, y)
    c = torch.cat([x, y]).mean(dim=0)
    x, y = x - c, y - c
    n, m = x.shape[0], y.shape[0]

    def ident(d: torch.Tensor) -> torch.Tensor:
        return d

    exy = _block_sum(x, y, ident) / (n * m)
    exx = _block_sum(x, x, ident) / (n * n)
    eyy = _block_sum(y, y, ident) / (m * m)
    return float((2 * exy - exx - eyy).clamp_min(0))
