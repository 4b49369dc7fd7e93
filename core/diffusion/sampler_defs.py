"""Every sampler, written once, as a short function of the denoiser (the k-diffusion form).

A sampler is a generator `fn(model, noise, x, sigmas, **options)` over a decreasing grid
`sigma_0 > ... > sigma_N` (the last entry may be 0) that yields the state after every step:

    model(x, sigma)        the denoiser D(x, sigma)
    noise(sigma, sigma')   a standard normal draw (k-diffusion's `noise_sampler` signature)

It uses only linear arithmetic on values (x, model outputs, noise draws) with scalar coefficients, and
scalar math from `scalars` on the sigmas and options. So the same function is the eager sampler (run on
tensors; differentiable in the sigmas and tensor options) and, run once on symbolic values
(`tracing.record`), the plan that the solver core's runners execute eagerly, compiled or in a CUDA graph.
Notation: `d = (x - D)/sigma` is the PF-ODE direction dx/dsigma, `lambda = -log sigma`, `h = lambda' -
lambda`. Branches depend on the grid only (never on tensor values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from gentool.core.diffusion import scalars as sm
from gentool.core.diffusion.scalars import Scalar

Model = Callable[[Any, Scalar], Any]
Noise = Callable[[Scalar, Scalar], Any]
Grid = Sequence[Scalar]


def pairs(sigmas: Grid) -> list[tuple[Scalar, Scalar]]:
    return list(zip(sigmas[:-1], sigmas[1:], strict=True))


def per_step(option: Any, i: int) -> Any:
    """A scalar option, or the i-th entry of a per-step tensor option (e.g. a learned AMED ratio)."""
    return option[i] if getattr(option, "ndim", 0) == 1 else option


def ancestral_step(s: Scalar, s1: Scalar, eta: Scalar) -> tuple[Scalar, Scalar]:
    """`s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2)/s^2))`, `s_down = sqrt(s'^2 - s_up^2)` (k-diffusion)."""
    if not eta:
        return s1, 0.0
    s_up = min(s1, eta * sm.sqrt(s1**2 * (s**2 - s1**2) / s**2))
    return sm.sqrt(s1**2 - s_up**2), s_up


def euler(model: Model, noise: Noise, x: Any, sigmas: Grid) -> Iterator[Any]:
    """Euler on the PF-ODE: `x' = x + (s' - s) d`; NFE 1 per step; order 1."""
    for s, s1 in pairs(sigmas):
        d = (x - model(x, s)) / s
        x = x + (s1 - s) * d
        yield x


def euler_ancestral(model: Model, noise: Noise, x: Any, sigmas: Grid, eta: Scalar = 1.0,
                    s_noise: Scalar = 1.0) -> Iterator[Any]:
    """Ancestral Euler (k-diffusion `sample_euler_ancestral`; `ddim` is eta with s_noise = 1):
    `x' = x + (s_down - s) d + s_noise s_up z` (no noise on a step to 0); eta = 0 is Euler, eta = 1 DDPM."""
    for s, s1 in pairs(sigmas):
        d = (x - model(x, s)) / s
        s_down, s_up = ancestral_step(s, s1, eta)
        x = x + (s_down - s) * d
        if s1 > 0:
            x = x + noise(s, s1) * (s_noise * s_up)
        yield x


def ddim(model: Model, noise: Noise, x: Any, sigmas: Grid, eta: Scalar = 1.0,
         targets: Sequence[Scalar] | None = None) -> Iterator[Any]:
    """DDIM(eta) (Song et al. 2021) as diffusers' DDIMScheduler steps, in sigma form. Step i leaves s = sigma_i
    for the level s~ = targets[i] (default sigma_{i+1}) with `(s_down, s_up) = ancestral_step(s, s~, eta)`:

        x~ = x + (s_down - s) d + s_up z     (VP: sqrt(a~) x_0 + sqrt(1 - a~ - std^2) eps + std z)

    (no noise on a step to 0); then the VP sample x~ / sqrt(s~^2 + 1) is the state at s' = sigma_{i+1}:
    `x' = x~ sqrt((s'^2 + 1) / (s~^2 + 1))`. Diffusers steps from timestep t to t - T//N whatever the spacing,
    which is the next grid timestep for leading spacing but not for linspace or trailing ones (`targets`).
    Without targets this is `euler_ancestral` with s_noise 1. NFE 1 per step."""
    for i, (s, s1) in enumerate(pairs(sigmas)):
        to = s1 if targets is None else targets[i]
        d = (x - model(x, s)) / s
        s_down, s_up = ancestral_step(s, to, eta)
        x = x + (s_down - s) * d
        if to > 0 and s_up:
            x = x + noise(s, to) * s_up
        if to != s1:
            x = x * sm.sqrt((s1**2 + 1) / (to**2 + 1))
        yield x


def ddim_step_ratios(sigmas: Grid, targets: Sequence[Scalar] | None = None, eta: Scalar = 0.0) -> list[Scalar]:
    """`r_i = s_down / s` of `ddim`'s step i: the weight of the noise estimate `(x - D)/s` in its update
    `x~ = D + r (x - D) + s_up z`."""
    tos = [s1 for _, s1 in pairs(sigmas)] if targets is None else list(targets)
    return [ancestral_step(s, to, eta)[0] / s for (s, _), to in zip(pairs(sigmas), tos, strict=True)]


def heun(model: Model, noise: Noise, x: Any, sigmas: Grid, s_churn: Scalar = 0.0, s_tmin: Scalar = 0.0,
         s_tmax: Scalar = math.inf, s_noise: Scalar = 1.0) -> Iterator[Any]:
    """EDM Heun (Karras et al. 2022, Algorithm 2): with `gamma = min(s_churn/N, sqrt 2 - 1)` for
    s_tmin <= s <= s_tmax (else 0), first raise the noise level to `s^ = (1 + gamma) s` by
    `x += s_noise sqrt(s^2 - s^2) z`, then Euler `x1 = x + (s' - s^) d(x, s^)` and, unless s' = 0,
    `x' = x + (s' - s^)(d(x, s^) + d(x1, s'))/2`. s_churn = 0 is the deterministic `heun` (NFE 2 per
    step, 1 for the step to 0; order 2); `edm-stochastic` is the churned one."""
    n = len(sigmas) - 1
    for s, s1 in pairs(sigmas):
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (gamma + 1)
        if gamma > 0:
            x = x + noise(s, s_hat) * (s_noise * sm.sqrt(s_hat**2 - s**2))
        d = (x - model(x, s_hat)) / s_hat
        if s1 == 0:
            x = x + (s1 - s_hat) * d
        else:
            x1 = x + (s1 - s_hat) * d
            d1 = (x1 - model(x1, s1)) / s1
            x = x + (s1 - s_hat) * ((d + d1) * 0.5)
        yield x


def mean_value(model: Model, noise: Noise, x: Any, sigmas: Grid, r: Scalar = 0.5) -> Iterator[Any]:
    """AMED-style mean-value step: the direction at `s_m = s'^r s^(1-r)`, reached by an Euler predictor,
    taken over the whole step: `x_m = x + (s_m - s) d(x, s)`, `x' = x + (s' - s) d(x_m, s_m)`; a step to
    0 is Euler. r = 1/2 is DPM-Solver-2 (`dpm-2`, k-diffusion `sample_dpm_2`); `r` may be a per-step
    tensor. NFE 2 per step, 1 for the step to 0; order 2."""
    for i, (s, s1) in enumerate(pairs(sigmas)):
        d = (x - model(x, s)) / s
        if s1 == 0:
            x = x + (s1 - s) * d
        else:
            ri = per_step(r, i)
            s_mid = sm.exp(sm.log(s) * (1 - ri) + sm.log(s1) * ri)
            x_mid = x + (s_mid - s) * d
            x = x + (s1 - s) * ((x_mid - model(x_mid, s_mid)) / s_mid)
        yield x


def multistep_order(i: int, n: int, order: int, lower_order_final: bool) -> int:
    """The order of step i of n (before the warm-up cap): with `lower_order_final` and n < 15 (diffusers'
    DPM-Solver rule), 1 on the last step and at most 2 on the one before; else `order`."""
    if not lower_order_final or n >= 15:
        return order
    return 1 if i == n - 1 else min(order, 2) if i == n - 2 else order


def dpmpp_multistep(model: Model, noise: Noise, x: Any, sigmas: Grid, eta: Scalar = 1.0, s_noise: Scalar = 1.0,
                    order: int = 3, solver: str = "heun", d2_weight: float = 1.0,
                    lower_order_final: bool = False) -> Iterator[Any]:
    """DPM-Solver++(2M/3M) SDE (k-diffusion `sample_dpmpp_2m_sde`, `sample_dpmpp_3m_sde`); eta = 0 is the
    ODE solver DPM-Solver++(2M/3M). With h_eta = (1 + eta) h:

        x' = e^{-h_eta} x - expm1(-h_eta) D_i + [correction] + s_noise s' sqrt(-expm1(-2 eta h)) z,
        order 2:  c (D_i - D_{i-1}) h / h_{i-1},   midpoint c = -expm1(-h_eta)/2, heun c = phi_2,
        order 3:  phi_2 d1 - w phi_3 d2,           phi_2 = expm1(-h_eta)/h_eta + 1, phi_3 = phi_2/h_eta - 1/2,

    d1, d2 the divided differences of D over the last three steps; the order of step i is
    min(`multistep_order(i)`, i + 1) (warm-up; the second-order step uses `solver`'s c); a step to 0 returns
    D. w = 1 is the published 3M weight (k-diffusion, diffusers; order 2); w = 2 the Taylor weight
    (`dpmpp-3m`, order 3; SPEC 2b). Diffusers' DPMSolverMultistepScheduler defaults are solver = midpoint,
    lower_order_final = True. NFE 1 per step."""
    hist: list[tuple[Any, Scalar]] = []  # (D, h) of earlier steps, most recent first
    n = len(sigmas) - 1
    for i, (s, s1) in enumerate(pairs(sigmas)):
        k = min(multistep_order(i, n, order, lower_order_final), len(hist) + 1)
        D = model(x, s)
        if s1 == 0:
            x = D
        else:
            h = sm.log(s) - sm.log(s1)
            h_eta = h * (eta + 1)
            phi_2 = sm.expm1(-h_eta) / h_eta + 1
            x = sm.exp(-h_eta) * x - sm.expm1(-h_eta) * D
            if k >= 3:
                (D1, h1), (D2, h2) = hist[:2]
                r0, r1 = h1 / h, h2 / h
                d1_0, d1_1 = (D - D1) / r0, (D1 - D2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (d2_weight * (phi_2 / h_eta - 0.5)) * d2
            elif k == 2:
                c = -0.5 * sm.expm1(-h_eta) if solver == "midpoint" else phi_2
                x = x + (c * h / hist[0][1]) * (D - hist[0][0])
            if eta:
                x = x + noise(s, s1) * (s1 * sm.sqrt(-sm.expm1(-2 * h * eta)) * s_noise)
            hist = [(D, h), *hist[:1]]
        yield x


def dpmpp_sde(model: Model, noise: Noise, x: Any, sigmas: Grid, eta: Scalar = 1.0, s_noise: Scalar = 1.0,
              r: Scalar = 0.5) -> Iterator[Any]:
    """DPM-Solver++ (stochastic, single-step; k-diffusion `sample_dpmpp_sde`): with lambda_s = lambda + r h,
    an ancestral DPM-Solver++(1) sub-step to sigma_s, then the full step with `D_d = (1 - 1/2r) D + (1/2r)
    D(x_s, sigma_s)`, each as `x <- (s_down/s) x - expm1(-(lambda_down - lambda)) D_* + s_noise s_up z`
    with noise from (sigma, sigma_s) and (sigma, sigma'): consistent sub-step noise needs one Brownian path.
    A step to 0 is Euler. NFE 2 per step, 1 for the step to 0."""
    fac = 1 / (2 * r)
    for s, s1 in pairs(sigmas):
        D = model(x, s)
        if s1 == 0:
            x = x + (s1 - s) * ((x - D) / s)
        else:
            lam, lam1 = -sm.log(s), -sm.log(s1)
            s_mid = sm.exp(-(lam + (lam1 - lam) * r))
            sd, su = ancestral_step(s, s_mid, eta)
            x2 = (sd / s) * x - sm.expm1(lam + sm.log(sd)) * D
            x2 = x2 + noise(s, s_mid) * (s_noise * su)
            D_d = (1 - fac) * D + fac * model(x2, s_mid)
            sd, su = ancestral_step(s, s1, eta)
            x = (sd / s) * x - sm.expm1(lam + sm.log(sd)) * D_d
            x = x + noise(s, s1) * (s_noise * su)
        yield x


def unipc_coefficients(lambdas: Sequence[Scalar], lam_next: Scalar, order: int, corrector: bool
                       ) -> tuple[list[Scalar], list[Scalar], list[Scalar] | None, Scalar]:
    """UniPC-bh2 (data prediction; after wl-zhao/UniPC `multistep_uni_pc_bh_update`) from model values at
    `lambdas` (most recent last) to `lam_next`: the ratios r_k = (lambda_{-k} - lambda_0)/h (k < order),
    the predictor weights rho_p (empty at order 1; the paper's 1/2 at order 2), the corrector weights
    rho_c (None without a corrector) and B(h) = expm1(-h). The weights solve R rho = b with R_ab = r_b^a
    (r_order = 1) and b_a = a! h phi_{a+1}(-h) / B(h)."""
    h = lam_next - lambdas[-1]
    rks = [(lambdas[-(k + 1)] - lambdas[-1]) / h for k in range(1, order)]
    b_h = sm.expm1(-h)
    h_phi_k, factorial, b = b_h / -h - 1, 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / -h - 1 / factorial
    nodes = [*rks, 1.0]
    R = [[r**a for r in nodes] for a in range(order)]
    rho_p: list[Scalar] = [0.5] if order == 2 else sm.solve([row[:-1] for row in R[:-1]], b[:-1]) if order > 2 else []
    rho_c = None if not corrector else [0.5] if order == 1 else sm.solve(R, b)
    return rks, rho_p, rho_c, b_h


def unipc(model: Model, noise: Noise, x: Any, sigmas: Grid, order: int = 2) -> Iterator[Any]:
    """UniPC-bh2 (order 1..3, data prediction) on the positive levels sigma_0..sigma_M, NFE 1 per step:

        predictor  x~ = a x - B(h) m_0 - B(h) sum_k rho_p,k D1_k,     D1_k = (m_{-k} - m_0)/r_k, a = s'/s
        model      m' = D(x~, s')                                       (the next step's m_0)
        corrector  x' = a x - B(h) m_0 - B(h) (sum_k rho_c,k D1_k + rho_c,last (m' - m_0))

    The order at positive step j is min(order, j + 1, N - j), N the number of steps of the grid (N = M, or
    M + 1 with a final step to 0: diffusers' `lower_order_final` rule, the step to 0 being order 1); the
    last positive step has no corrector; a final step to 0 returns the last model value. Observed order:
    order + 1."""
    positive = [s for s in sigmas if s > 0]
    m_last = len(positive) - 1
    n = len(sigmas) - 1
    lambdas = [-sm.log(s) for s in positive]
    models = [model(x, positive[0])]
    for j in range(m_last):
        p, corrector = min(order, j + 1, n - j), j < m_last - 1
        rks, rho_p, rho_c, b_h = unipc_coefficients(lambdas[max(0, j + 1 - p):j + 1], lambdas[j + 1], p, corrector)
        m0 = models[-1]
        d1s = [(models[-1 - k] - m0) / rk for k, rk in enumerate(rks, start=1)]
        base = (positive[j + 1] / positive[j]) * x - b_h * m0
        x_pred = base
        for rho, d1 in zip(rho_p, d1s, strict=False):
            x_pred = x_pred - (b_h * rho) * d1
        if corrector or (sigmas[-1] == 0 and j == m_last - 1):
            models = [*models[-(order - 1):], model(x_pred, positive[j + 1])] if order > 1 else [
                model(x_pred, positive[j + 1])]
        x = x_pred
        if corrector:
            x = base - (b_h * rho_c[-1]) * (models[-1] - m0)
            for rho, d1 in zip(rho_c[:-1], d1s, strict=True):
                x = x - (b_h * rho) * d1
        yield x
    if sigmas[-1] == 0:
        yield models[-1]


AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
Weights = Callable[[Grid, int, int], Sequence[Scalar]]


def ab_fixed(sigmas: Grid, i: int, k: int) -> list[Scalar]:
    """iPNDM: the uniform-step Adams–Bashforth weights of order k, times the step."""
    return [(sigmas[i + 1] - sigmas[i]) * c for c in AB[k]]


def ab_sigma(sigmas: Grid, i: int, k: int) -> list[Scalar]:
    """Variable-step Adams–Bashforth in sigma: integrals of the Lagrange basis on sigma_i, sigma_{i-1}, ..."""
    return sm.lagrange_integral([sigmas[i - j] for j in range(k)], sigmas[i], sigmas[i + 1])


BETA_MIN, BETA_D = 0.1, 19.9  # the VP-SDE time variable of DEIS (Zhang & Chen 2023)
GAUSS = np.polynomial.legendre.leggauss(32)


def vp_time(sigma: Scalar) -> Scalar:
    """VP time with sigma(t)^2 = exp(beta_d t^2/2 + beta_min t) - 1."""
    return (sm.sqrt(BETA_MIN**2 + 2 * BETA_D * sm.log(1 + sigma**2)) - BETA_MIN) / BETA_D


def ab_vp_time(sigmas: Grid, i: int, k: int) -> list[Scalar]:
    """DEIS tAB: `w_j = integral over [sigma_i, sigma_{i+1}] of l_j(t(sigma)) dsigma`, l_j the Lagrange basis
    in VP time t on t(sigma_i), t(sigma_{i-1}), ... (32-point Gauss–Legendre in sigma; t(sigma) is smooth)."""
    ts = [vp_time(sigmas[i - j]) for j in range(k)]
    a, b = sigmas[i], sigmas[i + 1]
    weights = [0.0] * k
    for node, w in zip(*GAUSS, strict=True):
        t = vp_time(a + (b - a) * (float(node) + 1) / 2)
        for j in range(k):
            basis = 1.0
            for m in range(k):
                if m != j:
                    basis = basis * (t - ts[m]) / (ts[j] - ts[m])
            weights[j] = weights[j] + float(w) * basis
    return [(b - a) / 2 * w for w in weights]


def adams(model: Model, noise: Noise, x: Any, sigmas: Grid, order: int = 4, weights: Weights = ab_sigma,
          euler_to_zero: bool = True, heun_start: bool = False) -> Iterator[Any]:
    """Linear multistep on the direction: `x' = x + sum_j w_j d_{i-j}`, order min(order, i + 1) at step i
    with `weights(sigmas, i, k)`; with `euler_to_zero` a step to 0 returns D. One definition for `ipndm`
    (fixed weights: order 2 on the EDM grid), `ipndm-v` and `lms` (variable-step weights in sigma; lms also
    on the step to 0, as k-diffusion's `sample_lms`), `deis` (tAB: weights in VP time) and `pndm` (fixed
    weights, also to 0, and with `heun_start` a first step of Heun, `x' = x + (s' - s)(d + d(x + (s' - s) d,
    s'))/2`, on grids of 2 steps or more: diffusers' PNDM with skip_prk_steps, whose DDIM-form eps step is
    Euler in sigma form). NFE 1 per step (2 on a Heun start)."""
    ds: list[Any] = []
    n = len(sigmas) - 1
    for i, (s, s1) in enumerate(pairs(sigmas)):
        d = (x - model(x, s)) / s
        ds = [d, *ds[:order - 1]]
        if s1 == 0 and euler_to_zero:
            x = x + (s1 - s) * d
        elif heun_start and i == 0 and n > 1:
            x_euler = x + (s1 - s) * d
            x = x + (s1 - s) * ((d + (x_euler - model(x_euler, s1)) / s1) * 0.5)
        else:
            for w, dj in zip(weights(sigmas, i, min(order, i + 1)), ds, strict=False):
                x = x + w * dj
        yield x
