"""Probability-space optimisers on the simplex (KKT gap); particle flows are in test_particles.py."""

from __future__ import annotations

import pytest
import torch
from gentool.core.errors import BadInput
from gentool.core.probspace import (
    make_objective,
    project_simplex,
    solve_simplex,
)
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
