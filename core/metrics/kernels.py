"""Kernel two-sample distances: unbiased Gaussian-kernel MMD^2 and the energy distance (chunked, torch)."""

from __future__ import annotations

from collections.abc import Callable

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


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """Median heuristic: median pairwise distance of the pooled sample (strided subset of <= 1000 points)."""
    z = torch.cat([x, y])
    if z.shape[0] > MEDIAN_SUBSAMPLE:
        z = z[torch.linspace(0, z.shape[0] - 1, MEDIAN_SUBSAMPLE, device=z.device).long()]
    d = cdist(z, z)
    off = d[~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)]
    h = float(off.median()) if off.numel() else 0.0
    return h if h > 0 else 1.0


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with `k(a, b) = exp(-|a - b|^2 / (2 h^2))`, `h` = `bandwidth` or the median heuristic.

    `MMD^2_u = sum_{i!=j} k(x_i,x_j)/(n(n-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_ij k(x_i,y_j)/(nm)`;
    it can be slightly negative when both sets come from one distribution. Needs n, m >= 2.
    """
    x, y = as_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    require(n >= 2 and m >= 2, f"mmd2 needs >= 2 points per set, got {tuple(x.shape)} and {tuple(y.shape)}")
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    require(h > 0 and h != float("inf"), f"bandwidth must be a finite number > 0, got {bandwidth}")
    c = torch.cat([x, y]).mean(dim=0)
    x, y = x - c, y - c

    def kern(d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(d**2) / (2 * h * h))

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
