"""`gentool.core.solvers.odeint` / `odeint_adjoint` as drop-ins for torchdiffeq's: torchdiffeq's test problems
(constant, linear, sine ODEs with exact solutions, on t in [1, 8], forward and reversed) give the exact solution
and agree with `torchdiffeq.odeint`; gradients agree between the adjoint, backpropagation and a closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from gentool.core.errors import BadInput
from gentool.core.solvers import odeint, odeint_adjoint

F64 = torch.float64


class ConstantODE(torch.nn.Module):
    """y' = a + (y - (a t + b))^5, exact y = a t + b (the fifth power punishes any drift from it)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.2))
        self.b = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a + (y - (self.a * t + self.b)) ** 5

    def y_exact(self, t: torch.Tensor) -> torch.Tensor:
        return self.a * t + self.b


class LinearODE(torch.nn.Module):
    """y' = A y with A = U - U^T skew-symmetric, exact y(t) = exp(A t) 1."""

    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        u = torch.randn(dim, dim, generator=torch.Generator().manual_seed(0)) * 0.1
        self.A = torch.nn.Parameter(u - u.T)
        self.dim = dim

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.mm(self.A, y.reshape(self.dim, 1)).reshape(-1)

    def y_exact(self, t: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(self.dim, dtype=t.dtype)
        return torch.stack([torch.linalg.matrix_exp(self.A * ti) @ ones for ti in t.detach()])


class SineODE(torch.nn.Module):
    """y' = 2y/t + t^4 sin 2t - t^2 + 4t^3, exact
    y = -t^4 cos(2t)/2 + t^3 sin(2t)/2 + t^2 cos(2t)/4 - t^3 + 2t^4 + (π - 1/4) t^2."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2 * y / t + t**4 * torch.sin(2 * t) - t**2 + 4 * t**3

    def y_exact(self, t: torch.Tensor) -> torch.Tensor:
        return (-0.5 * t**4 * torch.cos(2 * t) + 0.5 * t**3 * torch.sin(2 * t) + 0.25 * t**2 * torch.cos(2 * t)
                - t**3 + 2 * t**4 + (math.pi - 0.25) * t**2)


PROBLEMS = {"constant": ConstantODE, "linear": LinearODE, "sine": SineODE}


def construct_problem(ode: str, npts: int = 10, reverse: bool = False, dtype: torch.dtype = F64):
    """(f, y0, t, exact solution at t) on t = linspace(1, 8, npts) (reversed: from 8 down to 1)."""
    f = PROBLEMS[ode]().to(dtype=dtype)
    t = torch.linspace(1, 8, npts, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        sol = f.y_exact(t)
    if reverse:
        t, sol = t.flip(0).detach(), sol.flip(0)
    return f, sol[0].clone().requires_grad_(True), t, sol


def rel_error(ys: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((ys - exact).abs() / exact.abs().clamp_min(1.0)).max().detach())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_dopri5_default_matches_exact_and_torchdiffeq(ode, reverse):
    f, y0, t, exact = construct_problem(ode, reverse=reverse)
    ys = odeint(f, y0, t)  # torchdiffeq's defaults: dopri5, rtol 1e-7, atol 1e-9
    theirs = torchdiffeq.odeint(f, y0, t)
    assert ys.shape == theirs.shape == (len(t), *y0.shape)
    assert rel_error(ys, exact) < 1e-5
    assert rel_error(ys, theirs) < 1e-4  # both solve to the tolerance; their errors differ, not their size
    torch.testing.assert_close(ys, odeint(f, y0, t, method="dopri5"))


@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_bosh3_matches_exact(ode):
    f, y0, t, exact = construct_problem(ode)
    ys = odeint(f, y0, t, method="bosh3", rtol=1e-4, atol=1e-6)
    assert rel_error(ys, exact) < 1e-2
    assert rel_error(ys, torchdiffeq.odeint(f, y0, t, method="bosh3", rtol=1e-4, atol=1e-6)) < 1e-2


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2"])
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_fixed_steps_on_the_grid_equal_torchdiffeq(ode, method):
    """One step per interval of `t`: the same arithmetic as torchdiffeq's fixed-grid solvers."""
    f, y0, t, _ = construct_problem(ode, npts=40)
    torch.testing.assert_close(odeint(f, y0, t, method=method), torchdiffeq.odeint(f, y0, t, method=method),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_rk4_with_step_size_matches_exact(ode, reverse):
    f, y0, t, exact = construct_problem(ode, reverse=reverse)
    coarse = rel_error(odeint(f, y0, t, method="rk4", options={"step_size": 0.1}), exact)
    fine = rel_error(odeint(f, y0, t, method="rk4", options={"step_size": 0.05}), exact)
    assert fine < 1e-5
    if coarse > 1e-12:  # fourth order: halving the step divides the error by about 16
        assert coarse / fine > 10


def test_func_gets_a_scalar_time_and_the_state_shape():
    seen = []

    def func(t, y):
        seen.append((t.dim(), tuple(y.shape)))
        return -y

    y0 = torch.ones(3, 2, dtype=F64)
    ys = odeint(func, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    assert ys.shape == (3, 3, 2)
    assert set(seen) == {(0, (3, 2))}
    torch.testing.assert_close(ys[-1], y0 * math.exp(-1.0), rtol=1e-7, atol=0)


def test_tuple_state():
    """A tuple y0 gives a tuple of trajectories: harmonic oscillator x' = v, v' = -x."""
    t = torch.linspace(0, 2, 5, dtype=F64)
    x, v = odeint(lambda t, s: (s[1], -s[0]), (torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64)), t)
    assert x.shape == v.shape == (5, 1)
    torch.testing.assert_close(x[:, 0], torch.cos(t), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(v[:, 0], -torch.sin(t), rtol=1e-6, atol=1e-8)


def test_gradients_adjoint_backprop_and_closed_form():
    """d/dA and d/dy0 of sum y(T) for y' = A y: exp(A T) y0 differentiated by autograd is the reference."""
    f, y0, t, _ = construct_problem("linear", npts=3)
    t = t.detach()
    grads = {}
    for name, solve in {"backprop": odeint, "adjoint": odeint_adjoint}.items():
        f.zero_grad()
        y = y0.detach().clone().requires_grad_(True)
        solve(f, y, t, rtol=1e-9, atol=1e-11)[-1].sum().backward()
        grads[name] = (f.A.grad.clone(), y.grad.clone())
    f.zero_grad()
    y = y0.detach().clone().requires_grad_(True)
    (torch.linalg.matrix_exp(f.A * (t[-1] - t[0])) @ y).sum().backward()
    exact = (f.A.grad, y.grad)
    for name in grads:
        for got, want in zip(grads[name], exact, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)


def test_adjoint_through_constant_problem_agrees_with_backprop():
    f, y0, t, _ = construct_problem("constant", npts=4)
    out = {}
    for name, solve in {"backprop": odeint, "adjoint": odeint_adjoint}.items():
        f.zero_grad()
        solve(f, y0, t.detach())[-1].backward()
        out[name] = torch.stack([f.a.grad, f.b.grad])
    torch.testing.assert_close(out["adjoint"], out["backprop"], rtol=1e-5, atol=1e-6)
    # y0 held fixed: dy(T)/da = T - t0 = 7 (the residual y - (a t + b) stays 0), dy(T)/db = 0
    torch.testing.assert_close(out["backprop"], torch.tensor([7.0, 0.0], dtype=F64), rtol=1e-5, atol=1e-6)


def test_float32():
    f, y0, t, exact = construct_problem("sine", dtype=torch.float32)
    ys = odeint(f, y0, t, rtol=1e-5, atol=1e-5)
    assert ys.dtype == torch.float32
    assert rel_error(ys, exact) < 1e-3


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"method": "dopri9"}, "unknown method 'dopri9'"),
    ({"method": "rk4", "options": {"first_step": 0.1}}, "unknown rk4 option 'first_step'"),
    ({"options": {"step_size": 0.1}}, "unknown dopri5 option 'step_size'"),
    ({"method": "euler", "options": {"step_size": -1.0}}, "step_size"),
])
def test_bad_arguments_name_the_allowed_ones(kwargs, text):
    with pytest.raises(BadInput, match=text):
        odeint(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), **kwargs)


def test_adjoint_needs_parameters():
    with pytest.raises(BadInput, match="nn.Module"):
        odeint_adjoint(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


@pytest.mark.gpu
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_cuda_matches_cpu(ode):
    f, y0, t, exact = construct_problem(ode)
    ys = odeint(f.cuda(), y0.detach().cuda(), t.detach().cuda())
    assert ys.device.type == "cuda"
    assert rel_error(ys.cpu(), exact) < 1e-5
    assert rel_error(ys.cpu(), odeint(f.cpu(), y0.detach(), t.detach())) < 1e-5  # steps may differ by rounding
