"""Model families for self-consuming loops: fit on a training set, sample with sampling bias λ ∈ (0, 1].

Every family works on batches over seeds: `fit(x (S, n, d), g)` and `sample(model, n, lam, g) -> (S, n, d)`.
Only `gaussian` is vectorised (`vectorised = True`); the others take `S = 1`.
λ (SPEC §5): Gaussian → N(μ, λΣ); GMM → each component N(μ_k, λΣ_k) (shrink toward the component mean);
KDE → bandwidth × √λ; diffusion → initial noise × √λ; MonoFlow GAN → latent N(0, λI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gentool.core.errors import BadInput, choose, require

FAMILIES = ("gaussian", "gmm", "kde", "diffusion", "monoflow")


@dataclass
class GaussianFamily:
    """Fit N(μ, Σ) by the sample mean and the unbiased (n−1) or MLE (n) covariance; vectorised over seeds."""

    cov: str = "unbiased"
    vectorised: bool = True
    has_density: bool = True

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = x.shape[1]
        mean = x.mean(1)
        xc = x - mean[:, None]
        ddof = 1 if self.cov == "unbiased" else 0
        return {"mean": mean, "cov": xc.transpose(1, 2) @ xc / (n - ddof)}

    def sample(self, model: dict[str, torch.Tensor], n: int, lam: float, generator: torch.Generator
               ) -> torch.Tensor:
        """`μ + √λ Σ^{1/2} ε`, ε ~ N(0, I) (symmetric square root, robust to singular Σ)."""
        from gentool.core.metrics.gaussian import sqrtm_psd

        mean, cov = model["mean"], model["cov"]
        eps = torch.randn(mean.shape[0], n, mean.shape[1], generator=generator, dtype=mean.dtype)
        return mean[:, None] + math.sqrt(lam) * eps.to(mean.device) @ sqrtm_psd(cov)

    def nll(self, model: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Held-out negative log-likelihood per seed, `x (m, d)` → `(S,)`, from the held-out moments:
        `½ [tr(Σ⁻¹ (C + (m − μ)(m − μ)ᵀ)) + log det Σ + d log 2π]` with `m`, `C` the mean and MLE covariance
        of `x` (singular Σ → inf)."""
        mean, cov = model["mean"], model["cov"]
        xd = x.to(mean.dtype)
        m = xd.mean(0)
        c = (xd - m).T @ (xd - m) / xd.shape[0]
        diff = m - mean
        scatter = c + diff[:, :, None] * diff[:, None, :]
        w, v = torch.linalg.eigh(cov)
        quad = (torch.diagonal(v.transpose(1, 2) @ scatter @ v, dim1=1, dim2=2) / w).sum(-1)
        out = 0.5 * (quad + torch.log(w).sum(-1) + mean.shape[-1] * math.log(2 * math.pi))
        return torch.where((w > 0).all(-1), out, torch.full_like(out, math.inf))


@dataclass
class GMMFamily:
    """Gaussian mixture fitted by EM (scikit-learn, full covariances); λ scales each component covariance."""

    components: int = 8
    vectorised: bool = False
    has_density: bool = True

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> Any:
        from sklearn.mixture import GaussianMixture

        require(x.shape[1] >= self.components, f"gmm needs at least --components={self.components} points, "
                f"got {x.shape[1]}")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        gm = GaussianMixture(self.components, covariance_type="full", reg_covar=1e-6, random_state=seed)
        return gm.fit(x[0].double().cpu().numpy())

    def sample(self, model: Any, n: int, lam: float, generator: torch.Generator) -> torch.Tensor:
        """Component `k ~ Cat(w)`, then `μ_k + √λ L_k ε` with `L_k L_kᵀ = Σ_k`."""
        w = torch.as_tensor(model.weights_, dtype=torch.float64)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(torch.as_tensor(model.covariances_))
        eps = torch.randn(n, chol.shape[-1], generator=generator, dtype=torch.float64)
        x = torch.as_tensor(model.means_)[k] + math.sqrt(lam) * (chol[k] @ eps[..., None])[..., 0]
        return x[None].float()

    def nll(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-float(np.mean(model.score_samples(x.double().cpu().numpy())))])


