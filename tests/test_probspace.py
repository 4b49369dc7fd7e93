"""Probability-space optimisers: simplex methods (KKT gap); particle flows (closed forms, MMD)."""

from __future__ import annotations

import math

import pytest
import torch
from gentool.core.errors import BadInput, NumericalFailure
from gentool.core.metrics import mmd2
from gentool.core.probspace import (
    FreeEnergy,
    kl_energy,
    make_objective,
    make_target,
    project_simplex,
    run_particles,
    solve_simplex,
)
from gentool.core.probspace.kernels import median_bandwidth
from gentool.core.probspace.targets import gaussian_target
from hypothesis import given, settings
from hypothesis import strategies as st

X = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
SPARSEMAX = torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("method", ["frank-wolfe", "projected-gradient", "exponentiated-gradient"])
def test_sparsemax_by_every_method(method: str) -> None:
    """sparsemax((1, 0.5, −1)) = (0.75, 0.25, 0); softmax-gd, which reaches the face only at rate ~1/t, is
    refused (tests/test_simplex.py)."""
    res = solve_simplex(make_objective("sparsemax", X), method, iters=5000, tol=1e-10, lr=0.5)
    assert res.converged
    torch.testing.assert_close(res.p, SPARSEMAX, atol=1e-8, rtol=0)


@pytest.mark.parametrize("step", ["open-loop", "line-search"])
def test_frank_wolfe_gap_within_2000_iterations(step: str) -> None:
    res = solve_simplex(make_objective("sparsemax", X), "frank-wolfe", iters=2000, tol=1e-5, step=step)
    assert res.converged and res.trace[-1]["gap"] <= 1e-5 and res.iters <= 2000
    assert all(r["gap"] >= -1e-12 for r in res.trace)


def test_frank_wolfe_primal_gap_after_2000_iterations() -> None:
    """Without early stopping the open-loop rule still has F − F* = O(1/t) after 2000 iterations."""
    res = solve_simplex(make_objective("sparsemax", X), "frank-wolfe", iters=2000, tol=-1.0)
    assert res.trace[-1]["objective"] - 0.5625 < 1e-6


@pytest.mark.parametrize("lr", [0.3, 1.0])
def test_exponentiated_gradient_linear_entropy_is_softmax(lr: float) -> None:
    res = solve_simplex(make_objective("softmax", X), "exponentiated-gradient", iters=500, tol=1e-13, lr=lr)
    torch.testing.assert_close(res.p, torch.softmax(X, 0), atol=1e-10, rtol=0)


def test_kl_and_quadratic_minimisers() -> None:
    q = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    res = solve_simplex(make_objective("kl", q), "exponentiated-gradient", iters=500, tol=1e-12, lr=0.5)
    torch.testing.assert_close(res.p, q, atol=1e-9, rtol=0)
    a = torch.eye(3, dtype=torch.float64)
    res = solve_simplex(make_objective("quadratic", -X, matrix=a), "projected-gradient", iters=500, tol=1e-12)
    torch.testing.assert_close(res.p, SPARSEMAX, atol=1e-9, rtol=0)


def test_portfolio_kkt() -> None:
    r = torch.tensor([[1.2, 0.9, 1.0], [0.8, 1.3, 1.0], [1.1, 1.0, 1.0]], dtype=torch.float64)
    res = solve_simplex(make_objective("portfolio", matrix=r), "frank-wolfe", iters=3000, tol=1e-6,
                        step="line-search")
    assert res.converged and res.trace[-1]["objective"] <= res.trace[0]["objective"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=8))
def test_projection_is_exact(v: list[float]) -> None:
    """proj_Δ(v) lies on the simplex and satisfies the projection KKT: (v − p)·(q − p) ≤ 0, q any vertex."""
    vt = torch.tensor(v, dtype=torch.float64)
    p = project_simplex(vt)
    assert abs(float(p.sum()) - 1) < 1e-12 and bool((p >= 0).all())
    r = vt - p
    assert float(r.max() - r @ p) <= 1e-10


OBJECTIVE_MODULE = """
import math
import torch
X = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
def half_sq(p):
    return 0.5 * ((p - X) ** 2).sum()
def grad_only(p):
    return p - X
def value_and_grad(p):
    return 0.5 * ((p - X) ** 2).sum(), p - X
def nan_grad(p):
    return torch.tensor(0.0), torch.full_like(p, math.nan)
"""


