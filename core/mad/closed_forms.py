"""Closed forms for Gaussian self-consuming loops (SPEC §5) and batched Gaussian distances.

Fully-synthetic loop, Gaussian family on Gaussian data N(μ₀, Σ₀) in dimension d, generation s fitted on m_s points
(m_1 = n_real(1), m_s = n_synth(s − 1)) drawn from N(μ_{s−1}, λΣ_{s−1}) (generation 1: the truth, no λ), with
`c(m) = 1` for the unbiased covariance and `(m − 1)/m` for the MLE and `k(m) = m − 1` or `m` its divisor:
- `E[Σ_t] = λ^{t−1} ∏_{s≤t} c(m_s) Σ₀` (unbiased, constant n: `λ^{t−1} Σ₀`; MLE: `((n−1)/n)^t Σ₀`);
- `E‖μ_t − μ₀‖² = tr Σ₀ Σ_{s≤t} λ^{s−1} ∏_{r<s} c(m_r) / m_s` (λ = 1, unbiased: `t tr Σ₀ / n`);
- `E[det Σ_t] / det Σ₀ = λ^{d(t−1)} ∏_{s≤t} ∏_{i<d} (m_s − 1 − i)/k(m_s)` (Wishart determinant);
- `E[log det Σ_t] = log det Σ₀ + d(t−1) log λ + Σ_{s≤t} Σ_{i<d} [ψ((m_s − 1 − i)/2) + log(2/k(m_s))]`;
  in 1-D the per-generation drift of `log σ²_t` is `log λ + ψ((n−1)/2) + log(2/(n−1))` (n = 20: −0.0536).
Linear regression (`gentool.core.mad.regression`): Replace and Accumulate test error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.metrics.gaussian import gaussian_w2_squared
from scipy.special import digamma


def expected_cov_scale(t: int, lam: float, n: int, cov: str = "unbiased") -> float:
    """`E[Σ_t] / Σ₀` at generation `t ≥ 1` with n points every generation."""
    return cov_scales([n] * t, lam, cov)[-1]


def mean_var_scale(t: int, lam: float, n: int) -> float:
    """`Cov(μ_t) / Σ₀ = (1/n) Σ_{k<t} λ^k` (unbiased covariance; λ = 1 gives t/n)."""
    return sum(lam**k for k in range(t)) / n


def log_variance_drift(n: int, lam: float = 1.0) -> float:
    """Per-generation drift of `log σ²_t` in 1-D: `log λ + ψ((n−1)/2) + log(2/(n−1))` (n = 20: −0.0536)."""
    return math.log(lam) + float(digamma((n - 1) / 2)) + math.log(2 / (n - 1))


def _shrink(m: int, cov: str) -> float:
    return 1.0 if cov == "unbiased" else (m - 1) / m


def _divisor(m: int, cov: str) -> int:
    return m - 1 if cov == "unbiased" else m


def cov_scales(sizes: Sequence[int], lam: float, cov: str) -> list[float]:
    """`E[Σ_t] / Σ₀` for t = 1..len(sizes), generation s fitted on `sizes[s−1]` points."""
    out, acc = [], 1.0
    for s, m in enumerate(sizes):
        acc *= _shrink(m, cov) * (lam if s else 1.0)
        out.append(acc)
    return out


def sq_mean_error_scales(sizes: Sequence[int], lam: float, cov: str) -> list[float]:
    """`E‖μ_t − μ₀‖² / tr Σ₀` for t = 1..len(sizes)."""
    scales = [1.0, *(lam * c for c in cov_scales(sizes[:-1], lam, cov))]
    out, acc = [], 0.0
    for scale, m in zip(scales, sizes, strict=True):
        acc += scale / m
        out.append(acc)
    return out


def det_scales(sizes: Sequence[int], lam: float, cov: str, d: int) -> list[float]:
    """`E[det Σ_t] / det Σ₀` for t = 1..len(sizes) (0 once a generation has m ≤ d points)."""
    out, acc = [], 1.0
    for s, m in enumerate(sizes):
        factor = math.prod(max(m - 1 - i, 0) / _divisor(m, cov) for i in range(d))
        acc *= factor * (lam**d if s else 1.0)
        out.append(acc)
    return out


def logdet_shifts(sizes: Sequence[int], lam: float, cov: str, d: int) -> list[float]:
    """`E[log det Σ_t] − log det Σ₀` for t = 1..len(sizes) (NaN once a generation has m ≤ d points)."""
    out, acc = [], 0.0
    for s, m in enumerate(sizes):
        if m <= d:
            acc = math.nan
        else:
            acc += sum(float(digamma((m - 1 - i) / 2)) + math.log(2 / _divisor(m, cov)) for i in range(d))
            acc += d * math.log(lam) if s else 0.0
        out.append(acc)
    return out


@dataclass(frozen=True)
class Curve:
    """A closed-form expectation of one metric at generations 1..T and its legend label."""

    values: list[float]
    label: str


def gaussian_curves(sizes: Sequence[int], lam: float, cov: str, cov0: torch.Tensor) -> dict[str, Curve]:
    """The closed forms of the module docstring as curves of the metrics `trace_cov`, `trace_ratio`,
    `sq_mean_error`, `det_ratio`, `logdet_cov` (fully-synthetic loop, Gaussian family on Gaussian data)."""
    d = cov0.shape[0]
    tr0, logdet0 = float(torch.trace(cov0)), float(torch.linalg.slogdet(cov0)[1])
    scale = cov_scales(sizes, lam, cov)
    return {
        "trace_cov": Curve([tr0 * c for c in scale], "E[tr Σ_t] = λ^{t−1} ∏c(m_s) tr Σ₀"),
        "trace_ratio": Curve(scale, "E[tr Σ_t]/tr Σ₀"),
        "sq_mean_error": Curve([tr0 * c for c in sq_mean_error_scales(sizes, lam, cov)],
                               "E‖μ_t − μ₀‖² = tr Σ₀ Σ λ^{s−1}∏c/m_s"),
        "det_ratio": Curve(det_scales(sizes, lam, cov, d), "E[det Σ_t]/det Σ₀ (Wishart)"),
        "logdet_cov": Curve([logdet0 + v for v in logdet_shifts(sizes, lam, cov, d)], "E[log det Σ_t] (digamma)"),
    }


def regression_curves(t_max: int, d: int, n: int, noise: float, lam: float, accumulate: bool) -> dict[str, Curve]:
    """Expected `test_error` of linear regression (Replace or Accumulate; empty when n ≤ d + 1)."""
    from gentool.core.mad.regression import expected_test_error

    values = [expected_test_error(t, d, n, noise, lam, accumulate) for t in range(1, t_max + 1)]
    if any(math.isnan(v) for v in values):
        return {}
    label = "σ²d/(n−d−1)·(1 + λΣ1/i²)" if accumulate else "σ²d/(n−d−1)·(1 + λ(t−1))"
    return {"test_error": Curve(values, f"E[test_error] = {label}")}


def closed_form_curves(cfg: Any) -> dict[str, Curve]:
    """Every closed form that applies to a `MadConfig`: the Gaussian family on Gaussian data in a fully-synthetic
    loop (`gaussian_curves`), linear regression with Replace or Accumulate (`regression_curves`); else none."""
    from gentool.core.mad.truth import gaussian_truth

    plan, replace = cfg.plan, cfg.loop == "fully-synthetic" and cfg.from_previous == 1
    if cfg.family == "linear-regression" and (replace or cfg.loop == "accumulate"):
        return regression_curves(cfg.generations, cfg.dim, plan.n_real[0], cfg.label_noise, cfg.lam,
                                 accumulate=not replace)
    if cfg.family != "gaussian" or cfg.data != "gaussian" or not replace:
        return {}
    sizes = [plan.n_real[0], *plan.n_synth[:-1]]
    return gaussian_curves(sizes, cfg.lam, cfg.cov, gaussian_truth(cfg.dim, cfg.truth)[1])


def bures_w2(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Batched exact W2 between Gaussians (not squared): the square root of
    `gentool.core.metrics.gaussian.gaussian_w2_squared`; shapes `(..., d)`, `(..., d, d)`."""
    return gaussian_w2_squared(m1, s1, m2, s2).sqrt()
