"""Model families for self-consuming loops: fit on a training set, sample with sampling bias λ ∈ (0, 1].

Every family works on a batch of seeds: `fit(x (S, n, d), gens, context)` and `sample(model, n, lam, gens)` with
one `torch.Generator` per seed, so a seed's numbers never depend on how many seeds run beside it. `gaussian` and
`linear-regression` are vectorised over seeds (`vectorised = True`); the others are called with S = 1.
`context` carries the seeds' real set and, with warm start, the previous generation's model: the diffusion and
MonoFlow families then fine-tune it instead of training from scratch (Bertrand et al. 2024; Shumailov et al. 2024).
λ (SPEC §5): Gaussian → N(μ, λΣ); GMM → each component N(μ_k, λΣ_k) (shrink toward the component mean);
KDE → bandwidth × √λ; diffusion → initial noise × √λ; MonoFlow GAN → latent N(0, λI).
`moments(model, synth)` gives the mean `(S, d)` and covariance `(S, d, d)` the metrics use: the fitted ones for
the Gaussian family, the synthetic sample's for the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gentool.core.errors import choose, require
from gentool.core.metrics.gaussian import mean_cov, regular_spectrum, sqrtm_psd

FAMILIES = ("gaussian", "gmm", "kde", "diffusion", "monoflow", "linear-regression")
WARM_START_FAMILIES = ("diffusion", "monoflow")
VECTORISED_FAMILIES = ("gaussian", "linear-regression")  # their classes set `vectorised = True`
Generators = list[torch.Generator]


@dataclass(frozen=True)
class Context:
    """What a fit may use besides its training set: the seeds' first-generation real set `(S, n, d)` and the
    previous generation's model (`None` at generation 1 or without warm start)."""

    real: torch.Tensor | None = None
    previous: Any | None = None


