"""Simplex problems with minimisers computed independently of gentool (shared by the simplex tests).

sparsemax by a root-find of its threshold, softmax and kl in closed form, quadratic and portfolio planted through
their KKT conditions (tests/test_simplex.py checks the plants against scipy's SLSQP).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gentool.core.probspace import make_objective
from scipy.optimize import brentq
from scipy.special import softmax


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def sparsemax_reference(x: np.ndarray) -> np.ndarray:
    """proj_Δ(x) = max(x − θ, 0) with Σ max(x − θ, 0) = 1 (θ by Brent's method)."""
    theta = brentq(lambda t: np.maximum(x - t, 0.0).sum() - 1.0, x.min() - 1.0, x.max(), xtol=1e-15)
    return np.maximum(x - theta, 0.0)


def _support(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(2, n // 5)
    on = rng.choice(n, size=k, replace=False)
    return on, np.setdiff1d(np.arange(n), on)


def planted_quadratic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A = BᵀB (rank n/2), p* with support S; b = −Ap* + λ1 + s with s = 0 on S and s > 0 off S, so that
    ∇F(p*) = λ on S and > λ off S: the KKT conditions, hence p* is a minimiser."""
    on, off = _support(rng, n)
    b_mat = rng.normal(size=(max(2, n // 2), n)) / math.sqrt(max(2, n // 2))
    a = b_mat.T @ b_mat
    p = np.zeros(n)
    p[on] = rng.dirichlet(np.ones(on.size))
    s = np.zeros(n)
    s[off] = rng.uniform(0.05, 1.0, size=off.size)
    return a, -a @ p + 0.3 + s, p


def planted_portfolio(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns R_kj = R0_kj / c_j: with w_j = mean_k R0_kj/(R0_k·p̃) (p̃ supported on S), c_j = w_j on S and
    c_j = w_j (1 + s_j), s_j > 0, off S, the point p*_j ∝ p̃_j w_j has ∇F(p*)_j = −Z on S and −Z/(1 + s_j) off S
    (Z = Σ p̃_j w_j): the KKT conditions."""
    on, off = _support(rng, n)
    r0 = rng.uniform(0.5, 1.5, size=(max(3, n // 2), n))
    pt = np.zeros(n)
    pt[on] = rng.dirichlet(np.ones(on.size))
    w = (r0 / (r0 @ pt)[:, None]).mean(0)
    c = w.copy()
    c[off] *= 1.0 + rng.uniform(0.05, 1.0, size=off.size)
    p = np.zeros(n)
    p[on] = pt[on] * w[on]
    return r0 / c, p / p.sum()


def problem(name: str, n: int, seed: int = 0) -> tuple[object, np.ndarray]:
    """(objective, its minimiser computed independently)."""
    rng = np.random.default_rng(seed + 1000 * n)
    if name == "sparsemax":
        x = rng.normal(size=n)
        return make_objective("sparsemax", as_tensor(x)), sparsemax_reference(x)
    if name == "softmax":
        x = rng.normal(size=n)
        return make_objective("softmax", as_tensor(x)), softmax(x)
    if name == "kl":
        q = softmax(rng.uniform(-3.0, 3.0, size=n))
        return make_objective("kl", as_tensor(q)), q
    if name == "quadratic":
        a, b, p = planted_quadratic(rng, n)
        return make_objective("quadratic", as_tensor(b), matrix=as_tensor(a)), p
    r, p = planted_portfolio(rng, n)
    return make_objective("portfolio", matrix=as_tensor(r)), p


def square(p: torch.Tensor, data: object = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A module:function objective for the CLI (`simplex_problems:square`): F(p) = |p|², ∇F = 2p, minimised
    on the simplex at the uniform point; `data` is accepted and unused."""
    return (p * p).sum(), 2 * p
