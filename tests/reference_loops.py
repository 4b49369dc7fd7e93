"""Test oracle: the original samplers written independently as plain Python loops (k-diffusion style).

These are the loops gentool's samplers were first checked against, kept here (outside the library) as an
independent implementation: float64 loops with their own coefficient code (numpy), one tensor expression
per formula. Each function is `(denoiser, x, sigmas, *, noise=None, **options) -> (x, nfe)` on a
decreasing grid `sigmas` whose last entry may be 0; `d = (x - D(x, sigma)) / sigma` is the PF-ODE
direction dx/dsigma; `noise(sigma, sigma')` is a k-diffusion-style noise sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gentool.core.diffusion.denoisers import Denoiser


def _den(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return denoiser(x, x.new_full((x.shape[0],), sigma))


def _d(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x - denoised) / sigma


def adams_bashforth_weights(nodes: Sequence[float], end: float) -> list[float]:
    """w_j = integral from nodes[0] to `end` of the Lagrange basis polynomial of node j (nodes[0] the
    current point, then earlier ones): `x' = x + sum_j w_j f_j` is variable-step Adams–Bashforth of order
    len(nodes). In the scaled variable u = (tau - nodes[0]) / (end - nodes[0]) the integral is over [0, 1]."""
    h = end - nodes[0]
    u = np.array([(t - nodes[0]) / h for t in nodes])
    weights = []
    for j in range(len(u)):
        others = np.delete(u, j)
        roots = np.polynomial.Polynomial.fromroots(others) if len(others) else np.polynomial.Polynomial([1.0])
        basis = roots / np.prod(u[j] - others)
        weights.append(float(h * basis.integ()(1.0)))
    return weights


def unipc_coefficients(lambdas: Sequence[float], lam_next: float, order: int, corrector: bool
                       ) -> tuple[float, list[float], list[float], list[float] | None, float, float]:
    """UniPC-bh2 (data prediction; after wl-zhao/UniPC's `multistep_uni_pc_bh_update`) from model values
    at `lambdas` (most recent last) to `lam_next`, in float64: h, the ratios r_k = (lambda_{-k} - lambda_0)/h
    (k = 1..order-1), the predictor weights rho_p (empty at order 1), the corrector weights rho_c (None
    without corrector), h phi_1 = expm1(-h) and B(h) = expm1(-h). The weights solve R rho = b with
    R_ab = r_b^a (r_order = 1) and b_a = (a-1)! h phi_a(-h)... / B(h); order 2 predictor and order 1
    corrector use the paper's rho = 1/2."""
    h = lam_next - lambdas[-1]
    rks = [(lambdas[-(k + 1)] - lambdas[-1]) / h for k in range(1, order)]
    hh = -h
    h_phi_1 = b_h = math.expm1(hh)
    h_phi_k, factorial, b = h_phi_1 / hh - 1, 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = np.vander(np.array([*rks, 1.0]), order, increasing=True).T
    rho_p: list[float] = []
    if order == 2:
        rho_p = [0.5]
    elif order > 2:
        rho_p = np.linalg.solve(R[:-1, :-1], np.array(b[:-1])).tolist()
    rho_c = None
    if corrector:
        rho_c = [0.5] if order == 1 else np.linalg.solve(R, np.array(b)).tolist()
    return h, rks, rho_p, rho_c, h_phi_1, b_h


def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None
                 ) -> tuple[torch.Tensor, int]:
    """Euler (= DDIM, eta = 0): `x <- x + (sigma_{i+1} - sigma_i) d_i`; NFE = N."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        x = x + (s_next - s) * _d(x, _den(denoiser, x, s), s)
    return x, len(sigmas) - 1


def sample_ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None, eta: float = 1.0
                ) -> tuple[torch.Tensor, int]:
    """DDIM with stochasticity eta (eta = 1: DDPM ancestral), in sigma-form:
    `s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2))`, `s_down = sqrt(s'^2 - s_up^2)`,
    `x <- D + s_down d + s_up z`."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        den = _den(denoiser, x, s)
        s_up = min(s_next, eta * math.sqrt(max(s_next**2 * (s**2 - s_next**2) / s**2, 0.0)))
        s_down = math.sqrt(s_next**2 - s_up**2)
        x = den + s_down * _d(x, den, s)
        if s_next > 0:
            x = x + s_up * noise(s, s_next)
    return x, len(sigmas) - 1