def normal(gens: Generators, n: int, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`(S, n, d)` standard normal draws, row s from `gens[s]`."""
    return torch.stack([torch.randn(n, d, generator=g, dtype=dtype) for g in gens])


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched sample mean `(S, d)` and unbiased covariance `(S, d, d)` of `x (S, n, d)` (float64)."""
    return mean_cov(x.double(), ddof=1)


@dataclass(frozen=True)
class GaussianModel:
    """Fitted Gaussians, one per seed: `mean (S, d)`, `cov (S, d, d)`."""

    mean: torch.Tensor
    cov: torch.Tensor


@dataclass
class GaussianFamily:
    """Fit N(μ, Σ) by the sample mean and the unbiased (n−1) or MLE (n) covariance; vectorised over seeds."""

    cov: str = "unbiased"
    vectorised: bool = True
    has_density: bool = True
    fitted_moments: bool = True  # `moments` are the model's own (its density is singular where they are)

    def fit(self, x: torch.Tensor, gens: Generators, context: Context | None = None) -> GaussianModel:
        mean, cov = mean_cov(x, ddof=1 if self.cov == "unbiased" else 0)
        return GaussianModel(mean, cov)

    def sample(self, model: GaussianModel, n: int, lam: float, gens: Generators) -> torch.Tensor:
        """`μ + √λ Σ^{1/2} ε`, ε ~ N(0, I) (symmetric square root, robust to singular Σ)."""
        eps = normal(gens, n, model.mean.shape[-1], model.mean.dtype).to(model.mean.device)
        return model.mean[:, None] + math.sqrt(lam) * eps @ sqrtm_psd(model.cov)

    def moments(self, model: GaussianModel, synth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.mean.double(), model.cov.double()

    def nll(self, model: GaussianModel, x: torch.Tensor) -> torch.Tensor:
        """Held-out negative log-likelihood per seed, `x (m, d)` → `(S,)`, from the held-out moments:
        `½ [tr(Σ⁻¹ (C + (m − μ)(m − μ)ᵀ)) + log det Σ + d log 2π]` with `m`, `C` the mean and MLE covariance
        of `x` (+inf where Σ is singular, `regular_spectrum`: held-out points lie off its support)."""
        mean, cov = model.mean, model.cov
        m, c = mean_cov(x.to(mean.dtype)[None], ddof=0)
        diff = m[0] - mean
        scatter = c[0] + diff[:, :, None] * diff[:, None, :]
        w, v = torch.linalg.eigh(cov)
        quad = (torch.diagonal(v.transpose(1, 2) @ scatter @ v, dim1=1, dim2=2) / w).sum(-1)
        out = 0.5 * (quad + torch.log(w).sum(-1) + mean.shape[-1] * math.log(2 * math.pi))
        return torch.where(regular_spectrum(w), out, torch.full_like(out, math.inf))


def _sample_moments(model: Any, synth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return sample_moments(synth)


@dataclass
class GMMFamily:
    """Gaussian mixture fitted by EM (scikit-learn, full covariances); λ scales each component covariance."""

    components: int = 8
    vectorised: bool = False
    has_density: bool = True
    moments = staticmethod(_sample_moments)

    def fit(self, x: torch.Tensor, gens: Generators, context: Context | None = None) -> Any:
        from sklearn.mixture import GaussianMixture

        require(x.shape[1] >= self.components, f"gmm needs at least components={self.components} points, "
                f"got {x.shape[1]}")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gens[0]))
        gm = GaussianMixture(self.components, covariance_type="full", reg_covar=1e-6, random_state=seed)
        return gm.fit(x[0].double().cpu().numpy())

    def sample(self, model: Any, n: int, lam: float, gens: Generators) -> torch.Tensor:
        """Component `k ~ Cat(w)`, then `μ_k + √λ L_k ε` with `L_k L_kᵀ = Σ_k`."""
        w = torch.as_tensor(model.weights_, dtype=torch.float64)
        k = torch.multinomial(w, n, replacement=True, generator=gens[0])
        chol = torch.linalg.cholesky(torch.as_tensor(model.covariances_))
        eps = torch.randn(n, chol.shape[-1], generator=gens[0], dtype=torch.float64)
        x = torch.as_tensor(model.means_)[k] + math.sqrt(lam) * (chol[k] @ eps[..., None])[..., 0]
        return x[None].float()

    def nll(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-float(np.mean(model.score_samples(x.double().cpu().numpy())))])


@dataclass(frozen=True)
class KDEModel:
    """Kernel centres `points (n, d)` and kernel Cholesky factor `chol (d, d)`."""

    points: torch.Tensor
    chol: torch.Tensor


@dataclass
class KDEFamily:
    """Gaussian KDE: kernel covariance `h² C` with Scott `h = n^{−1/(d+4)}` or Silverman
    `h = (n(d+2)/4)^{−1/(d+4)}` and `C` the data covariance, or a fixed isotropic bandwidth `h I`."""

    bandwidth: str | float = "scott"
    vectorised: bool = False
    has_density: bool = True
    moments = staticmethod(_sample_moments)

    def fit(self, x: torch.Tensor, gens: Generators, context: Context | None = None) -> KDEModel:
        pts = x[0].double()
        n, d = pts.shape
        if isinstance(self.bandwidth, float):
            return KDEModel(pts, self.bandwidth * torch.eye(d, dtype=torch.float64))
        h = n ** (-1 / (d + 4)) if self.bandwidth == "scott" else (n * (d + 2) / 4) ** (-1 / (d + 4))
        cov = torch.atleast_2d(torch.cov(pts.T)) + 1e-12 * torch.eye(d, dtype=torch.float64)
        return KDEModel(pts, h * torch.linalg.cholesky(cov))

    def sample(self, model: KDEModel, n: int, lam: float, gens: Generators) -> torch.Tensor:
        """A uniformly chosen data point plus kernel noise with bandwidth × √λ."""
        idx = torch.randint(0, model.points.shape[0], (n,), generator=gens[0])
        eps = torch.randn(n, model.points.shape[1], generator=gens[0], dtype=torch.float64)
        return (model.points[idx] + math.sqrt(lam) * eps @ model.chol.T)[None].float()

    def nll(self, model: KDEModel, x: torch.Tensor) -> torch.Tensor:
        """`−mean log (1/n) Σ_i N(x; p_i, LLᵀ)` over held-out points."""
        pts, chol = model.points, model.chol
        diff = x.double()[:, None, :] - pts[None]
        z = torch.linalg.solve_triangular(chol, diff.reshape(-1, pts.shape[1]).T, upper=False).T
        sq = (z**2).sum(-1).reshape(x.shape[0], pts.shape[0])
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        logk = -0.5 * (sq + logdet + pts.shape[1] * math.log(2 * math.pi))
        return -(torch.logsumexp(logk, 1) - math.log(pts.shape[0])).mean()[None]