@pytest.fixture
def user_objectives(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user module `probspace_user_objectives` importable as `module:function`."""
    (tmp_path / "probspace_user_objectives.py").write_text(OBJECTIVE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "probspace_user_objectives"


@pytest.mark.parametrize("fn", ["half_sq", "grad_only", "value_and_grad"])
def test_python_objective(user_objectives: str, fn: str) -> None:
    """F by autograd, a bare gradient, or (F, grad): all reach sparsemax."""
    obj = make_objective(f"{user_objectives}:{fn}", X)
    res = solve_simplex(obj, "projected-gradient", iters=500, tol=1e-12)
    torch.testing.assert_close(res.p, SPARSEMAX, atol=1e-9, rtol=0)


def test_bad_simplex_inputs(user_objectives: str) -> None:
    with pytest.raises(BadInput, match="not on the probability simplex"):
        make_objective("kl", torch.tensor([0.5, 0.6], dtype=torch.float64))
    with pytest.raises(BadInput, match="initial point"):
        solve_simplex(make_objective("sparsemax", X), "frank-wolfe", p0=torch.tensor([0.5, 0.6, -0.1]))
    with pytest.raises(BadInput, match="not finite at iteration 0"):
        solve_simplex(make_objective(f"{user_objectives}:nan_grad", X), "frank-wolfe")
    with pytest.raises(BadInput, match="allowed: "):
        make_objective("sparsmax", X)
    with pytest.raises(BadInput, match="cannot import objective"):
        make_objective(f"{user_objectives}:nope", X)
    with pytest.raises(BadInput, match="allowed: "):
        solve_simplex(make_objective("sparsemax", X), "newton")


def _gaussian_start(n: int, mean: list[float], cov: list[list[float]], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m, c = torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
    return m + torch.randn(n, len(mean), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c).T


@pytest.mark.parametrize(("method", "rtol"), [("langevin", None), ("kde-flow", 0.05)])
def test_heat_flow_variance(method: str, rtol: float | None) -> None:
    """F = ∫p log p from N(0, s²): Var_t = s² + 2t. Langevin is exact in law (4 standard errors of the
    sample variance, sd = Var·√(2/n)); the KDE flow is deterministic, so it is compared with the empirical
    start (Var₀ + 2t) and is biased low by O(h²/s²) (KDE smoothing)."""
    n, s, t = 2000, 1.0, 0.5
    x0 = _gaussian_start(n, [0.0], [[s * s]], seed=1)
    res = run_particles(FreeEnergy(entropy=1.0), x0, method, steps=25, step_size=t / 25,
                        generator=torch.Generator().manual_seed(2), log_every=25)
    var = float(res.x.var())
    if rtol is None:
        assert abs(var - (s * s + 2 * t)) < 4 * (s * s + 2 * t) * math.sqrt(2 / n)
    else:
        assert abs(var / (float(x0.var()) + 2 * t) - 1) < rtol


@pytest.mark.parametrize(("method", "mean_tol", "cov_tol"),
                         [("langevin", 0.08, 0.15), ("kde-flow", 0.02, 0.15)])
def test_fokker_planck_gaussian(method: str, mean_tol: float, cov_tol: float) -> None:
    """KL to N(0, I) from N(m₀, C₀): m_t = m₀e^{−t}, C_t = I + (C₀ − I)e^{−2t} (empirical m₀, C₀). Langevin:
    sampling error (n = 1000, step 0.01); KDE flow: deterministic mean, covariance biased towards C − h²."""
    x0 = _gaussian_start(1000, [2.0, -1.0], [[2.0, 0.5], [0.5, 0.5]], seed=3)
    t = 1.0
    res = run_particles(kl_energy(gaussian_target(torch.zeros(2), torch.eye(2))), x0, method, steps=100,
                        step_size=t / 100, generator=torch.Generator().manual_seed(4), log_every=50)
    m_t = x0.mean(0) * math.exp(-t)
    c_t = torch.eye(2, dtype=torch.float64) + (torch.cov(x0.T) - torch.eye(2)) * math.exp(-2 * t)
    assert float((res.x.mean(0) - m_t).abs().max()) < mean_tol
    assert float((torch.cov(res.x.T) - c_t).abs().max()) < cov_tol


@pytest.mark.parametrize(("method", "steps", "step_size", "bandwidth"),
                         [("langevin", 300, 0.005, None), ("svgd", 600, 0.01, 0.3)])
def test_reaches_gmm_target(method: str, steps: int, step_size: float, bandwidth: float | None) -> None:
    """MMD²(particles, fresh target sample) < 2 × the largest |MMD²| between two independent target samples
    (5 pairs), with the same n and the same bandwidth, checked at the median-heuristic bandwidth of a target
    sample (≈ 2, sees the ring) and at 0.5 (resolves the 8 modes, std 0.2). The N(0, I) start fails both.
    SVGD uses a fixed kernel width 0.3: with its median rule (≈ 0.8 here) the modes stay smeared."""
    n, target, g = 400, make_target("gmm-ring"), torch.Generator().manual_seed(5)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    res = run_particles(kl_energy(target), x0, method, steps=steps, step_size=step_size, generator=g,
                        bandwidth=bandwidth, log_every=steps)
    for h in (median_bandwidth(target.sample(n, g)), 0.5):
        noise = max(abs(mmd2(target.sample(n, g), target.sample(n, g), bandwidth=h)) for _ in range(5))
        assert mmd2(x0, target.sample(n, g), bandwidth=h) > 2 * noise
        assert mmd2(res.x, target.sample(n, g), bandwidth=h) < 2 * noise, h


def test_mmd_flow_decreases_mmd() -> None:
    n, target, g = 300, make_target("gmm-ring"), torch.Generator().manual_seed(6)
    y = target.sample(n, g)
    res = run_particles(kl_energy(target), torch.randn(n, 2, generator=g, dtype=torch.float64), "mmd-flow",
                        steps=100, step_size=1.0, target_samples=y, log_every=50)
    assert res.trace[-1]["mmd2"] < 0.2 * res.trace[0]["mmd2"]


def test_particles_deterministic_and_bad_input() -> None:
    target = make_target("banana")
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    runs = [run_particles(kl_energy(target), x0, "langevin", steps=5, step_size=0.01,
                          generator=torch.Generator().manual_seed(1)).x for _ in range(2)]
    assert torch.equal(*runs)
    with pytest.raises(NumericalFailure, match="non-finite at step"):
        run_particles(kl_energy(make_target("double-well")), x0 * 10, "langevin", steps=50, step_size=10.0)
    with pytest.raises(BadInput, match="allowed: "):
        run_particles(kl_energy(target), x0, "hmc", steps=5, step_size=0.1)
