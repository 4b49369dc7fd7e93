"""The "W2 <= score matching" bound (Kwon, Fan & Lee, NeurIPS 2022) in EDM form (SPEC §2c).

Setting. `p_σ = p_data * N(0, σ²I)`; the true PF-ODE `dx/dσ = −σ ∇log p_σ(x)` and the model's
`dy/dσ = −σ s_θ(y, σ)` with `s_θ(y, σ) = (D_θ(y, σ) − y)/σ²`, both integrated downwards from σ_max to
σ_min > 0. The model starts from its prior, `y(σ_max) ~ N(0, σ_max² I)`, so `q_σ` (the law of `y(σ)`) is the
marginal of the model's own PF-ODE; `x(σ_max) ~ p_{σ_max}`.

Inequality implemented. Couple `x(σ_max)` and `y(σ_max)` optimally and move both by their flows
(deterministic maps). In the backward time `t = σ_max − σ`, with `e = x − y`,

    de/dt = σ (∇log p_σ(x) − ∇log p_σ(y)) + σ (∇log p_σ(y) − s_θ(y, σ)),

so, with `L_σ ≥ sup_z λ_max(∇² log p_σ(z))` a ONE-SIDED Lipschitz bound of the TRUE score (the Grönwall
factor uses the true score: the score error is evaluated on the model's trajectory y, so the Lipschitz
difference is the true score's, taken between x and y),

    d‖e‖/dt ≤ σ L_σ ‖e‖ + σ δ(y, σ),      δ(y, σ) = ‖∇log p_σ(y) − s_θ(y, σ)‖ = ‖D(y, σ) − D_θ(y, σ)‖/σ².

Grönwall (from σ_max down to σ_min; an error made at level σ is carried by the flow from σ to σ_min) and
Minkowski's integral inequality in L²(Ω) give, with `Λ(σ) = ∫_{σ_min}^σ s L_s ds`,

    W2(p_{σ_min}, q_{σ_min}) ≤ e^{Λ(σ_max)} W_init + ∫_{σ_min}^{σ_max} σ e^{Λ(σ)} ε(σ) dσ,
    ε(σ) = (E_{y∼q_σ} ‖∇log p_σ(y) − s_θ(y, σ)‖²)^{1/2},

and the same argument stopped at any level σ bounds W2(p_σ, q_σ) by
`B(σ) = e^{Λ(σ_max)−Λ(σ)} W_init + ∫_σ^{σ_max} u e^{Λ(u)−Λ(σ)} ε(u) du` (the curve drawn against σ).

Initial mismatch. `W_init ≥ W2(p_{σ_max}, N(0, σ_max² I))`: by joint convexity of W2² over mixtures and the
Bures formula per component, `W_init² = Σ_k w_k (‖μ_k‖² + d (√(s_k² + σ_max²) − σ_max)²)` (equality for one
component).

Lipschitz bound (equal component variances s², v = s² + σ²). `∇² log p_σ = −I/v + Cov_r(μ)/v²` with r the
posterior responsibilities; `λ_max(Cov_r(μ)) ≤ D²/4` (Popoviciu on every projection, D the diameter of the
means), so `L_σ = −1/v + D²/(4 v²)` (exact, `−1/v`, for a single Gaussian) and in closed form
`Λ(σ) = −½ log(v(σ)/v(σ_min)) + (D²/8)(1/v(σ_min) − 1/v(σ))`. For a multimodal target at small s this factor is
astronomically large (e^{D²/(8 s²)}): valid, but loose — the bound is then dominated by large-σ score errors.

Estimation. ε(σ) by Monte Carlo over n model trajectories (the same trajectories for every σ level) with the
delta-method standard error `se(ε) = sd(δ²)/(2 ε √n)`; the integral by the trapezoid rule on the σ grid; the
bound's standard error conservatively as the same quadrature of se(ε) (errors taken fully correlated).

The perturbed model of the `perturb` setting ε: the exact denoiser of the target dilated by (1 + ε) about its mean,
`μ_k → m + (1+ε)(μ_k − m)`, `s_k → (1+ε) s_k` (for N(m, s²I): the denoiser of N(m, (1+ε)² s² I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gentool.core.data import Mixture
from gentool.core.diffusion.denoisers import Denoiser, expand_sigma
from gentool.core.diffusion.grids import edm_grid
from gentool.core.diffusion.samplers import solve_sampler
from gentool.core.diffusion.targets import MixtureTarget
from gentool.core.errors import BadInput

TRAJECTORY_SAMPLER = "heun"  # second order, deterministic: the model's PF-ODE


def dilated_target(target: MixtureTarget, eps: float) -> MixtureTarget:
    """The target dilated by `1 + eps` about its mean `m = Σ w_k μ_k`: `μ_k → m + (1+eps)(μ_k − m)`,
    `s_k → (1+eps) s_k`; its exact denoiser is the perturbed model of the `perturb` setting."""
    mix = target.mixture
    centre = (mix.weights[:, None] * mix.means).sum(0, keepdim=True)
    scale = 1.0 + eps
    return MixtureTarget(Mixture(centre + scale * (mix.means - centre), scale * mix.stds, mix.weights),
                         f"{target.name}-dilated")


@dataclass(frozen=True)
class ScoreLipschitz:
    """`L_σ = −1/v + c/v²`, `v = s² + σ²` (s² the common component variance, `c = D²/4`): an upper bound of
    `λ_max(∇² log p_σ)` everywhere (module docstring)."""

    var0: float
    c: float

    @classmethod
    def of(cls, mixture: Mixture) -> ScoreLipschitz:
        """The bound for an isotropic mixture with equal component variances (every gentool target)."""
        stds = mixture.stds.double()
        if float(stds.max() - stds.min()) > 1e-12 * max(1.0, float(stds.max())):
            raise BadInput("the analytic Lipschitz bound needs equal component variances; got stds "
                           f"{stds.tolist()}")
        diameter = float(torch.cdist(mixture.means.double(), mixture.means.double()).max())
        return cls(float(stds[0]) ** 2, diameter**2 / 4)

    def __call__(self, sigma: np.ndarray | float) -> np.ndarray:
        v = self.var0 + np.asarray(sigma, dtype=np.float64) ** 2
        return -1.0 / v + self.c / v**2

    def log_growth(self, sigma: np.ndarray | float, sigma_lo: float) -> np.ndarray:
        """`Λ(σ) = ∫_{σ_lo}^σ s L_s ds = −½ log(v(σ)/v(σ_lo)) + (c/2)(1/v(σ_lo) − 1/v(σ))`."""
        v = self.var0 + np.asarray(sigma, dtype=np.float64) ** 2
        v_lo = self.var0 + sigma_lo**2
        return -0.5 * np.log(v / v_lo) + 0.5 * self.c * (1.0 / v_lo - 1.0 / v)


def initial_mismatch(mixture: Mixture, sigma_max: float) -> float:
    """`W_init = (Σ_k w_k (‖μ_k‖² + d (√(s_k² + σ_max²) − σ_max)²))^{1/2} ≥ W2(p_{σ_max}, N(0, σ_max² I))`."""
    m = mixture.to(dtype=torch.float64)
    spread = (torch.sqrt(m.stds**2 + sigma_max**2) - sigma_max) ** 2 * m.dim
    return math.sqrt(float((m.weights * ((m.means**2).sum(1) + spread)).sum()))


def bound_grid(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """The EDM ρ-grid from σ_max down to σ_min (`steps` intervals; no final 0)."""
    return edm_grid(steps + 1, sigma_min, sigma_max, rho)[:-1]


def model_trajectory(model: Denoiser, z: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """States `(T, B, d)` of the model's PF-ODE at every σ of `sigmas`, from `y(σ_max) = σ_max z` (Heun)."""
    sol = solve_sampler(model, z * float(sigmas[0]), sigmas, TRAJECTORY_SAMPLER, save="trajectory")
    return sol.xs


