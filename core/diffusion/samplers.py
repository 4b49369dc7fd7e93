"""Samplers over a denoiser `D(x, sigma)` on a grid `sigma_0 > ... > sigma_{N-1} > sigma_N = 0`.

Each sampler is a short function `(denoiser, x, sigmas, *, generator, progress, **opts) -> (x, nfe)`
in the style of k-diffusion's `sampling.py`; `d = (x - D(x, sigma)) / sigma` is the PF-ODE direction
`dx/dsigma`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.errors import require
from gentool.core.progress import Progress, no_progress


def _den(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    out = denoiser(x, x.new_full((x.shape[0],), sigma))
    return out


def _d(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x - denoised) / sigma


def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
) -> tuple[torch.Tensor, int]:
    """Euler (= DDIM, eta = 0): `x <- x + (sigma_{i+1} - sigma_i) d_i`; NFE = N."""
    n = len(sigmas) - 1
    for i in range(n):
        x = x + (sigmas[i + 1] - sigmas[i]) * _d(x, _den(denoiser, x, sigmas[i]), sigmas[i])
        progress(i + 1, n)
    return x, n


def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
    eta: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """DDIM with stochasticity eta (eta = 1: DDPM ancestral), in sigma-form:

    `s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2))`, `s_down = sqrt(s'^2 - s_up^2)`,
    `x <- D + s_down d + s_up z`. eta = 0 is Euler.
    """
    require(eta >= 0, f"eta must be >= 0, got {eta}")
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        den = _den(denoiser, x, s)
        s_up = min(s_next, eta * math.sqrt(max(s_next**2 * (s**2 - s_next**2) / s**2, 0.0)))
        s_down = math.sqrt(s_next**2 - s_up**2)
        x = den + s_down * _d(x, den, s)
        if s_up > 0:
            x = x + s_up * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        progress(i + 1, n)
    return x, n


def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
) -> tuple[torch.Tensor, int]:
    """EDM Heun: Euler predictor `x'`, then `x <- x + h (d_i + d(x', s_{i+1}))/2` unless `s_{i+1} = 0`."""
    n, nfe = len(sigmas) - 1, 0
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = _d(x, _den(denoiser, x, s), s)
        x_pred = x + (s_next - s) * d
        nfe += 1
        if s_next == 0:
            x = x_pred
        else:
            d2 = _d(x_pred, _den(denoiser, x_pred, s_next), s_next)
            x = x + (s_next - s) * (d + d2) / 2
            nfe += 1
        progress(i + 1, n)
    return x, nfe


def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(2M): `lambda = -log sigma`, `h = lambda_{i+1} - lambda_i`, `r = h_{i-1}/h`,

    `D_bar = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}`, `x <- (s_{i+1}/s_i) x - expm1(-h) D_bar`;
    the first step and a step to sigma = 0 use `D_bar = D_i`. NFE = N.
    """
    n = len(sigmas) - 1
    old, h_last = None, None
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        den = _den(denoiser, x, s)
        if s_next == 0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            d_bar = den
            if old is not None:
                r = h_last / h
                d_bar = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d_bar
            h_last = h
        old = den
        progress(i + 1, n)
    return x, n


def sample_amed(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
    r: float = 0.5,
) -> tuple[torch.Tensor, int]:
    """AMED-style mean-value step: Euler predictor to `s_m = s_{i+1}^r s_i^{1-r}`, then the full step with
    the direction there, `x <- x + (s_{i+1} - s_i) d(x_m, s_m)`; a step to 0 is Euler. r = 0.5: DPM-Solver-2.
    """
    require(0 < r < 1, f"r must be in (0, 1), got {r}")
    n, nfe = len(sigmas) - 1, 0
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = _d(x, _den(denoiser, x, s), s)
        nfe += 1
        if s_next == 0:
            x = x + (s_next - s) * d
        else:
            s_mid = s_next**r * s ** (1 - r)
            x_mid = x + (s_mid - s) * d
            x = x + (s_next - s) * _d(x_mid, _den(denoiser, x_mid, s_mid), s_mid)
            nfe += 1
        progress(i + 1, n)
    return x, nfe


def sample_ode(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator=None,
    progress: Progress = no_progress,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[torch.Tensor, int]:
    """PF-ODE in `u = log sigma`, `dx/du = x - D(x, e^u)`, by a core solver (fixed-step methods along the
    grid's log sigma, adaptive ones from `log sigma_0` to `log sigma_{N-1}`), then the final step to 0
    `x <- D(x, sigma_{N-1})`. NFE = solver NFE (max over the batch) + 1.
    """
    from gentool.core.solvers import ADAPTIVE_METHODS, odeint

    pos = [s for s in sigmas if s > 0]

    def field(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y - denoiser(y, u.exp())

    if len(pos) >= 2:
        grid = torch.tensor([math.log(s) for s in pos], dtype=x.dtype, device=x.device)
        if method in ADAPTIVE_METHODS:
            grid = grid[[0, -1]]
        sol = odeint(field, x, grid, method=method, rtol=rtol, atol=atol, progress=progress)
        x, nfe = sol.x, int(sol.nfe.max())
    else:
        nfe = 0
    return _den(denoiser, x, pos[-1]), nfe + 1


Sampler = Callable[..., tuple[torch.Tensor, int]]
SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "ddim": sample_ddim,
    "heun": sample_heun,
    "dpmpp-2m": sample_dpmpp_2m,
    "amed": sample_amed,
    "ode": sample_ode,
}


def run_sampler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor | list[float],
    sampler: str,
    *,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    **options: float | str,
) -> tuple[torch.Tensor, int]:
    """Run `sampler` from `x` (at `sigmas[0]`) along `sigmas`, without gradients. Returns `(x, nfe)`."""
    from gentool.core.errors import choose

    fn = SAMPLERS[choose("sampler", sampler, SAMPLERS)]
    grid = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    require(len(grid) >= 2, f"steps must be >= 1, got {len(grid) - 1}")
    with torch.no_grad():
        return fn(denoiser, x, grid, generator=generator, progress=progress or no_progress, **options)


def sample(
    denoiser: Denoiser,
    n: int,
    dim: int,
    *,
    sampler: str = "dpmpp-2m",
    steps: int = 20,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    init_scale: float = 1.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    grid: str = "edm",
    schedule: str = "vp-linear",
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    **options: float | str,
) -> tuple[torch.Tensor, int]:
    """Draw `n` samples of dimension `dim`: `x_0 = init_scale * sigma_max * z` (z ~ N(0, I) from `generator`),
    then sampler `sampler` over a `steps`-step grid (`make_grid`). Returns `(x (n, dim), nfe)`.
    """
    from gentool.core.diffusion.grids import make_grid

    require(n >= 1, f"number of samples must be >= 1, got {n}")
    sigmas = make_grid(grid, steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, schedule=schedule)
    z = torch.randn(n, dim, generator=generator, dtype=dtype, device=getattr(generator, "device", "cpu"))
    x = z.to(device) * (init_scale * float(sigmas[0]))
    return run_sampler(denoiser, x, sigmas, sampler, generator=generator, progress=progress, **options)
