"""Scalar math for sampler coefficients: the same code on Python floats (plans, float64) and on 0-d
tensors (differentiable samplers: gradients reach the sigma grid and tensor options)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

Scalar = Union[float, torch.Tensor]  # noqa: UP007 - a runtime alias


def _tensor(a: Scalar) -> bool:
    return isinstance(a, torch.Tensor)


def log(a: Scalar) -> Scalar:
    return torch.log(a) if _tensor(a) else math.log(a)


def exp(a: Scalar) -> Scalar:
    return torch.exp(a) if _tensor(a) else math.exp(a)


def expm1(a: Scalar) -> Scalar:
    return torch.expm1(a) if _tensor(a) else math.expm1(a)


def sqrt(a: Scalar) -> Scalar:
    return torch.sqrt(a) if _tensor(a) else math.sqrt(a)


def solve(matrix: Sequence[Sequence[Scalar]], rhs: Sequence[Scalar]) -> list[Scalar]:
    """The solution of `matrix @ w = rhs` (torch when any entry is a tensor, so gradients flow)."""
    flat = [a for row in matrix for a in row] + list(rhs)
    if any(_tensor(a) for a in flat):
        ref = next(a for a in flat if _tensor(a))
        as_t = lambda a: torch.as_tensor(a, dtype=ref.dtype)  # noqa: E731
        m = torch.stack([torch.stack([as_t(a) for a in row]) for row in matrix])
        return list(torch.linalg.solve(m, torch.stack([as_t(b) for b in rhs])).unbind(0))
    return np.linalg.solve(np.array(matrix, dtype=float), np.array(rhs, dtype=float)).tolist()


def lagrange_integral(nodes: Sequence[Scalar], start: Scalar, end: Scalar) -> list[Scalar]:
    """w_j = integral from `start` to `end` of the Lagrange basis polynomial of node j: `sum_j w_j f_j`
    integrates the polynomial through (nodes, f) exactly (Adams–Bashforth weights when start = nodes[0]).
    Computed in the scaled variable u = (tau - start)/(end - start) on [0, 1], coefficient by coefficient."""
    h = end - start
    u = [(t - start) / h for t in nodes]
    weights = []
    for j, uj in enumerate(u):
        poly: list[Scalar] = [1.0]  # coefficients of prod_{m != j} (u - u_m) / (u_j - u_m), lowest first
        for m, um in enumerate(u):
            if m == j:
                continue
            scale = 1.0 / (uj - um)
            poly = [(poly[k - 1] if k else 0.0) * scale - (poly[k] * um * scale if k < len(poly) else 0.0)
                    for k in range(len(poly) + 1)]
        weights.append(h * sum(c / (k + 1) for k, c in enumerate(poly)))
    return weights