def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None
                ) -> tuple[torch.Tensor, int]:
    """EDM Heun: Euler predictor `x'`, then `x <- x + h (d_i + d(x', s_{i+1}))/2` unless `s_{i+1} = 0`."""
    nfe = 0
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = _d(x, _den(denoiser, x, s), s)
        x_pred = x + (s_next - s) * d
        nfe += 1
        if s_next == 0:
            x = x_pred
        else:
            d2 = _d(x_pred, _den(denoiser, x_pred, s_next), s_next)
            x = x + (s_next - s) * (d + d2) / 2
            nfe += 1
    return x, nfe


def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None
                    ) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(2M): `lambda = -log sigma`, `h = lambda_{i+1} - lambda_i`, `r = h_{i-1}/h`,
    `D_bar = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}`, `x <- (s_{i+1}/s_i) x - expm1(-h) D_bar`;
    the first step and a step to sigma = 0 use `D_bar = D_i`."""
    old, h_last = None, None
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
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
    return x, len(sigmas) - 1


def sample_dpmpp_3m_kd(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None
                       ) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(3M) with k-diffusion's published weight `- phi_3 d2` (see `sample_dpmpp_3m`)."""
    return sample_dpmpp_3m(denoiser, x, sigmas, noise=noise, d2_weight=1.0)


