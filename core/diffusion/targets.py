"""Analytic targets with exact denoisers (no training): Gaussian, Gaussian mixtures, point mass."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from gentool.core.config import derived_choice
from gentool.core.data import Mixture, random_mixture, ring_mixture
from gentool.core.data import grid_mixture as _grid_mixture
from gentool.core.diffusion.denoisers import expand_sigma
from gentool.core.errors import choose, require
from gentool.core.progress import Progress, no_progress
from gentool.core.solvers import batch_odeint

TARGETS: tuple[str, ...] = ("gaussian", "gmm-ring", "gmm-grid", "gmm-random", "point")
ANY_DIM_TARGETS: tuple[str, ...] = ("gaussian", "gmm-random", "point")  # the targets made in any dimension
MODEL_SOURCE = "model"  # the `source` of a config sampling a model (a checkpoint or a diffusers model)
SOURCE = derived_choice(lambda cfg: cfg.target if cfg.model is None else None if cfg.target else MODEL_SOURCE,
                        (*TARGETS, MODEL_SOURCE), "What a config with `target` and `model` settings samples: the "
                        "target's name, or 'model' (None with both: the config refuses that); an `applies` key of "
                        "sample, tune and bound.")


DEFAULT_TARGET = "gmm-ring"  # what sample and tune take when given neither a target nor a model


def chosen_target(target: str | None, model: str | None, default: str | None = None) -> str | None:
    """The analytic target of a config with `target` and `model` settings: `target`, else `default` when no
    model is given (None: one of the two is required); None when it samples the model. Both given, or neither
    without a default, is `BadInput` naming the targets."""
    if model is not None:
        require(target is None, f"give a target or a model, not both (target {target!r}, model {model!r})")
        return None
    require(target is not None or default is not None, f"give a target (one of: {', '.join(TARGETS)}) or a model")
    return choose("target", target if target is not None else default, TARGETS)


def target_dim(name: str, dim: int) -> int:
    """The dimension target `name` is made in: `dim` for `ANY_DIM_TARGETS`, else 2."""
    return dim if name in ANY_DIM_TARGETS else 2


class MixtureTarget:
    """`p = sum_k w_k N(mu_k, s_k^2 I)`; `p_sigma` has variances `s_k^2 + sigma^2`.

    `D(x, sigma) = sum_k r_k(x) (mu_k + s_k^2/(s_k^2 + sigma^2) (x - mu_k))`, with responsibilities
    `r_k ∝ w_k N(x; mu_k, (s_k^2 + sigma^2) I)` (log-sum-exp). A single component is a Gaussian,
    `s_k = 0` a point mass.
    """

    def __init__(self, mixture: Mixture, name: str = "mixture"):
        self.mixture, self.name = mixture, name
        self._placed: dict[tuple[torch.device, torch.dtype], Mixture] = {}

    def on(self, x: torch.Tensor) -> Mixture:
        """The mixture on x's device and dtype, converted once (no host-to-device copy per call, so the
        denoiser can be captured in a CUDA graph)."""
        key = (x.device, x.dtype)
        if key not in self._placed:
            self._placed[key] = self.mixture.to(device=x.device, dtype=x.dtype)
        return self._placed[key]

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def _parts(self, x: torch.Tensor, sigma: torch.Tensor | float):
        """Responsibilities `r (B, K)`, `var = s_k^2 + sigma^2 (B, K)` and the mixture on x's device/dtype."""
        m = self.on(x)
        var = m.stds[None] ** 2 + expand_sigma(sigma, x) ** 2
        sq = ((x[:, None, :] - m.means[None]) ** 2).sum(-1)
        logits = torch.log(m.weights)[None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(var)
        return torch.softmax(logits, dim=1), var, m

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        resp, var, m = self._parts(x, sigma)
        shrink = (m.stds[None] ** 2 / var)[..., None]  # (B, K, 1)
        post = m.means[None] + shrink * (x[:, None, :] - m.means[None])
        return (resp[..., None] * post).sum(1)

    def direction(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """PF-ODE direction `(x - D)/sigma = sigma sum_k w_k (x - mu_k) = sigma (x sum_k w_k - sum_k w_k mu_k)`
        with `w_k = r_k/(s_k^2 + sigma^2)` (finite at 0). Computed in a (K, B) layout with squared distances
        `|x|^2 - 2 mu_k.x + |mu_k|^2`, so the sums over coordinates and components are matrix products and the
        softmax runs along contiguous memory (this is the float64 reference solve's cost)."""
        m = self.on(x)
        s = expand_sigma(sigma, x)
        xt = x.T
        var = m.stds[:, None] ** 2 + s.reshape(1, -1) ** 2
        sq = torch.linalg.vector_norm(xt, dim=0).square()[None] - 2 * (m.means @ xt) + (m.means**2).sum(1)[:, None]
        logits = torch.log(m.weights)[:, None] - 0.5 * sq / var - 0.5 * self.dim * torch.log(var)
        w = torch.softmax(logits, dim=0) / var
        return s * (x * w.sum(0)[:, None] - (m.means.T @ w).T)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Exact samples of the target."""
        return self.mixture.to(dtype=dtype).sample(n, generator)

    def exact_flow(self, x: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor | None:
        """Exact PF-ODE map `sigma0 -> sigma1` (one component): `m + (x - m) sqrt((s^2+s1^2)/(s^2+s0^2))`."""
        if self.mixture.means.shape[0] != 1:
            return None
        m = self.on(x)
        s2 = m.stds[0] ** 2
        return m.means[0] + (x - m.means[0]) * torch.sqrt((s2 + sigma1**2) / (s2 + sigma0**2))


def gaussian_target(mean: torch.Tensor, std: float) -> MixtureTarget:
    """`N(mean, std^2 I)`: `D = m + s^2 (x - m)/(s^2 + sigma^2)`."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
    one = torch.ones(1, dtype=torch.float64)
    return MixtureTarget(Mixture(mean, one * std, one), "gaussian")


def point_target(point: torch.Tensor) -> MixtureTarget:
    """A point mass at `point`: `D = point` (Euler is exact for any grid)."""
    point = torch.as_tensor(point, dtype=torch.float64).reshape(1, -1)
    return MixtureTarget(
        Mixture(point, torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)), "point"
    )


def make_target(name: str, dim: int = 2) -> MixtureTarget:
    """Target `name`: gaussian (N(0, I) in `dim`), gmm-ring, gmm-grid (2-D), gmm-random (`dim`), point (0)."""
    choose("target", name, TARGETS)
    require(dim >= 1, f"dim must be >= 1, got {dim}")
    if name == "gaussian":
        return gaussian_target(torch.zeros(dim), 1.0)
    if name == "point":
        return point_target(torch.zeros(dim))
    if name == "gmm-random":
        return MixtureTarget(random_mixture(dim), name)
    return MixtureTarget(ring_mixture() if name == "gmm-ring" else _grid_mixture(), name)


REFERENCE_TOL = 1e-10  # rtol = atol of the reference solve: endpoints agree with rtol 1e-12 to ~1e-8 on the ring
REFERENCE_RATIO = 20.0  # sigma falls by this factor per segment of the reference solve (one progress step each)
REFERENCE_SIGMA_LOW = 1e-3  # the last segment runs from here to sigma1
# Below this many (sample, component, coordinate) entries the reference solve runs on one intra-op thread: its ops
# are too small to gain from threads, and on a loaded 2-core machine two threads made the default `sample`'s solve
# (10000 x 8 x 2) 115 s instead of 7 s (busy-waiting threads whose partner is descheduled).
REFERENCE_ONE_THREAD = 4_000_000


def reference_segments(sigma0: float, sigma1: float) -> list[float]:
    """Breakpoints `sigma0 > ... > sigma1` of the reference solve: a factor `REFERENCE_RATIO` per segment down
    to `REFERENCE_SIGMA_LOW`, then `sigma1`."""
    low = max(sigma1, min(REFERENCE_SIGMA_LOW, sigma0))
    n = max(1, math.ceil(math.log(sigma0 / low) / math.log(REFERENCE_RATIO))) if sigma0 > low else 0
    points = [sigma0 * (low / sigma0) ** (i / n) for i in range(n)] + [low]
    return points + [sigma1] if sigma1 < low else points


def reference_flow(
    target: MixtureTarget,
    x: torch.Tensor,
    sigma0: float,
    sigma1: float = 0.0,
    rtol: float = REFERENCE_TOL,
    atol: float = REFERENCE_TOL,
    progress: Progress | None = None,
) -> torch.Tensor:
    """High-accuracy float64 PF-ODE solution `x(sigma1)` from `x(sigma0) = x` (`sigma0 > sigma1 >= 0`) of

        dx/dsigma = direction(x, sigma) = sigma sum_k r_k(x, sigma) (x - mu_k) / (s_k^2 + sigma^2):

    the exact flow for a single component, else the solver core's batched dopri5 (`batch_odeint`: per-sample
    step sizes, float64, `rtol`/`atol`) over the segments of `reference_segments`; `progress(i, segments,
    sigma=...)` after each segment.
    """
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    exact = target.exact_flow(x64, sigma0, sigma1)
    if exact is not None:
        return exact.to(x.device)
    points = reference_segments(float(sigma0), float(sigma1))
    report = progress or no_progress
    report(0, len(points) - 1, sigma=points[0])
    small = x64.numel() * target.mixture.means.shape[0] < REFERENCE_ONE_THREAD
    with intra_op_threads(1 if small else torch.get_num_threads()):
        for i, (a, b) in enumerate(zip(points[:-1], points[1:], strict=True)):
            grid = torch.tensor([a, b], dtype=torch.float64)
            x64 = batch_odeint(lambda sigma, y: target.direction(y, sigma), x64, grid, "dopri5", rtol=rtol,
                               atol=atol).x
            report(i + 1, len(points) - 1, sigma=b)
    return x64.to(x.device)


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
