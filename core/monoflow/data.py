"""Real data for MonoFlow: a fixed training sample (minibatches drawn from it), or a sampler that gives a fresh
minibatch at every discriminator step (as the official 2-D Gaussian toy does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def minibatch(x: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """`n` rows of `x` drawn uniformly with replacement (the indices from `rng`, on its device)."""
    idx = torch.randint(0, x.shape[0], (n,), generator=rng, device=rng.device).to(x.device)
    return x[idx]


@dataclass(frozen=True)
class FixedSample:
    """A fixed training sample `x (n, d)`; each minibatch is drawn from it."""

    x: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def batch(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return minibatch(self.x, n, rng)


@dataclass(frozen=True)
class FreshSampler:
    """A data distribution: `draw(n, rng)` gives a fresh minibatch every time (float32 on `device`)."""

    draw: Callable[[int, torch.Generator], torch.Tensor]
    dim: int
    device: torch.device

    def batch(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return self.draw(n, rng).to(device=self.device, dtype=torch.float32)


RealData = FixedSample | FreshSampler