def sample_dpmpp_3m(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None,
                    d2_weight: float = 2.0) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(3M), the loop of k-diffusion's `sample_dpmpp_3m_sde` at eta = 0 with the third-order
    weight of d2: with `h = lambda_{i+1} - lambda_i`, `x <- e^{-h} x - expm1(-h) D_i + phi_2 d1 - 2 phi_3 d2`,
    `phi_2 = expm1(-h)/h + 1`, `phi_3 = phi_2/h - 1/2`, `d1 ~ h D'`, `d2 ~ h^2 D''/2` the divided differences
    of D over the last three levels (k-diffusion: `- phi_3 d2`, see `sampler_plans.dpmpp_3m_steps`); first
    step: first order, second step: `phi_2 d1` only; a step to sigma = 0 returns D."""
    den_1 = den_2 = h_1 = h_2 = None
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        den = _den(denoiser, x, s)
        if s_next == 0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            phi_2 = math.expm1(-h) / h + 1
            x = math.exp(-h) * x - math.expm1(-h) * den
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (den - den_1) / r0, (den_1 - den_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - d2_weight * (phi_2 / h - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (den - den_1) / (h_1 / h)
            h_1, h_2 = h, h_1
        den_1, den_2 = den, den_1
    return x, len(sigmas) - 1


def sample_amed(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None, r: float = 0.5
                ) -> tuple[torch.Tensor, int]:
    """AMED-style mean-value step: Euler predictor to `s_m = s_{i+1}^r s_i^{1-r}`, then the full step with
    the direction there, `x <- x + (s_{i+1} - s_i) d(x_m, s_m)`; a step to 0 is Euler. r = 0.5: DPM-Solver-2."""
    nfe = 0
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = _d(x, _den(denoiser, x, s), s)
        nfe += 1
        if s_next == 0:
            x = x + (s_next - s) * d
        else:
            s_mid = s_next**r * s ** (1 - r)
            x_mid = x + (s_mid - s) * d
            x = x + (s_next - s) * _d(x_mid, _den(denoiser, x_mid, s_mid), s_mid)
            nfe += 1
    return x, nfe


AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def sample_ipndm(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None, order: int = 4
                 ) -> tuple[torch.Tensor, int]:
    """iPNDM (Zhang & Chen 2023, as in zju-pi/diff-sampler and k-diffusion): Adams–Bashforth with the fixed
    coefficients of order min(order, i + 1) on the directions d, `x <- x + h sum_j c_j d_{i-j}`; a step to
    sigma = 0 returns D."""
    buffer: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        den = _den(denoiser, x, s)
        d = _d(x, den, s)
        if s_next == 0:
            x = den
        else:
            coeffs = AB[min(order, i + 1)]
            x = x + (s_next - s) * sum(c * v for c, v in zip(coeffs, [d, *reversed(buffer)], strict=False))
        buffer = (buffer + [d])[-(order - 1):] if order > 1 else []
    return x, len(sigmas) - 1


def sample_ipndm_v(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None, order: int = 4
                   ) -> tuple[torch.Tensor, int]:
    """iPNDM with variable-step Adams–Bashforth weights (k-diffusion's `sample_ipndm_v`, weights by exact
    integration of the Lagrange basis on the actual sigma nodes); a step to sigma = 0 returns D."""
    buffer: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        den = _den(denoiser, x, s)
        d = _d(x, den, s)
        if s_next == 0:
            x = den
        else:
            nodes = sigmas[i::-1][: min(order, i + 1)]
            weights = adams_bashforth_weights(nodes, s_next)
            x = x + sum(w * v for w, v in zip(weights, [d, *reversed(buffer)], strict=False))
        buffer = (buffer + [d])[-(order - 1):] if order > 1 else []
    return x, len(sigmas) - 1


def sample_unipc(denoiser: Denoiser, x: torch.Tensor, sigmas: list[float], *, noise=None, order: int = 2
                 ) -> tuple[torch.Tensor, int]:
    """UniPC with B(h) = expm1(-h) (bh2), data prediction, in sigma-form (alpha = 1, lambda = -log sigma):
    predictor `x~ = (s'/s) x - h phi_1 m_0 - B(h) sum_k rho_p,k D1_k`, model `m' = D(x~, s')`, corrector
    `x' = (s'/s) x - h phi_1 m_0 - B(h) (sum_k rho_c,k D1_k + rho_c,last (m' - m_0))`, with
    `D1_k = (m_{-k} - m_0)/r_k`, `r_k = (lambda_{-k} - lambda_0)/h`. The order at positive step j of the
    N-step grid is min(order, j + 1, N - j) (warm-up, lower order final; a step to 0 counts as the Nth,
    diffusers' UniPCMultistepScheduler); the corrector runs on every positive step but
    the last, whose model value is the next one's; a step to sigma = 0 returns the last model value."""
    positive = [s for s in sigmas if s > 0]
    M, nfe = len(positive) - 1, 1
    models = [_den(denoiser, x, positive[0])]
    lambdas = [-math.log(positive[0])]
    for j in range(M):
        p, corrector = min(order, j + 1, len(sigmas) - 1 - j), j < M - 1
        lam_next = -math.log(positive[j + 1])
        h, rks, rho_p, rho_c, h_phi_1, b_h = unipc_coefficients(lambdas[-p:], lam_next, p, corrector)
        m0 = models[-1]
        d1s = [(models[-(k + 1)] - m0) / rks[k - 1] for k in range(1, p)]
        x_base = (positive[j + 1] / positive[j]) * x - h_phi_1 * m0
        x_pred = x_base - b_h * sum(rho_p[k] * d for k, d in enumerate(d1s)) if d1s else x_base
        if corrector or (j == M - 1 and sigmas[-1] == 0):
            m_next = _den(denoiser, x_pred, positive[j + 1])
            nfe += 1
            models, lambdas = (models + [m_next])[-order:], (lambdas + [lam_next])[-order:]
        if corrector:
            corr = sum(rho_c[k] * d for k, d in enumerate(d1s)) if d1s else 0
            x = x_base - b_h * (corr + rho_c[-1] * (m_next - m0))
        else:
            x = x_pred
    return (models[-1] if sigmas[-1] == 0 else x), nfe


PlainLoop = Callable[..., tuple[torch.Tensor, int]]
PLAIN_LOOPS: dict[str, PlainLoop] = {
    "euler": sample_euler,
    "ddim": sample_ddim,
    "heun": sample_heun,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "dpmpp-3m-kd": sample_dpmpp_3m_kd,
    "amed": sample_amed,
    "unipc": sample_unipc,
    "ipndm": sample_ipndm,
    "ipndm-v": sample_ipndm_v,
}
