"""PRDC uses the reference definition of `prdc` (Naeem et al. 2020, clovaai/generative-evaluation-prdc): a point
is inside a k-NN ball when its distance is strictly below the radius. Ties (duplicated or quantised data) are the
case where `<` and `<=` differ, so the checks use integer grids and duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gentool.core.metrics.knn import density_coverage, precision_recall


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """`prdc.compute_prdc` transcribed (sklearn pairwise distances -> numpy; `np.partition` k-th radius)."""
    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def kth(d: np.ndarray) -> np.ndarray:
        return np.partition(d, k, axis=-1)[..., :k + 1].max(axis=-1)

    r_real, r_fake = kth(distances(real, real)), kth(distances(fake, fake))
    d_rf = distances(real, fake)
    return {
        "precision": (d_rf < np.expand_dims(r_real, axis=1)).any(axis=0).mean(),
        "recall": (d_rf < np.expand_dims(r_fake, axis=0)).any(axis=1).mean(),
        "density": (1.0 / k) * (d_rf < np.expand_dims(r_real, axis=1)).sum(axis=0).mean(),
        "coverage": (d_rf.min(axis=1) < r_real).mean(),
    }


def _ours(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    r, f = torch.as_tensor(real), torch.as_tensor(fake)
    precision, recall = precision_recall(r, f, k=k)
    density, coverage = density_coverage(r, f, k=k)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prdc_matches_reference_on_quantised_data(seed: int, k: int) -> None:
    """Integer grids: many distances tie exactly with the radii."""
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 4, size=(40, 2)).astype(float)
    fake = rng.integers(0, 4, size=(30, 2)).astype(float) + rng.integers(0, 2, size=(30, 1))
    ours, ref = _ours(real, fake, k), reference_prdc(real, fake, k)
    assert ours == pytest.approx(ref, abs=1e-15)


def test_ties_are_not_neighbours() -> None:
    """Closed form: reals 0, 1, ..., 4 on a line have k=1 radius 1; a fake at distance exactly 1 from the end
    points lies outside their balls (`d < r`), a fake at distance 0.5 inside."""
    real = np.arange(5.0)[:, None]
    fake = np.array([[5.0], [-1.0]])  # distance exactly 1 = r from the end points, farther from the others
    ours = _ours(real, fake, 1)
    assert ours["precision"] == 0.0 and ours["density"] == 0.0 and ours["coverage"] == 0.0
    assert ours == pytest.approx(reference_prdc(real, fake, 1), abs=0)
    inside = np.array([[4.5], [-0.5]])  # strictly inside the end balls
    assert _ours(real, inside, 1)["precision"] == 1.0
    assert _ours(real, inside, 1)["coverage"] == pytest.approx(2 / 5)


def test_duplicated_real_points_have_zero_radius() -> None:
    """k duplicates of a point give it radius 0: nothing (not even the same point) lies strictly inside."""
    real = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    fake = np.array([[0.0, 0.0], [3.0, 0.0]])
    ours = _ours(real, fake, 1)
    assert ours["density"] == 0.0 and ours["coverage"] == 0.0 and ours["precision"] == 0.0
    assert ours == pytest.approx(reference_prdc(real, fake, 1), abs=0)
