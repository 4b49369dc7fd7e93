"""Linear regression as a self-consuming loop against the Gerstgrasser et al. closed forms, and the Gaussian
closed forms of the normalised metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gentool.core.mad import MadConfig, Simulation
from gentool.core.mad.closed_forms import closed_form_curves


def _by_generation(cfg: MadConfig) -> dict[int, dict[str, np.ndarray]]:
    sim = Simulation(cfg, seed=0)
    out: dict[int, dict[str, np.ndarray]] = {}
    for t in range(1, cfg.generations + 1):
        rows = sim.step()[0]
        out[t] = {k: np.array([r[k] for r in rows]) for k in rows[0] if k not in ("seed", "generation")}
    return out


def _within(values: np.ndarray, expected: float, z: float = 4.0) -> None:
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert abs(values.mean() - expected) < z * se, (values.mean(), expected, se)


@pytest.mark.parametrize("loop,lam", [("fully-synthetic", 1.0), ("accumulate", 1.0), ("accumulate", 0.5)])
def test_linear_regression_matches_closed_forms(loop: str, lam: float) -> None:
    """Replace: σ² d/(n−d−1) (1 + λ(t−1)) grows linearly; Accumulate: σ² d/(n−d−1) (1 + λ Σ_{i≤t} 1/i²) stays
    below π²/6 times the first error. 2000 seeds, within 4 standard errors at every generation."""
    cfg = MadConfig(family="linear-regression", loop=loop, dim=4, n_real=16, label_noise=0.5, lam=lam,
                    generations=8, seeds=2000, n_test=10, truth="isotropic")
    curve = closed_form_curves(cfg)["test_error"].values
    stats = _by_generation(cfg)
    for t, expected in enumerate(curve, 1):
        _within(stats[t]["test_error"], expected)
    growth = curve[-1] / curve[0]
    assert growth == pytest.approx(1 + lam * 7) if loop == "fully-synthetic" else growth < math.pi**2 / 6


def test_normalised_gaussian_metrics_match_closed_forms() -> None:
    """det_ratio, sq_mean_error and logdet_cov of the fully-synthetic loop (2-D, MLE, λ = 0.8, growing n_synth)."""
    cfg = MadConfig(dim=2, cov="mle", lam=0.8, generations=5, n_real=12, n_synth="10 + 2 * t", seeds=4000,
                    n_test=10, truth="spectrum:1,3")
    curves = closed_form_curves(cfg)
    assert set(curves) == {"trace_cov", "trace_ratio", "sq_mean_error", "det_ratio", "logdet_cov"}
    stats = _by_generation(cfg)
    for name, curve in curves.items():
        for t, expected in enumerate(curve.values, 1):
            _within(stats[t][name], expected, z=4.5)
