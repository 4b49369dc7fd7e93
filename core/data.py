"""Bundled data: 2-D toy distributions (generated), scikit-learn's toy generators and 8x8 digits (shipped).

Nothing is downloaded. Every sampler takes an explicit `torch.Generator` and returns a
float tensor of shape `(n, d)` on the requested device/dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from gentool.core.errors import BadInput, choose, require


@dataclass(frozen=True)
class Mixture:
    """Isotropic Gaussian mixture `sum_k w_k N(mu_k, s_k^2 I)`; `means (K, d)`, `stds (K,)`, `weights (K,)`."""

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Mixture:
        return Mixture(*(t.to(device=device, dtype=dtype) for t in (self.means, self.stds, self.weights)))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw `n` samples: component `k ~ Cat(w)`, then `mu_k + s_k * eps`."""
        dev = self.means.device
        k = torch.multinomial(self.weights.float().cpu(), n, replacement=True, generator=generator).to(dev)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype).to(dev)
        return self.means[k] + self.stds[k, None] * eps

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """`log p(x)` by log-sum-exp over components."""
        d = self.dim
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        var = self.stds**2
        comp = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var) + torch.log(self.weights)
        return torch.logsumexp(comp, dim=1)


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.1) -> Mixture:
    """`k` equal-weight Gaussians on a circle of `radius` ("8 gaussians" ring)."""
    ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    return Mixture(means, torch.full((k,), std, dtype=torch.float64), torch.full((k,), 1.0 / k, dtype=torch.float64))


def grid_mixture(side: int = 5, spacing: float = 1.0, std: float = 0.1) -> Mixture:
    """`side x side` equal-weight Gaussians on a centred square grid."""
    c = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    k = side * side
    return Mixture(means, torch.full((k,), std, dtype=torch.float64), torch.full((k,), 1.0 / k, dtype=torch.float64))


def random_mixture(dim: int, k: int = 4, spread: float = 3.0, std: float = 0.5, seed: int = 0) -> Mixture:
    """A reproducible random `d`-dimensional mixture: means `~ spread * N(0, I)`, Dirichlet(2) weights."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(k, dim, generator=g, dtype=torch.float64)
    gam = -torch.log(torch.rand(k, 2, generator=g, dtype=torch.float64)).sum(1)  # Gamma(2, 1) draws
    return Mixture(means, torch.full((k,), std, dtype=torch.float64), gam / gam.sum())


def _moons(n: int, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Two interleaving half circles (as scikit-learn's `make_moons`), centred and scaled by 2."""
    n_out = n // 2
    n_in = n - n_out
    t_out = torch.rand(n_out, generator=g, dtype=torch.float64) * math.pi
    t_in = torch.rand(n_in, generator=g, dtype=torch.float64) * math.pi
    outer = torch.stack([torch.cos(t_out), torch.sin(t_out)], 1)
    inner = torch.stack([1 - torch.cos(t_in), 1 - torch.sin(t_in) - 0.5], 1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = x[torch.randperm(n, generator=g)]
    return 2.0 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64))


def _swissroll(n: int, g: torch.Generator, noise: float = 0.25) -> torch.Tensor:
    """2-D Swiss roll `t (cos t, sin t)/5`, `t ~ 1.5 pi (1 + 2U)`, plus noise."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    return (x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)) / 5.0


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the black squares of a 4x4 checkerboard over [-2, 2]^2."""
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g).double() * 2
    x2 = x2 + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], 1)


@lru_cache(maxsize=1)
def _digits_array() -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1797 x 64), scaled from [0, 16] to [-1, 1]."""
    from sklearn.datasets import load_digits

    return (load_digits().data.astype(np.float64) / 8.0) - 1.0


@lru_cache(maxsize=1)
def _digits_labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target.astype(np.int64)


def digits_split(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed split of the digits: every 5th image is `test` (360), the rest `train` (1437). Returns (x, labels)."""
    choose("split", split, ["train", "test", "all"])
    x, y = _digits_array(), _digits_labels()
    idx = np.arange(len(x))
    mask = {"train": idx % 5 != 0, "test": idx % 5 == 0, "all": np.ones(len(x), bool)}[split]
    return torch.from_numpy(x[mask]), torch.from_numpy(y[mask])


def _digits(n: int, g: torch.Generator, split: str = "train") -> torch.Tensor:
    """`n` digit images (flattened, 64-d) drawn from `split`, without replacement while n fits."""
    x, _ = digits_split(split)
    replace = n > len(x)
    idx = (torch.randint(0, len(x), (n,), generator=g) if replace else torch.randperm(len(x), generator=g)[:n])
    return x[idx]


def sklearn_seed(generator: torch.Generator) -> int:
    """The `random_state` handed to scikit-learn: one integer in [0, 2³¹ − 1) drawn from `generator`."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


SKLEARN_NOISE = {"sklearn-moons": 0.05, "sklearn-circles": 0.05, "sklearn-blobs": 1.0}


def sklearn_toy(name: str, n: int, generator: torch.Generator, noise: float | None = None) -> torch.Tensor:
    """Exactly `sklearn.datasets.make_moons(n, noise=noise)`, `make_circles(n, noise=noise)` (factor 0.8) or
    `make_blobs(n, cluster_std=noise)` (3 centres in [-10, 10]², 2-D) with `random_state = sklearn_seed(generator)`:
    no rescaling, labels dropped. `noise` defaults to `SKLEARN_NOISE[name]` (0.05, 0.05, 1.0)."""
    from sklearn import datasets

    noise = SKLEARN_NOISE[name] if noise is None else float(noise)
    seed = sklearn_seed(generator)
    if name == "sklearn-moons":
        x, _ = datasets.make_moons(n, noise=noise, random_state=seed)
    elif name == "sklearn-circles":
        x, _ = datasets.make_circles(n, noise=noise, random_state=seed)
    else:
        x, _ = datasets.make_blobs(n, n_features=2, cluster_std=noise, random_state=seed)
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


TOYS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "moons": _moons,
    "swissroll": _swissroll,
    "ring": lambda n, g: ring_mixture().sample(n, g),
    "grid": lambda n, g: grid_mixture().sample(n, g),
    "checkerboard": _checkerboard,
    **{name: lambda n, g, name=name: sklearn_toy(name, n, g) for name in SKLEARN_NOISE},
}
DATASETS: tuple[str, ...] = (*TOYS, "digits")


def data_dim(name: str) -> int:
    """Dimension of a bundled data set."""
    choose("data set", name, DATASETS)
    return 64 if name == "digits" else 2


def sample_data(name: str, n: int, generator: torch.Generator, *, split: str = "train",
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                noise: float | None = None) -> torch.Tensor:
    """Draw `n` points of data set `name` (a toy, or `digits` from `split`) as `(n, d)`; `noise` sets the
    noise of the `sklearn-*` sets (see `sklearn_toy`)."""
    choose("data set", name, DATASETS)
    require(n >= 1, f"number of samples must be >= 1, got {n}")
    if name in SKLEARN_NOISE:
        x = sklearn_toy(name, n, generator, noise)
    else:
        x = _digits(n, generator, split) if name == "digits" else TOYS[name](n, generator)
    return x.to(device=device, dtype=dtype)


def mixture_preset(name: str) -> Mixture:
    """The analytic mixture behind a toy (`ring`, `grid`); raises for data without one."""
    presets = {"ring": ring_mixture, "grid": grid_mixture}
    if name not in presets:
        raise BadInput(f"data set {name!r} has no analytic mixture; allowed: {', '.join(presets)}")
    return presets[name]()
