"""Diffusion samplers as plans on the solver core: a sampler is a short function from the sigma grid to steps.

Each function maps a decreasing grid `sigma_0 > ... > sigma_N` (the last entry may be 0) to the symbolic
steps of `gentool.core.solvers.plan`: stage times are noise levels, the term is the denoiser output
`D(x, sigma)` (iPNDM: the direction `d = (x - D)/sigma`), and every coefficient is computed here, once, in
float64. Registers: `X` the state, `K(s)` this step's term values, `H(j)` kept values of earlier steps (most
recent first), `Z` a standard normal draw. With `a = sigma_{i+1}/sigma_i`, `h = log(sigma_i/sigma_{i+1})`
(the step in lambda = -log sigma):

    euler      x' = a x + (1 - a) D                                    (= x + (s' - s) d)
    ddim(eta)  x' = (s_down/s) x + (1 - s_down/s) D + s_up z
    heun       x1 = a x + (1 - a) D0,  x' = x + (s' - s)(d(x, s) + d(x1, s'))/2, expanded in (x, D0, D1)
    dpmpp-2m   x' = a x - expm1(-h) [(1 + 1/2r) D_i - (1/2r) D_{i-1}],  r = h_{i-1}/h
    dpmpp-3m   x' = e^{-h} x - expm1(-h) D_i + phi_2 d1 - 2 phi_3 d2   (divided differences of D)
    dpmpp-3m-kd  the same with `- phi_3 d2`, as k-diffusion / diffusers publish it (second order)
    amed(r)    x_m = (s_m/s) x + (1 - s_m/s) D0 at s_m = s'^r s^(1-r),  x' = x + (s' - s) d(x_m, s_m)
    ipndm      x' = x + (s' - s) sum_j c_j d_{i-j}                    (Adams–Bashforth, fixed c)
    ipndm-v    x' = x + sum_j w_j d_{i-j}                             (Adams–Bashforth on the actual grid)
    unipc      UniPC-bh2 predictor, D at the predicted point, corrector (see `unipc_steps`)

A step to sigma = 0 returns the denoiser output (Euler's last step is exactly that). The plain-loop
versions of the same samplers are in `plain_loops.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from gentool.core.solvers.plan import H, K, Reg, StepSpec, X, Z, stage, step

Grid = Sequence[float]


def _pairs(sigmas: Grid) -> list[tuple[float, float]]:
    return list(zip(sigmas[:-1], sigmas[1:], strict=True))


def _at(s: float) -> list:
    return [stage(s, {X: 1.0})]


def _add(terms: dict[Reg, float], reg: Reg, w: float) -> None:
    terms[reg] = terms.get(reg, 0.0) + w


def euler_steps(sigmas: Grid) -> list[StepSpec]:
    """Euler: `x' = a x + (1 - a) D(x, s)`, a = s'/s; NFE 1 per step."""
    return [step(_at(s), {X: s1 / s, K(0): 1 - s1 / s}) for s, s1 in _pairs(sigmas)]


def ddim_steps(sigmas: Grid, eta: float = 1.0) -> list[StepSpec]:
    """DDIM(eta): `x' = D + s_down (x - D)/s + s_up z`; eta = 0 is Euler, eta = 1 DDPM ancestral."""
    out = []
    for s, s1 in _pairs(sigmas):
        s_up = min(s1, eta * math.sqrt(max(s1**2 * (s**2 - s1**2) / s**2, 0.0)))
        a = math.sqrt(s1**2 - s_up**2) / s
        out.append(step(_at(s), {X: a, K(0): 1 - a, Z: s_up}))
    return out


def heun_steps(sigmas: Grid) -> list[StepSpec]:
    """EDM Heun: NFE 2 per step, 1 for a step to sigma = 0 (Euler)."""
    out = []
    for s, s1 in _pairs(sigmas):
        if s1 == 0:
            out.append(step(_at(s), {K(0): 1.0}))
            continue
        a, h = s1 / s, s1 - s
        stages = [*_at(s), stage(s1, {X: a, K(0): 1 - a})]
        out.append(step(stages, {X: 1 + h / s, K(0): h / (2 * s1) - h / s, K(1): -h / (2 * s1)}))
    return out


