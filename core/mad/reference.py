"""Real data of a loop and its held-out reference: the Gaussian truth or a bundled data set.

Every draw takes one `torch.Generator` per seed (`generation_rng(seed_id, generation, stream)`), so seed k's
numbers are the same whether 1 or 1000 seeds run beside it, and a run can be split across machines.
The held-out test set depends only on the data settings (a fixed stream), like a benchmark's test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gentool.core.data import sample_data
from gentool.core.mad.families import Generators, normal, sample_moments

REFERENCE_SEED = 0
STREAMS = {"train": 0, "metrics": 1, "fresh": 2, "reference": 7}


def generation_rng(seed: int, generation: int, stream: int = 0) -> torch.Generator:
    """The RNG of (seed id, generation, stream): seeded by `SeedSequence([seed, generation, stream])`."""
    seq = np.random.SeedSequence([int(seed), int(generation), int(stream)])
    state = seq.generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def seed_rngs(seed_ids: list[int], generation: int, stream: str = "train") -> Generators:
    """One generator per seed id for `generation` and the named stream."""
    return [generation_rng(s, generation, STREAMS[stream]) for s in seed_ids]


def gaussian_truth(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the `gaussian` data: `N(0, diag(1, …, 2))` (linearly spaced; 1-D: N(0, 1))."""
    hi = 2.0 if dim > 1 else 1.0
    return torch.zeros(dim, dtype=torch.float64), torch.diag(torch.linspace(1.0, hi, dim, dtype=torch.float64))


def sample_real(data: str, dim: int, n: int, gens: Generators, split: str = "train") -> torch.Tensor:
    """`(S, n, d)` real points, row s from `gens[s]` (float64 for Gaussian data, float32 otherwise)."""
    if data == "gaussian":
        mean, cov = gaussian_truth(dim)
        return mean + normal(gens, n, dim) * torch.diagonal(cov).sqrt()
    return torch.stack([sample_data(data, n, g, split=split) for g in gens])


@dataclass
class Reference:
    """Held-out real data and its reference moments (exact for Gaussian data); digits also get features."""

    test: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    test_features: torch.Tensor | None = None


def make_reference(data: str, dim: int, n_test: int) -> Reference:
    """The held-out set (`n_test` points of the test split, fixed stream) and its moments."""
    gens = [generation_rng(REFERENCE_SEED, 0, STREAMS["reference"])]
    test = sample_real(data, dim, n_test, gens, split="test")[0]
    if data == "gaussian":
        mean, cov = gaussian_truth(dim)
    else:
        m, c = sample_moments(test[None])
        mean, cov = m[0], c[0]
    feats = None
    if data == "digits":
        from gentool.core.metrics import digits_features

        feats = digits_features(test)
    return Reference(test, mean, cov, feats)