def score_error_sq(model: Denoiser, target: MixtureTarget, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """`δ² = ‖∇log p_σ(y) − s_θ(y, σ)‖² = ‖D(y, σ) − D_θ(y, σ)‖² / σ⁴` per sample (float64)."""
    with torch.no_grad():
        d_model = model(y, torch.full((y.shape[0],), sigma, dtype=y.dtype, device=y.device)).double()
    y64 = y.double()
    d_true = target(y64, torch.as_tensor(sigma, dtype=torch.float64))
    return ((d_true - d_model) ** 2).flatten(1).sum(1) / sigma**4


@dataclass
class ScoreErrorSums:
    """Running sums over trajectories of `δ²` and `δ⁴` per σ level (enough for ε and its standard error)."""

    sq: np.ndarray
    sq2: np.ndarray
    count: int = 0

    @classmethod
    def zeros(cls, levels: int) -> ScoreErrorSums:
        return cls(np.zeros(levels), np.zeros(levels))

    def add(self, err_sq: torch.Tensor) -> None:
        """Add `err_sq (T, B)`."""
        e = err_sq.double().cpu().numpy()
        self.sq, self.sq2, self.count = self.sq + e.sum(1), self.sq2 + (e**2).sum(1), self.count + e.shape[1]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """`ε(σ) = √mean(δ²)` and its delta-method standard error `sd(δ²)/(2 ε √n)`."""
        n = self.count
        mean = self.sq / n
        var = np.maximum(self.sq2 / n - mean**2, 0.0) * n / max(n - 1, 1)
        eps = np.sqrt(mean)
        se = np.sqrt(var / n) / np.maximum(2 * eps, 1e-300)
        return eps, se


def _cumtrapz_from_top(f: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """`∫_{σ_i}^{σ_max} f dσ` at every grid point (grid descending), trapezoid rule."""
    pieces = 0.5 * (f[1:] + f[:-1]) * (sigmas[:-1] - sigmas[1:])
    return np.concatenate([[0.0], np.cumsum(pieces)])


@dataclass(frozen=True)
class BoundCurve:
    """`bound[i]` bounds W2(p_σi, q_σi); `log10_bound` the same in log10 (finite when `bound` overflows);
    `bound_se` the Monte Carlo standard error; `growth = e^{Λ(σ_max)}` the Grönwall factor from σ_max to σ_min;
    `initial_term = e^{Λ(σ_max)} W_init` and `score_term` the integral, both at σ_min."""

    sigmas: np.ndarray
    bound: np.ndarray
    log10_bound: np.ndarray
    bound_se: np.ndarray
    log10_growth: float
    initial_term: float
    score_term: float


def w2_bound_curve(sigmas: np.ndarray, eps: np.ndarray, eps_se: np.ndarray, lip: ScoreLipschitz,
                   w_init: float) -> BoundCurve:
    """`B(σ) = e^{Λ(σ_max)−Λ(σ)} W_init + ∫_σ^{σ_max} u e^{Λ(u)−Λ(σ)} ε(u) du` on a descending σ grid, computed
    scaled by `e^{−Λ(σ_max)}` so that only the final product can overflow."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    lam = lip.log_growth(sigmas, float(sigmas[-1]))
    top = float(lam[0])
    weight = sigmas * np.exp(lam - top)
    inner = w_init + _cumtrapz_from_top(weight * eps, sigmas)
    inner_se = _cumtrapz_from_top(weight * eps_se, sigmas)
    log_scale = top - lam
    with np.errstate(over="ignore"):
        scale = np.exp(log_scale)
        bound, bound_se = scale * inner, scale * inner_se
        initial, score = float(scale[-1] * w_init), float(scale[-1] * (inner[-1] - w_init))
    log10 = (log_scale + np.log(np.maximum(inner, 1e-300))) / math.log(10)
    return BoundCurve(sigmas, bound, log10, bound_se, float(log_scale[-1] / math.log(10)), initial, score)


def single_gaussian_law(model_target: MixtureTarget, sigma: float, sigma_max: float,
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Closed-form `q_σ` of an analytic one-component model `N(m, s²I)` started at `N(0, σ_max² I)`: its flow
    is `y(σ) = m + (y − m) r`, `r = √((s² + σ²)/(s² + σ_max²))`, so `q_σ = N((1 − r) m, r² σ_max² I)`;
    None for mixtures."""
    mix = model_target.mixture
    if mix.means.shape[0] != 1:
        return None
    m, s2 = mix.means[0].double(), float(mix.stds[0]) ** 2
    r = math.sqrt((s2 + sigma**2) / (s2 + sigma_max**2))
    return (1 - r) * m, torch.eye(mix.dim, dtype=torch.float64) * (r * sigma_max) ** 2


def noised_law(target: MixtureTarget, sigma: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`p_σ = N(m, (s² + σ²) I)` for a one-component target; None for mixtures."""
    mix = target.mixture
    if mix.means.shape[0] != 1:
        return None
    var = float(mix.stds[0]) ** 2 + sigma**2
    return mix.means[0].double(), torch.eye(mix.dim, dtype=torch.float64) * var


def noised_samples(target: MixtureTarget, n: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Exact samples of `p_σ`: `x_0 + σ n` with `x_0 ~ p_data`."""
    x0 = target.sample(n, generator)
    return x0 + expand_sigma(sigma, x0) * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
