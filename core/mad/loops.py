"""Loop types: which data generation t fits on, and how the data kept for t+1 is built from its samples (SPEC §5).

Tensors are batched over seeds, `(S, n, d)`. `S_t` is the synthetic part made at generation t: generation t's sample,
or with `from_previous = K` the union of the samples of generations t−K+1..t (MAD, App. G). `R` is the fixed real
set, `R_t` a fresh real draw. Every loop fits generation 1 on `n_real(1)` real points.
- `fully-synthetic` (Replace): `D_{t+1} = S_t`;
- `augment`: `D_{t+1} = R[:n_real(t+1)] ∪ S_t`;
- `fresh`: `D_{t+1} = R_{t+1} ∪ S_t`;
- `accumulate`: every point is kept and fitted, `D_{t+1} = D_t ∪ S_t`;
- `accumulate-subsample` (Collapse-or-Thrive): every point is kept in a pool `P_{t+1} = P_t ∪ S_t`, and each
  generation fits on `budget` points drawn uniformly without replacement from the whole pool, so a point left
  out at generation t can be drawn again later;
- `reservoir`: a pool of bounded size, `D_{t+1} = budget` uniform points of `D_t ∪ S_t` (points left out are gone).
With a real fraction `f`, augment/fresh keep as many points as `S_t` has, `round(f |S_t|)` of them real.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Generators = list[torch.Generator]


def real_count(n_real: int, n_synth: int, real_fraction: float | None) -> int:
    """Number of real points in an augment/fresh training set: `n_real`, or `round(f n_synth)`."""
    return n_real if real_fraction is None else round(real_fraction * n_synth)


def mix(real: torch.Tensor, synth: torch.Tensor, real_fraction: float | None) -> torch.Tensor:
    """Real and synthetic parts of a mixed training set, concatenated along the sample axis."""
    n_synth = synth.shape[1]
    k = real_count(real.shape[1], n_synth, real_fraction)
    keep = n_synth if real_fraction is None else n_synth - k
    return torch.cat([real[:, :k], synth[:, :keep].to(real.dtype)], dim=1)


def subsample(x: torch.Tensor, budget: int, gens: Generators) -> torch.Tensor:
    """`budget` of the `n` points of each seed, uniformly without replacement (seed s draws from `gens[s]`),
    in their original order; all of them when `n ≤ budget`."""
    if x.shape[1] <= budget:
        return x
    order = torch.stack([torch.rand(x.shape[1], generator=g) for g in gens]).argsort(dim=1)
    idx = order[:, :budget].sort(dim=1).values
    return torch.gather(x, 1, idx.to(x.device)[..., None].expand(-1, -1, x.shape[2]))


@dataclass(frozen=True)
class Step:
    """What a loop gets after generation t: the synthetic part `synth` (S_t), the real points for t+1 (`real`:
    a prefix of the fixed set, or a fresh draw), the real fraction at t+1, the budget and the seeds' generators."""

    synth: torch.Tensor
    real: torch.Tensor
    real_fraction: float | None
    budget: int | None
    gens: Generators


@dataclass(frozen=True)
class Replace:
    """`fully-synthetic`: `D_{t+1} = S_t`."""

    name: str = "fully-synthetic"

    def kept(self, data: torch.Tensor, step: Step) -> torch.Tensor:
        return step.synth.to(data.dtype)

    def fit_set(self, data: torch.Tensor, budget: int | None, gens: Generators) -> torch.Tensor:
        return data


@dataclass(frozen=True)
class Mix(Replace):
    """`augment` (a prefix of the fixed real set) or `fresh` (a new real draw): `D_{t+1} = real ∪ S_t`."""

    name: str = "augment"

    def kept(self, data: torch.Tensor, step: Step) -> torch.Tensor:
        return mix(step.real.to(data.dtype), step.synth, step.real_fraction)


@dataclass(frozen=True)
class Accumulate(Replace):
    """`accumulate`: `D_{t+1} = D_t ∪ S_t`, all of it fitted."""

    name: str = "accumulate"

    def kept(self, data: torch.Tensor, step: Step) -> torch.Tensor:
        return torch.cat([data, step.synth.to(data.dtype)], dim=1)


@dataclass(frozen=True)
class AccumulateSubsample(Accumulate):
    """`accumulate-subsample`: the pool keeps everything; each fit draws `budget` points from all of it."""

    name: str = "accumulate-subsample"

    def fit_set(self, data: torch.Tensor, budget: int | None, gens: Generators) -> torch.Tensor:
        return data if budget is None else subsample(data, budget, gens)


@dataclass(frozen=True)
class Reservoir(Replace):
    """`reservoir`: `D_{t+1} = budget` uniform points of `D_t ∪ S_t` (discarded points never come back)."""

    name: str = "reservoir"

    def kept(self, data: torch.Tensor, step: Step) -> torch.Tensor:
        pool = torch.cat([data, step.synth.to(data.dtype)], dim=1)
        return pool if step.budget is None else subsample(pool, step.budget, step.gens)


LOOP_KINDS: dict[str, Replace] = {k.name: k for k in (Replace(), Mix(), Mix(name="fresh"), Accumulate(),
                                                      AccumulateSubsample(), Reservoir())}
LOOPS = tuple(LOOP_KINDS)
BUDGET_LOOPS = ("accumulate-subsample", "reservoir")