@dataclass
class KDEFamily:
    """Gaussian KDE: kernel covariance `h² C` with Scott `h = n^{−1/(d+4)}` or Silverman
    `h = (n(d+2)/4)^{−1/(d+4)}` and `C` the data covariance, or a fixed isotropic bandwidth `h I`."""

    bandwidth: str | float = "scott"
    vectorised: bool = False
    has_density: bool = True

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pts = x[0].double()
        n, d = pts.shape
        if isinstance(self.bandwidth, float):
            return {"points": pts, "chol": self.bandwidth * torch.eye(d, dtype=torch.float64)}
        h = n ** (-1 / (d + 4)) if self.bandwidth == "scott" else (n * (d + 2) / 4) ** (-1 / (d + 4))
        cov = torch.atleast_2d(torch.cov(pts.T)) + 1e-12 * torch.eye(d, dtype=torch.float64)
        return {"points": pts, "chol": h * torch.linalg.cholesky(cov)}

    def sample(self, model: dict[str, torch.Tensor], n: int, lam: float, generator: torch.Generator
               ) -> torch.Tensor:
        """A uniformly chosen data point plus kernel noise with bandwidth × √λ."""
        pts, chol = model["points"], model["chol"]
        idx = torch.randint(0, pts.shape[0], (n,), generator=generator)
        eps = torch.randn(n, pts.shape[1], generator=generator, dtype=torch.float64)
        return (pts[idx] + math.sqrt(lam) * eps @ chol.T)[None].float()

    def nll(self, model: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        pts, chol = model["points"], model["chol"]
        """`−mean log (1/n) Σ_i N(x; p_i, LLᵀ)` over held-out points."""
        diff = x.double()[:, None, :] - pts[None]
        z = torch.linalg.solve_triangular(chol, diff.reshape(-1, pts.shape[1]).T, upper=False).T
        sq = (z**2).sum(-1).reshape(x.shape[0], pts.shape[0])
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        logk = -0.5 * (sq + logdet + pts.shape[1] * math.log(2 * math.pi))
        return -(torch.logsumexp(logk, 1) - math.log(pts.shape[0])).mean()[None]


@dataclass
class DiffusionFamily:
    """A fresh small EDM denoiser trained per generation (`gentool.core.diffusion`), sampled with
    initial noise × √λ."""

    train_steps: int = 2000
    sampler: str = "dpmpp-2m"
    steps: int = 20
    device: str = "cpu"
    vectorised: bool = False
    has_density: bool = False

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> Any:
        from gentool.core.diffusion import TrainConfig, train_denoiser

        cfg = TrainConfig(steps=self.train_steps, batch=min(512, x.shape[1]))
        res = train_denoiser(x[0].float(), cfg, generator=generator, device=self.device)
        return res.denoiser, x.shape[-1]

    def sample(self, model: Any, n: int, lam: float, generator: torch.Generator) -> torch.Tensor:
        from gentool.core.diffusion import sample

        denoiser, dim = model
        with torch.no_grad():
            x, _ = sample(denoiser, n, dim, sampler=self.sampler, steps=self.steps,
                          generator=generator, device=self.device, init_scale=math.sqrt(lam))
        return x[None].float().cpu()


@dataclass
class MonoFlowFamily:
    """A MonoFlow GAN generator trained per generation (`gentool.core.monoflow`); latent N(0, λI)."""

    train_steps: int = 2000
    device: str = "cpu"
    vectorised: bool = False
    has_density: bool = False

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> Any:
        from gentool.core.monoflow import MonoFlowConfig, train_generator

        cfg = MonoFlowConfig(steps=self.train_steps, batch_size=min(256, x.shape[1]))
        return train_generator(x[0].float(), cfg, generator=generator, device=self.device)

    def sample(self, model: Any, n: int, lam: float, generator: torch.Generator) -> torch.Tensor:
        from gentool.core.monoflow import sample_generator

        with torch.no_grad():
            x = sample_generator(model.generator, n, model.latent_dim, generator=generator,
                                 latent_scale=math.sqrt(lam))
        return x[None].float().cpu()


def make_family(name: str, *, cov: str = "unbiased", components: int = 8, bandwidth: str | float = "scott",
                train_steps: int = 2000, sampler: str = "dpmpp-2m", steps: int = 20, device: str = "cpu"
                ) -> Any:
    """Build a family by name (`FAMILIES`), validating its options."""
    choose("family", name, FAMILIES)
    choose("covariance estimator", cov, ("unbiased", "mle"))
    if name == "gaussian":
        return GaussianFamily(cov=cov)
    if name == "gmm":
        require(components >= 1, f"--components must be >= 1, got {components}")
        return GMMFamily(components=components)
    if name == "kde":
        if isinstance(bandwidth, float):
            require(bandwidth > 0, f"--bandwidth must be > 0, got {bandwidth}")
        else:
            choose("bandwidth rule", bandwidth, ("scott", "silverman"))
        return KDEFamily(bandwidth=bandwidth)
    require(train_steps >= 1 and steps >= 1,
            f"--train-steps and --steps must be >= 1, got {train_steps}, {steps}")
    if name == "diffusion":
        return DiffusionFamily(train_steps=train_steps, sampler=sampler, steps=steps, device=device)
    if name == "monoflow":
        return MonoFlowFamily(train_steps=train_steps, device=device)
    raise BadInput(f"unknown family {name!r}")
