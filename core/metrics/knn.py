"""k-NN manifold metrics: precision/recall (Kynkaanniemi 2019), density/coverage (Naeem et al. 2020).

Membership of a ball is strict, as in the reference implementation `prdc` (clovaai/generative-evaluation-prdc):
a point at distance `d` from a centre with k-NN radius `r` is inside when `d < r`, so ties (duplicated or
quantised data) are not counted as neighbours.
"""

from __future__ import annotations

import torch
from gentool.core.metrics._checks import as_pair, cdist, kth_neighbour_radius, row_chunks


def _inside_count(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point `x`, `#{i : ||x - centre_i|| < radius_i}`: the number of open balls that contain it."""
    out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    for rows in row_chunks(points.shape[0], centres.shape[0]):
        out[rows] = (cdist(points[rows], centres) < radii[None]).sum(dim=1)
    return out


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Improved precision/recall: precision `= (1/M) sum_j 1[exists i: ||fake_j - real_i|| < r_i]` (share of
    fake points inside the real k-NN manifold, `r_i` the k-th neighbour distance of `real_i`); recall the
    same with the roles swapped."""
    real, fake = as_pair(real, fake, ("real", "fake"))
    r_real, r_fake = kth_neighbour_radius(real, k), kth_neighbour_radius(fake, k)
    precision = (_inside_count(fake, real, r_real) > 0).double().mean()
    recall = (_inside_count(real, fake, r_fake) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density `= (1/(kM)) sum_j sum_i 1[||fake_j - real_i|| < r_i]` (can exceed 1) and coverage
    `= (1/N) sum_i 1[min_j ||fake_j - real_i|| < r_i]`, with `r_i` the k-NN radius of `real_i` among the reals."""
    real, fake = as_pair(real, fake, ("real", "fake"))
    radius = kth_neighbour_radius(real, k)
    density = _inside_count(fake, real, radius).double().sum() / (k * fake.shape[0])
    nearest = torch.empty(real.shape[0], dtype=real.dtype, device=real.device)
    for rows in row_chunks(real.shape[0], fake.shape[0]):
        nearest[rows] = cdist(real[rows], fake).min(dim=1).values
    coverage = (nearest < radius).double().mean()
    return float(density), float(coverage)