@dataclass
class DiffusionFamily:
    """A small EDM denoiser trained per generation (`gentool.core.diffusion`), sampled with initial noise × √λ.
    With `warm_start` each generation starts from the previous generation's weights and EMA (a fresh
    optimiser and learning-rate schedule) instead of a fresh initialisation."""

    train_steps: int = 2000
    sampler: str = "dpmpp-2m"
    steps: int = 20
    device: str = "cpu"
    warm_start: bool = False
    arch: str = "mlp"
    vectorised: bool = False
    has_density: bool = False
    moments = staticmethod(_sample_moments)

    def fit(self, x: torch.Tensor, gens: Generators, context: Context | None = None) -> Any:
        from gentool.core.diffusion import DenoiserTrainer, TrainConfig

        cfg = TrainConfig(arch=self.arch, steps=self.train_steps, batch=min(512, x.shape[1]))
        trainer = DenoiserTrainer(x[0].float(), cfg, generator=gens[0], device=self.device)
        previous = context.previous if context is not None and self.warm_start else None
        if previous is not None:
            trainer.model.load_state_dict(previous.model.state_dict())
            trainer.ema.load_state_dict(previous.denoiser.state_dict())
        trainer.train(cfg.steps)
        return trainer.result()

    def model_state(self, model: Any) -> dict[str, Any]:
        """The fitted model as plain data: its checkpoint dict (weights, EMA, config, losses)."""
        return model.state

    def model_from_state(self, state: dict[str, Any]) -> Any:
        """The `TrainResult` of a `model_state` (EMA denoiser, raw model, losses, checkpoint)."""
        from gentool.core.diffusion.checkpoints import denoiser_from_state
        from gentool.core.diffusion.training import TrainResult

        return TrainResult(denoiser_from_state(state, self.device), denoiser_from_state(state, self.device, ema=False),
                           list(state.get("losses", [])), state)

    def sample(self, model: Any, n: int, lam: float, gens: Generators) -> torch.Tensor:
        from gentool.core.diffusion import sample

        with torch.no_grad():
            x, _ = sample(model.denoiser, n, model.denoiser.dim, sampler=self.sampler, steps=self.steps,
                          generator=gens[0], device=self.device, init_scale=math.sqrt(lam))
        return x[None].float().cpu()


