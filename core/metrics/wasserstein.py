"""Wasserstein-2 distances between empirical measures: sliced (torch) and exact (POT network simplex)."""

from __future__ import annotations

import numpy as np
import torch
from gentool.core.io import check_allocation
from gentool.core.metrics._checks import as_pair, cdist


def w2_1d_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact `W2^2` between uniform empirical measures on the line, column by column.

    `x (n, P)`, `y (m, P)`: `W2^2 = int_0^1 (F_x^{-1}(u) - F_y^{-1}(u))^2 du`, evaluated exactly on the
    merged breakpoints `{i/n} U {j/m}` where both quantile functions are constant. Returns `(P,)`.
    """
    n, m = x.shape[0], y.shape[0]
    xs, ys = torch.sort(x, dim=0).values, torch.sort(y, dim=0).values
    if n == m:
        return ((xs - ys) ** 2).mean(dim=0)
    dt = torch.float64
    levels = [torch.arange(1, n + 1, dtype=dt) / n, torch.arange(1, m + 1, dtype=dt) / m]
    u = torch.sort(torch.cat(levels)).values
    du = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - du / 2
    ix = torch.clamp((mid * n).floor().long(), max=n - 1).to(x.device)
    iy = torch.clamp((mid * m).floor().long(), max=m - 1).to(x.device)
    return (du.to(x.device, x.dtype)[:, None] * (xs[ix] - ys[iy]) ** 2).sum(dim=0)


def random_directions(d: int, n_projections: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`(d, n_projections)` directions drawn uniformly on the unit sphere (on the generator's device)."""
    device = generator.device if generator is not None else "cpu"
    theta = torch.randn(d, n_projections, generator=generator, dtype=dtype, device=device)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_w2(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
              generator: torch.Generator | None = None, projections: torch.Tensor | None = None) -> float:
    """Sliced W2 (not squared): `sqrt(E_theta W2^2(theta^T x, theta^T y))` over `n_projections` directions.

    Same definition as `ot.sliced_wasserstein_distance(p=2)`; `projections (d, P)` may be given explicitly.
    """
    x, y = as_pair(x, y)
    if projections is None:
        projections = random_directions(x.shape[1], n_projections, generator, x.dtype)
    theta = projections
    theta = torch.as_tensor(theta).to(x.device, x.dtype)
    return float(w2_1d_squared(x @ theta, y @ theta).mean().clamp_min(0).sqrt())


def exact_w2_bytes(n: int, m: int) -> float:
    """Peak bytes of `exact_w2` on n and m points: the n × m float64 cost matrix and POT's transport plan."""
    return 16.0 * n * m


def exact_w2(x: torch.Tensor, y: torch.Tensor, num_iter_max: int = 1_000_000) -> float:
    """Exact W2 (not squared) between uniform empirical measures: `sqrt(ot.emd2(a, b, |x_i - y_j|^2))`.

    Cost O(n^3); meant for a few thousand points at most. Sets whose cost matrix does not fit in memory are
    `BadInput` (`check_allocation`) before it is built.
    """
    x, y = as_pair(x, y)
    check_allocation(exact_w2_bytes(len(x), len(y)), f"exact W2 between {len(x)} and {len(y)} points")
    cost = (cdist(x.detach().cpu().double(), y.detach().cpu().double()) ** 2).numpy()
    a, b = np.full(cost.shape[0], 1.0 / cost.shape[0]), np.full(cost.shape[1], 1.0 / cost.shape[1])
    import ot  # POT is slow to import; only exact W2 needs it

    return float(np.sqrt(max(float(ot.emd2(a, b, cost, numItermax=num_iter_max)), 0.0)))
