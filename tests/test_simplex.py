"""Simplex methods against answers computed here, independently of gentool (issue 16).

Every (objective × method) pair at n = 3, 50 and 1000 with the default settings reaches F − F* ≤ 1e-6, or is
refused with one line naming the methods that can. Minimisers: sparsemax by a root-find of its threshold,
softmax and kl in closed form, quadratic and portfolio planted through their KKT conditions (and the plants
checked against scipy's SLSQP at small n).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gentool.core.errors import BadInput
from gentool.core.probspace import make_objective, prox_entropy_simplex, solve_simplex
from gentool.core.probspace.objectives import python_objective
from gentool.core.probspace.simplex import METHODS, SimplexRun, evaluate, fw_gap, line_search
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, minimize_scalar
from scipy.special import softmax
from simplex_problems import as_tensor, problem

OBJECTIVES = ("sparsemax", "softmax", "kl", "quadratic", "portfolio")
SLOW_AT_1000 = {("kl", "frank-wolfe"), ("kl", "softmax-gd"), ("softmax", "frank-wolfe"), ("quadratic", "frank-wolfe"),
                ("quadratic", "exponentiated-gradient"), ("portfolio", "frank-wolfe"),
                ("portfolio", "exponentiated-gradient")}


def _grid() -> list:
    cases = []
    for n in (3, 50, 1000):
        for name in OBJECTIVES:
            for method in METHODS:
                slow = n == 1000 and (name, method) in SLOW_AT_1000
                cases.append(pytest.param(n, name, method, marks=[pytest.mark.slow] if slow else [],
                                          id=f"{n}-{name}-{method}"))
    return cases


@pytest.mark.parametrize(("n", "name", "method"), _grid())
def test_every_pair_reaches_the_minimiser_with_defaults(n: int, name: str, method: str) -> None:
    obj, p_star = problem(name, n)
    if method == "softmax-gd" and name in ("sparsemax", "quadratic", "portfolio"):
        with pytest.raises(BadInput, match=f"softmax-gd cannot solve objective '{name}'.*use frank-wolfe, "
                           "exponentiated-gradient, projected-gradient"):
            solve_simplex(obj, method)
        return
    res = solve_simplex(obj, method)
    f_star = float(obj.value(as_tensor(p_star)))
    gap = float(obj.value(res.p)) - f_star
    assert res.converged and gap <= 1e-6, (gap, res.iters)
    assert res.trace[-1]["gap"] >= gap - 1e-12  # the reported gap bounds F − F*
    assert abs(float(res.p.sum()) - 1.0) < 1e-12 and float(res.p.min()) >= 0.0


@pytest.mark.parametrize(("name", "n"), [("quadratic", 3), ("quadratic", 12), ("portfolio", 3), ("portfolio", 12)])
def test_planted_minimisers_agree_with_slsqp(name: str, n: int) -> None:
    """The planted p* is what scipy's SLSQP finds (the plants are right, independently of the KKT argument)."""
    obj, p_star = problem(name, n, seed=7)
    f = lambda p: float(obj.value(as_tensor(p)))  # noqa: E731
    res = minimize(f, np.full(n, 1.0 / n), jac=lambda p: obj.grad(as_tensor(p)).numpy(), method="SLSQP",
                   bounds=[(0.0, 1.0)] * n, constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    assert res.success and abs(res.fun - f(p_star)) < 1e-9
    np.testing.assert_allclose(res.x, p_star, atol=1e-5)


# ---- the bugs of issue 16, reproduced -------------------------------------------------------------------

HALF_SQ = """
import torch
X = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
def grad_only(p):
    return p - X
def value_and_grad(p):
    return 0.5 * ((p - X) ** 2).sum(), p - X
def scaled(p, data):
    return 0.5 * (data["w"] * (p - data["x"]) ** 2).sum()
def grad_only_entropic(p):
    return -X + torch.log(p) + 1.0
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "simplex_user_objectives.py").write_text(HALF_SQ)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "simplex_user_objectives"


@pytest.mark.parametrize("step", ["line-search", "away"])
def test_line_search_moves_for_a_gradient_only_objective(user_module: str, step: str) -> None:
    """Issue 16: with F unknown the old fallback kept the wrong interval and FW never left the uniform point
    (gap 2.21 after 1000 iterations). Now the gradient-only and (F, grad) forms take the same steps."""
    runs = {}
    for fn in ("grad_only", "value_and_grad"):
        obj = make_objective(f"{user_module}:{fn}", dim=3)
        runs[fn] = solve_simplex(obj, "frank-wolfe", step=step, tol=1e-12)
        assert runs[fn].converged
        torch.testing.assert_close(runs[fn].p, as_tensor(np.array([0.75, 0.25, 0.0])), atol=1e-10, rtol=0)
    assert runs["grad_only"].iters == runs["value_and_grad"].iters
    assert "objective" not in runs["grad_only"].trace[-1]  # unknown F is left out, not NaN


@pytest.mark.parametrize("name", ["portfolio", "kl"])
def test_line_search_is_exact_on_a_ray(name: str) -> None:
    """The slope-only search finds scipy's minimiser of φ(η) = F(p + ηd) on [0, 1] (FW direction from
    p = 0.9 p* + 0.1 uniform)."""
    obj, p_star = problem(name, 50, seed=3)
    p = 0.9 * as_tensor(p_star) + 0.1 / 50
    pt = evaluate(obj, p)
    d = -p.clone()
    d[int(torch.argmin(pt.grad))] += 1.0
    eta = line_search(obj, pt, d, 1.0)
    ref = minimize_scalar(lambda e: float(obj.value(p + e * d)), bounds=(0.0, 1.0), method="bounded",
                          options={"xatol": 1e-12})
    assert 0.0 < eta < 1.0 and abs(eta - ref.x) < 1e-6, (eta, ref.x)


def test_projected_gradient_on_softmax_does_not_bounce() -> None:
    """Issue 16: `--objective softmax --x 0.1257,-0.1321,0.6404 --method projected-gradient` gave the corner
    (0, 1, 0); the answer is softmax(x) ≈ (0.29, 0.22, 0.49)."""
    x = np.array([0.1257, -0.1321, 0.6404])
    res = solve_simplex(make_objective("softmax", as_tensor(x)), "projected-gradient", tol=1e-13)
    assert res.converged
    np.testing.assert_allclose(res.p.numpy(), softmax(x), atol=1e-8)


@pytest.mark.parametrize("method", ["projected-gradient", "exponentiated-gradient"])
@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_fixed_steps_still_solve_entropic_objectives(method: str, tau: float) -> None:
    """With backtracking off, the entropy still enters the prox exactly: any fixed lr converges."""
    x = np.array([0.1257, -0.1321, 0.6404])
    for lr in (0.2, 1.0, 50.0):
        res = solve_simplex(make_objective("softmax", as_tensor(x), tau=tau), method, lr=lr, backtrack=False,
                            tol=1e-13)
        assert res.converged
        np.testing.assert_allclose(res.p.numpy(), softmax(x / tau), atol=1e-10)


def test_open_loop_frank_wolfe_is_slow_and_says_so() -> None:
    """Plain FW with 2/(t+2) on an entropic objective at n = 1000 is far from F* after 1000 iterations; the
    run reports converged=False and a gap that bounds its error (the default, away steps, converges)."""
    obj, p_star = problem("softmax", 1000)
    f_star = float(obj.value(as_tensor(p_star)))
    res = solve_simplex(obj, "frank-wolfe", step="open-loop", iters=1000)
    err = float(obj.value(res.p)) - f_star
    assert not res.converged and err > 1.0 and res.trace[-1]["gap"] >= err - 1e-12


def test_user_objective_with_entropy_term_through_gradient_only(user_module: str) -> None:
    """A gradient-only objective whose gradient is unbounded at the faces: FW's line search stays inside."""
    obj = make_objective(f"{user_module}:grad_only_entropic", dim=3)
    res = solve_simplex(obj, "frank-wolfe")
    np.testing.assert_allclose(res.p.numpy(), softmax([1.0, 0.5, -1.0]), atol=1e-6)


