"""MonoFlow generator mode on the 8-Gaussian ring: every mode covered with the default budget (slow, CPU)."""

from __future__ import annotations

import pytest
import torch
from gentool.core.data import ring_mixture, sample_data
from gentool.core.monoflow import MonoFlowConfig, sample_generator, train_generator


def _mode_counts(x: torch.Tensor) -> torch.Tensor:
    """Samples within 3 std of each ring mode (independent of `gentool.core.metrics`)."""
    ring = ring_mixture()
    dist, nearest = torch.cdist(x.double(), ring.means).min(1)
    return torch.bincount(nearest[dist < 3 * ring.stds[0]], minlength=ring.means.shape[0])


@pytest.mark.slow
@pytest.mark.parametrize("h", ["logit", "ns", "arcsinh"])
def test_default_budget_covers_all_ring_modes(h: str) -> None:
    g = torch.Generator().manual_seed(0)
    res = train_generator(sample_data("ring", 20_000, g), MonoFlowConfig(h=h), generator=g)
    x = sample_generator(res.generator, 5000, res.latent_dim, generator=torch.Generator().manual_seed(1))
    counts = _mode_counts(x)
    assert int((counts >= 0.02 * 5000).sum()) == 8, counts.tolist()  # each mode holds >= 2% (ideal 12.5%)
    assert counts.sum().item() >= 0.7 * 5000  # most samples are high quality (within 3 std of a mode)
    try:
        from gentool.core.metrics import mode_coverage
    except ImportError:
        return
    ring = ring_mixture()
    assert mode_coverage(x.double(), ring.means, float(ring.stds[0]))["covered"] == 8