@dataclass
class MonoFlowFamily:
    """A MonoFlow GAN generator trained per generation (`gentool.core.monoflow`); latent N(0, λI). With
    `warm_start` the generator starts from the previous generation's weights (a fresh discriminator)."""

    train_steps: int = 2000
    device: str = "cpu"
    warm_start: bool = False
    vectorised: bool = False
    has_density: bool = False
    moments = staticmethod(_sample_moments)

    def fit(self, x: torch.Tensor, gens: Generators, context: Context | None = None) -> Any:
        import copy

        from gentool.core.monoflow import MonoFlowConfig, train_generator

        cfg = MonoFlowConfig(steps=self.train_steps, batch_size=min(256, x.shape[1]))
        previous = context.previous if context is not None and self.warm_start else None
        init = copy.deepcopy(previous.generator) if previous is not None else None
        return train_generator(x[0].float(), cfg, generator=gens[0], device=self.device, init_generator=init)

    def model_state(self, model: Any) -> dict[str, Any]:
        """The fitted generator as plain data: its weights, output dimension and latent dimension."""
        from gentool.core.monoflow import sample_generator

        dim = sample_generator(model.generator, 1, model.latent_dim, generator=torch.Generator().manual_seed(0))
        return {"generator": model.generator.state_dict(), "dim": int(dim.shape[1]), "latent_dim": model.latent_dim}

    def model_from_state(self, state: dict[str, Any]) -> Any:
        """A generator run holding the weights of a `model_state` (what warm start reads: `.generator`)."""
        from gentool.core.monoflow import MonoFlowConfig
        from gentool.core.monoflow.training import init_generator_run

        run = init_generator_run(int(state["dim"]), MonoFlowConfig(steps=self.train_steps), device=self.device)
        run.generator.load_state_dict(state["generator"])
        return run

    def sample(self, model: Any, n: int, lam: float, gens: Generators) -> torch.Tensor:
        from gentool.core.monoflow import sample_generator

        with torch.no_grad():
            x = sample_generator(model.generator, n, model.latent_dim, generator=gens[0],
                                 latent_scale=math.sqrt(lam))
        return x[None].float().cpu()


def make_family(name: str, *, cov: str = "unbiased", components: int = 8, bandwidth: str | float = "scott",
                train_steps: int = 2000, sampler: str = "dpmpp-2m", steps: int = 20, device: str = "cpu",
                warm_start: bool = False, label_noise: float = 1.0, arch: str = "mlp") -> Any:
    """Build a family by name (`FAMILIES`), validating its options (messages name the settings)."""
    choose("family", name, FAMILIES)
    choose("cov", cov, ("unbiased", "mle"))
    require(not warm_start or name in WARM_START_FAMILIES,
            f"warm_start applies to the {' and '.join(WARM_START_FAMILIES)} families, not {name}")
    if name == "gaussian":
        return GaussianFamily(cov=cov)
    if name == "linear-regression":
        from gentool.core.mad.regression import LinearRegressionFamily

        require(math.isfinite(label_noise) and label_noise > 0, f"label_noise must be > 0, got {label_noise}")
        return LinearRegressionFamily(noise=label_noise)
    if name == "gmm":
        require(isinstance(components, int) and components >= 1, f"components must be >= 1, got {components}")
        return GMMFamily(components=components)
    if name == "kde":
        if isinstance(bandwidth, float):
            require(math.isfinite(bandwidth) and bandwidth > 0, f"bandwidth must be > 0, got {bandwidth}")
        else:
            choose("bandwidth rule", bandwidth, ("scott", "silverman"))
        return KDEFamily(bandwidth=bandwidth)
    require(train_steps >= 1 and steps >= 1, f"train_steps and steps must be >= 1, got {train_steps}, {steps}")
    if name == "diffusion":
        from gentool.core.diffusion import SAMPLERS
        from gentool.core.diffusion.models import ARCHS

        choose("sampler", sampler, SAMPLERS)
        choose("arch", arch, ARCHS)
        return DiffusionFamily(train_steps=train_steps, sampler=sampler, steps=steps, device=device,
                               warm_start=warm_start, arch=arch)
    return MonoFlowFamily(train_steps=train_steps, device=device, warm_start=warm_start)


def family_from_config(cfg: Any, device: str = "cpu") -> Any:
    """The family a `MadConfig` describes."""
    return make_family(cfg.family, cov=cfg.cov, components=cfg.components, bandwidth=cfg.bandwidth,
                       train_steps=cfg.train_steps, sampler=cfg.sampler, steps=cfg.steps, device=device,
                       warm_start=cfg.warm_start, label_noise=cfg.label_noise, arch=cfg.arch)