# ---- pieces -------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=12), st.floats(1e-3, 1e3))
def test_entropy_prox_is_exact(v: list[float], lam: float) -> None:
    """argmin_{q ∈ Δ} ½‖q − v‖² + λ Σ q log q: stationarity q_i − v_i + λ(log q_i + 1) = −μ, the same for every
    i (q > 0), checked where q is not below the floating-point range."""
    q = prox_entropy_simplex(as_tensor(np.array(v)), lam)
    assert abs(float(q.sum()) - 1.0) < 1e-12 and bool((q >= 0).all())
    keep = q > 1e-250
    r = (q - as_tensor(np.array(v)) + lam * (torch.log(q.clamp_min(1e-300)) + 1.0))[keep]
    assert float(r.max() - r.min()) <= 1e-8 * (1.0 + lam + max(abs(x) for x in v))


def test_entropy_prox_matches_scipy() -> None:
    v, lam = np.array([0.3, -1.2, 2.0, 0.0, 0.7]), 0.4
    f = lambda q: 0.5 * ((q - v) ** 2).sum() + lam * (q * np.log(np.maximum(q, 1e-300))).sum()  # noqa: E731
    ref = minimize(f, np.full(5, 0.2), method="SLSQP", bounds=[(1e-12, 1.0)] * 5,
                   constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1.0}], options={"ftol": 1e-15})
    np.testing.assert_allclose(prox_entropy_simplex(as_tensor(v), lam).numpy(), ref.x, atol=1e-6)


