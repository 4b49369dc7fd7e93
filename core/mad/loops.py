"""Loop types: how generation t+1's training set is built from generation t's synthetic samples (SPEC §5).

All tensors are batched over seeds, `(S, n, d)`:
- `fully-synthetic` (replace): `D_{t+1} = S_t`;
- `augment`: a fixed real set plus synthetic, `D_{t+1} = R ∪ S_t`;
- `fresh`: a new real draw each generation plus synthetic, `D_{t+1} = R_{t+1} ∪ S_t`;
- `accumulate`: all past data kept, `D_{t+1} = D_t ∪ S_t`, optionally subsampled uniformly to a budget.
With a real fraction `f`, augment/fresh keep `n_synth` points of which `round(f n_synth)` are real.
"""

from __future__ import annotations

import torch

LOOPS = ("fully-synthetic", "augment", "fresh", "accumulate")


def real_count(n_real: int, n_synth: int, real_fraction: float | None) -> int:
    """Number of real points in an augment/fresh training set: `n_real`, or `round(f n_synth)`."""
    return n_real if real_fraction is None else round(real_fraction * n_synth)


def mix(real: torch.Tensor, synth: torch.Tensor, real_fraction: float | None) -> torch.Tensor:
    """Real and synthetic parts of a mixed training set, concatenated along the sample axis."""
    n_synth = synth.shape[1]
    k = real_count(real.shape[1], n_synth, real_fraction)
    keep = n_synth if real_fraction is None else n_synth - k
    return torch.cat([real[:, :k], synth[:, :keep].to(real.dtype)], dim=1)


def subsample(x: torch.Tensor, budget: int, gens: list[torch.Generator]) -> torch.Tensor:
    """Keep `budget` of the `n` points of each seed, uniformly without replacement (seed s draws from
    `gens[s]`)."""
    if x.shape[1] <= budget:
        return x
    order = torch.stack([torch.rand(x.shape[1], generator=g) for g in gens]).argsort(dim=1)
    idx = order[:, :budget].sort(dim=1).values
    return torch.gather(x, 1, idx.to(x.device)[..., None].expand(-1, -1, x.shape[2]))


def next_training_set(loop: str, train: torch.Tensor, real: torch.Tensor, synth: torch.Tensor,
                      fresh_real: torch.Tensor | None, *, real_fraction: float | None = None,
                      budget: int | None = None, gens: list[torch.Generator] | None = None) -> torch.Tensor:
    """`D_{t+1}` for loop type `loop` from the current training set `train`, the fixed real set `real`,
    the synthetic sample `synth` and (for `fresh`) a new real draw `fresh_real`."""
    if loop == "fully-synthetic":
        return synth.to(train.dtype)
    if loop == "augment":
        return mix(real, synth, real_fraction)
    if loop == "fresh":
        if fresh_real is None:
            raise ValueError("the fresh loop needs a new real draw")
        return mix(fresh_real, synth, real_fraction)
    pool = torch.cat([train, synth.to(train.dtype)], dim=1)
    if budget is None:
        return pool
    if gens is None:
        raise ValueError("subsampling to a budget needs one generator per seed")
    return subsample(pool, budget, gens)
