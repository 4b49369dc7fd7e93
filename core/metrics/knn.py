"""k-NN manifold metrics: precision/recall (Kynkaanniemi 2019), density/coverage (Naeem et al. 2020)."""

from __future__ import annotations

import torch
from gentool.core.metrics._checks import as_pair, cdist, kth_neighbour_radius, row_chunks


def _inside_count(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point, the number of balls `B(centre_i, radius_i)` that contain it."""
    out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    for rows in row_chunks(points.shape[0], centres.shape[0]):
        out[rows] = (cdist(points[rows], centres) <= radii[None]).sum(dim=1)
    return out


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Improved precision/recall: precision = share of fake points inside the real k-NN manifold
    (union of balls around each real point with radius its k-th neighbour distance); recall = the same
    with the roles swapped."""
    real, fake = as_pair(real, fake, ("real", "fake"))
    r_real, r_fake = kth_neighbour_radius(real, k), kth_neighbour_radius(fake, k)
    precision = (_inside_count(fake, real, r_real) > 0).double().mean()
    recall = (_inside_count(real, fake, r_fake) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density `= (1/(kM)) sum_j sum_i 1[fake_j in B(real_i, r_i)]` (can exceed 1) and coverage = share of
    real points whose nearest fake point lies within their k-NN radius `r_i`."""
    real, fake = as_pair(real, fake, ("real", "fake"))
    radius = kth_neighbour_radius(real, k)
    density = _inside_count(fake, real, radius).double().sum() / (k * fake.shape[0])
    nearest = torch.empty(real.shape[0], dtype=real.dtype, device=real.device)
    for rows in row_chunks(real.shape[0], fake.shape[0]):
        nearest[rows] = cdist(real[rows], fake).min(dim=1).values
    coverage = (nearest <= radius).double().mean()
    return float(density), float(coverage)