def test_gap_bounds_the_error_along_the_way() -> None:
    """At every iterate of every method: F(p) − F* ≤ gap (the certificate the stopping rule relies on)."""
    for name in OBJECTIVES:
        obj, p_star = problem(name, 50, seed=5)
        f_star = float(obj.value(as_tensor(p_star)))
        for method in ("frank-wolfe", "exponentiated-gradient", "projected-gradient"):
            run = SimplexRun(obj, method, iters=40, tol=-1.0)
            for _ in range(40):
                err = float(obj.value(run.p)) - f_star
                assert err <= fw_gap(run.p, run.point.grad) + 1e-12, (name, method, run.t)
                run.iterate(1)


def test_away_steps_drop_vertices_exactly() -> None:
    """Away steps reach the face of the minimiser: off-support entries become exactly 0."""
    obj, p_star = problem("quadratic", 50, seed=2)
    res = solve_simplex(obj, "frank-wolfe")
    assert set(np.flatnonzero(res.p.numpy())) == set(np.flatnonzero(p_star))


def test_multiplicative_methods_refuse_a_start_with_zeros() -> None:
    obj = make_objective("softmax", as_tensor(np.array([1.0, 0.5, -1.0])))
    for method in ("exponentiated-gradient", "softmax-gd"):
        with pytest.raises(BadInput, match="zero entries of the initial point p0 stay zero"):
            solve_simplex(obj, method, p0=as_tensor(np.array([0.5, 0.5, 0.0])))
    res = solve_simplex(obj, "projected-gradient", p0=as_tensor(np.array([0.5, 0.5, 0.0])), tol=1e-13)
    np.testing.assert_allclose(res.p.numpy(), softmax([1.0, 0.5, -1.0]), atol=1e-8)


def test_user_objective_receives_its_data(user_module: str) -> None:
    """function(p, data) with a dict of tensors: the weighted sparsemax ½ Σ w (p − x)², checked by SLSQP."""
    w, x = np.array([1.0, 3.0, 0.5, 2.0]), np.array([0.9, 0.2, -0.3, 0.4])
    obj = python_objective(f"{user_module}:scaled", 4, {"w": as_tensor(w), "x": as_tensor(x)})
    res = solve_simplex(obj, "projected-gradient")
    ref = minimize(lambda p: 0.5 * (w * (p - x) ** 2).sum(), np.full(4, 0.25), method="SLSQP",
                   bounds=[(0.0, 1.0)] * 4, constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                   options={"ftol": 1e-15})
    np.testing.assert_allclose(res.p.numpy(), ref.x, atol=1e-6)
    with pytest.raises(BadInput, match="takes 1 argument"):
        python_objective(f"{user_module}:grad_only", 4, {"w": as_tensor(w)})
