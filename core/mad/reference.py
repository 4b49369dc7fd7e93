"""Real data of a loop and its held-out reference: the Gaussian truth, a regression truth or a bundled data set.

Every draw takes one `torch.Generator` per seed (`generation_rng(seed_id, generation, stream)`), so seed k's
numbers are the same whether 1 or 1000 seeds run beside it, and a run can be split across machines.
The held-out test set and the true regression coefficients depend only on the data settings (a fixed stream),
like a benchmark's test split.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gentool.core.data import mixture_preset, sample_data
from gentool.core.mad.families import Generators, normal, sample_moments
from gentool.core.mad.truth import gaussian_truth
from gentool.core.metrics.gaussian import psd_log_det

REFERENCE_SEED = 0
STREAMS = {"train": 0, "metrics": 1, "fresh": 2, "subsample": 3, "reference": 7, "coef": 8}
MODAL_DATA = ("ring", "grid")


def generation_rng(seed: int, generation: int, stream: int = 0) -> torch.Generator:
    """The RNG of (seed id, generation, stream): seeded by `SeedSequence([seed, generation, stream])`."""
    seq = np.random.SeedSequence([int(seed), int(generation), int(stream)])
    state = seq.generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def seed_rngs(seed_ids: list[int], generation: int, stream: str = "train") -> Generators:
    """One generator per seed id for `generation` and the named stream."""
    return [generation_rng(s, generation, STREAMS[stream]) for s in seed_ids]


@dataclass(frozen=True)
class RealData:
    """The real distribution: `data` (`gaussian` → N(mean, cov); a bundled set), and for regression the true
    coefficients `coef` (rows `(x, x·w* + label_noise ε)` with x ~ N(mean, cov))."""

    data: str
    mean: torch.Tensor | None = None
    cov: torch.Tensor | None = None
    coef: torch.Tensor | None = None
    label_noise: float = 1.0
    data_noise: float | None = None

    def sample(self, n: int, gens: Generators, split: str = "train") -> torch.Tensor:
        """`(S, n, d)` real points, row s from `gens[s]` (float64 for Gaussian data, float32 otherwise)."""
        if self.data != "gaussian":
            return torch.stack([sample_data(self.data, n, g, split=split, noise=self.data_noise) for g in gens])
        x = self.mean + normal(gens, n, self.mean.shape[0]) @ torch.linalg.cholesky(self.cov).T
        if self.coef is None:
            return x
        y = x @ self.coef + self.label_noise * normal(gens, n, 1)[..., 0]
        return torch.cat([x, y[..., None]], dim=-1)


def real_data(cfg: Any) -> RealData:
    """The `RealData` a `MadConfig` describes (true coefficients `w* ~ N(0, I_d)` from a fixed stream)."""
    if cfg.data != "gaussian":
        return RealData(cfg.data, data_noise=cfg.data_noise)
    mean, cov = gaussian_truth(cfg.dim, cfg.truth)
    if cfg.family != "linear-regression":
        return RealData("gaussian", mean, cov)
    coef = normal([generation_rng(REFERENCE_SEED, 0, STREAMS["coef"])], cfg.dim, 1)[0, :, 0]
    return RealData("gaussian", mean, cov, coef, cfg.label_noise)


@dataclass
class Reference:
    """Held-out real data and its reference moments (exact for Gaussian data); digits also get features; mixture
    data its modes; regression its true coefficients and design covariance."""

    test: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    test_features: torch.Tensor | None = None
    modes: torch.Tensor | None = None
    mode_std: float = 0.0
    coef: torch.Tensor | None = None

    @functools.cached_property
    def log_det(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`psd_log_det(cov)`, computed once: every generation's metrics compare with it."""
        return psd_log_det(self.cov)


def make_reference(real: RealData, n_test: int) -> Reference:
    """The held-out set (`n_test` points of the test split, fixed stream) and its moments."""
    gens = [generation_rng(REFERENCE_SEED, 0, STREAMS["reference"])]
    test = real.sample(n_test, gens, split="test")[0]
    if real.data == "gaussian":
        mean, cov = real.mean, real.cov
    else:
        m, c = sample_moments(test[None])
        mean, cov = m[0], c[0]
    ref = Reference(test, mean, cov, coef=real.coef)
    if real.data == "digits":
        from gentool.core.metrics import digits_features

        ref.test_features = digits_features(test)
    if real.data in MODAL_DATA:
        mixture = mixture_preset(real.data)
        ref.modes, ref.mode_std = mixture.means, float(mixture.stds.max())
    return ref