def dpmpp_2m_steps(sigmas: Grid) -> list[StepSpec]:
    """DPM-Solver++(2M); keeps the previous D."""
    out, h_last = [], None
    for i, (s, s1) in enumerate(_pairs(sigmas)):
        keep = (K(0),)
        if s1 == 0:
            out.append(step(_at(s), {K(0): 1.0}, keep))
            continue
        h = math.log(s) - math.log(s1)
        em = math.expm1(-h)
        if i == 0:
            out.append(step(_at(s), {X: s1 / s, K(0): -em}, keep))
        else:
            c = 1 / (2 * (h_last / h))
            out.append(step(_at(s), {X: s1 / s, K(0): -em * (1 + c), H(0): em * c}, keep))
        h_last = h
    return out


def dpmpp_3m_kd_steps(sigmas: Grid) -> list[StepSpec]:
    """DPM-Solver++(3M) as published in k-diffusion, DPM-Solver and diffusers (`-phi_3 d2`): the sampler
    researchers compare against; observed order 2 (see `dpmpp_3m_steps`)."""
    return dpmpp_3m_steps(sigmas, d2_weight=1.0)


def dpmpp_3m_steps(sigmas: Grid, d2_weight: float = 2.0) -> list[StepSpec]:
    """DPM-Solver++(3M), deterministic; keeps the two previous D (first steps: orders 1, 2).

    With d1 ~ h D' and d2 ~ h^2 D''/2 (the divided differences of k-diffusion's `sample_dpmpp_3m_sde`),
    exact integration of dx/dlambda = D - x needs `(h^2/2 - h + 1 - e^{-h}) D'' = -2 phi_3 d2`: this
    sampler uses that weight. k-diffusion, DPM-Solver and diffusers use `-phi_3 d2`, half of it, which
    leaves an O(h^3) local error (observed order 2; see tests/test_samplers.py).
    """
    out, hs = [], []
    for i, (s, s1) in enumerate(_pairs(sigmas)):
        keep = (K(0), H(0))[: min(i + 1, 2)]
        if s1 == 0:
            out.append(step(_at(s), {K(0): 1.0}, keep))
            continue
        h = math.log(s) - math.log(s1)
        phi_2 = math.expm1(-h) / h + 1
        terms = {X: math.exp(-h), K(0): -math.expm1(-h)}
        if len(hs) >= 2:
            r0, r1 = hs[-1] / h, hs[-2] / h
            q = r0 / (r0 + r1)
            w2 = -d2_weight * (phi_2 / h - 0.5)  # the weight of d2
            alpha, beta = phi_2 * (1 + q) + w2 / (r0 + r1), phi_2 * q + w2 / (r0 + r1)
            _add(terms, K(0), alpha / r0)
            _add(terms, H(0), -alpha / r0 - beta / r1)
            _add(terms, H(1), beta / r1)
        elif hs:
            r = hs[-1] / h
            _add(terms, K(0), phi_2 / r)
            _add(terms, H(0), -phi_2 / r)
        out.append(step(_at(s), terms, keep))
        hs.append(h)
    return out


def amed_steps(sigmas: Grid, r: float = 0.5) -> list[StepSpec]:
    """AMED-style mean-value step at `s_m = s'^r s^(1-r)` (r = 0.5: DPM-Solver-2); NFE 2 per step, 1 to 0."""
    out = []
    for s, s1 in _pairs(sigmas):
        if s1 == 0:
            out.append(step(_at(s), {K(0): 1.0}))
            continue
        s_mid = s1**r * s ** (1 - r)
        b, c = s_mid / s, (s1 - s) / s_mid
        stages = [*_at(s), stage(s_mid, {X: b, K(0): 1 - b})]
        out.append(step(stages, {X: 1 + c * b, K(0): c * (1 - b), K(1): -c}))
    return out


AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


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


def _adams_steps(sigmas: Grid, order: int, weights: Callable[[int, int], Sequence[float]]) -> list[StepSpec]:
    """Adams–Bashforth on the direction term, order min(order, i + 1) at step i with `weights(i, k)` for
    d_i, d_{i-1}, ...; keeps the previous order - 1 directions; a step to 0 is `x - s d = D`."""
    out = []
    for i, (s, s1) in enumerate(_pairs(sigmas)):
        regs = (K(0), *(H(j) for j in range(min(i, order - 1))))
        keep = regs[: order - 1]
        if s1 == 0:
            out.append(step(_at(s), {X: 1.0, K(0): -s}, keep))
            continue
        w = weights(i, min(order, i + 1))
        out.append(step(_at(s), {X: 1.0, **{r: c for r, c in zip(regs, w, strict=False)}}, keep))
    return out


def ipndm_steps(sigmas: Grid, order: int = 4) -> list[StepSpec]:
    """iPNDM (as in zju-pi/diff-sampler and k-diffusion): `x' = x + (s' - s) sum_j AB[k]_j d_{i-j}`, the
    fixed (uniform-step) coefficients of order k = min(order, i + 1). On a non-uniform grid the fixed
    coefficients leave an O(h^3) local error: observed order 2 on the EDM grid (use ipndm-v for more)."""
    return _adams_steps(sigmas, order, lambda i, k: [(sigmas[i + 1] - sigmas[i]) * c for c in AB[k]])


def ipndm_v_steps(sigmas: Grid, order: int = 4) -> list[StepSpec]:
    """iPNDM with variable-step Adams–Bashforth weights on the actual sigma nodes (order k on any smooth
    grid; equal to iPNDM on a uniform grid)."""
    return _adams_steps(sigmas, order, lambda i, k: adams_bashforth_weights(sigmas[i::-1][:k], sigmas[i + 1]))


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


def _unipc_terms(a: float, h_phi_1: float, b_h: float, rks: list[float], rho: Sequence[float],
                 models: Sequence[Reg]) -> dict[Reg, float]:
    """`a x - h phi_1 m_0 - B(h) sum_k rho_k (m_k - m_0)/r_k` over the model registers (m_0 first)."""
    terms = {X: a, models[0]: -h_phi_1}
    for k, (r_k, rho_k) in enumerate(zip(rks, rho, strict=False), start=1):
        _add(terms, models[k], -b_h * rho_k / r_k)
        _add(terms, models[0], b_h * rho_k / r_k)
    return terms


def unipc_steps(sigmas: Grid, order: int = 2) -> list[StepSpec]:
    """UniPC-bh2 (order 1..3, data prediction) on the positive levels sigma_0..sigma_M, NFE 1 per step:

        predictor  x~ = a x - h phi_1 m_0 - B(h) sum_k rho_p,k D1_k,     D1_k = (m_{-k} - m_0)/r_k
        model      m' = D(x~, s')                                        (the next step's m_0)
        corrector  x' = a x - h phi_1 m_0 - B(h) (sum_k rho_c,k D1_k + rho_c,last (m' - m_0))

    The order at positive step j is min(order, j + 1, M - j) (warm-up, lower order at the end); the last
    positive step has no corrector (its result would not be used); a final step to sigma = 0 returns the
    last model value. The first step also evaluates m_0 = D(x, sigma_0).
    """
    positive = [s for s in sigmas if s > 0]
    to_zero, m_last = sigmas[-1] == 0, len(positive) - 1
    lambdas = [-math.log(s) for s in positive]
    out: list[StepSpec] = []
    for j in range(m_last):
        p, corrector = min(order, j + 1, m_last - j), j < m_last - 1
        h, rks, rho_p, rho_c, h_phi_1, b_h = unipc_coefficients(lambdas[max(0, j + 1 - p):j + 1], lambdas[j + 1],
                                                                 p, corrector)
        stages = _at(positive[0]) if j == 0 else []
        models = [K(0)] if j == 0 else [H(k) for k in range(min(j + 1, order))]
        a = positive[j + 1] / positive[j]
        update = predicted = _unipc_terms(a, h_phi_1, b_h, rks, rho_p, models)
        keep: tuple[Reg, ...] = ()
        if corrector or (to_zero and j == m_last - 1):
            stages.append(stage(positive[j + 1], predicted))
            new = K(len(stages) - 1)
            keep = (new, *models)[:order]
            if corrector:
                update = _unipc_terms(a, h_phi_1, b_h, rks, rho_c[:-1], models)
                _add(update, models[0], b_h * rho_c[-1])
                _add(update, new, -b_h * rho_c[-1])
        out.append(step(stages, update, keep))
    if to_zero:
        out.append(step(_at(positive[0]), {K(0): 1.0}) if m_last == 0 else step([], {H(0): 1.0}))
    return out
