"""Solver core: closed forms, convergence orders, scipy/torchdiffeq peers, per-sample adaptivity, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
from gentool.core.errors import BadInput
from gentool.core.solvers import (
    ADAPTIVE_METHODS,
    FIXED_METHODS,
    MaxStepsExceeded,
    NonFiniteState,
    batch_odeint,
)
from gentool.core.solvers import api as solver_api
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def decay(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -x


def gaussian_decay(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dt = -t x, exact x(t) = x(0) exp(-t^2/2): checks the per-sample time each stage receives."""
    return -t[:, None] * x


def van_der_pol(mu: torch.Tensor):
    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p, q = x[:, 0], x[:, 1]
        return torch.stack([q, mu * (1 - p * p) * q - p], dim=1)

    return f


@pytest.mark.parametrize("method", FIXED_METHODS + ADAPTIVE_METHODS)
def test_exponential_decay_matches_exp(method: str) -> None:
    x0 = torch.linspace(-1, 2, 6, dtype=F64).reshape(3, 2)
    sol = batch_odeint(decay, x0, torch.linspace(0, 1, 401, dtype=F64), method, rtol=1e-10, atol=1e-12)
    tol = {"euler": 1e-3, "midpoint": 1e-5, "heun": 1e-5}.get(method, 1e-9)
    torch.testing.assert_close(sol.x, x0 * math.exp(-1), rtol=0, atol=tol)
    assert bool(sol.reached.all())


@pytest.mark.parametrize("method", ["rk4", "dopri5", "bosh3"])
def test_linear_system_matches_expm(method: str) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    x0 = torch.randn(5, 3, generator=gen, dtype=F64)
    t = torch.linspace(0, 1.5, 301, dtype=F64)
    sol = batch_odeint(lambda t, x: x @ a.T, x0, t, method, rtol=1e-10, atol=1e-12)
    exact = x0 @ torch.from_numpy(scipy.linalg.expm(a.numpy() * 1.5)).T
    torch.testing.assert_close(sol.x, exact, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_observed_order_of_convergence(method: str) -> None:
    x0 = torch.ones(2, 1, dtype=F64)
    exact = math.exp(-0.5 * 2.0**2)
    errs = [(batch_odeint(gaussian_decay, x0, torch.linspace(0, 2, n + 1, dtype=F64), method).x[0, 0] - exact).abs()
            for n in (32, 64)]
    assert math.log2(float(errs[0] / errs[1])) == pytest.approx(ORDERS[method], abs=0.15)


def test_decreasing_nonuniform_grid_is_exact_for_rk4() -> None:
    sigma = torch.tensor([80.0 ** (1 / 7) * (1 - i / 60) + 0.002 ** (1 / 7) * i / 60 for i in range(61)],
                         dtype=F64) ** 7 / 80  # Karras-like rho=7 grid, decreasing, scaled to [0.000025, 1]
    x0 = torch.ones(4, 2, dtype=F64)
    sol = batch_odeint(gaussian_decay, x0, sigma, "rk4", save="times")
    exact = torch.exp(-0.5 * (sigma**2 - sigma[0] ** 2))
    torch.testing.assert_close(sol.xs[:, 0, 0], exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("method", "rtol", "tol"), [("dopri5", 1e-9, 1e-6), ("bosh3", 1e-7, 1e-4)])
def test_adaptive_agrees_with_scipy_dop853(method: str, rtol: float, tol: float) -> None:
    mus = np.array([0.5, 1.0, 2.0])
    x0 = np.array([[2.0, 0.0], [1.0, 1.0], [0.5, -1.0]])
    sol = batch_odeint(van_der_pol(torch.tensor(mus)), torch.tensor(x0), torch.tensor([0.0, 4.0], dtype=F64),
                 method, rtol=rtol, atol=rtol * 1e-2)
    for i, mu in enumerate(mus):
        ref = scipy.integrate.solve_ivp(lambda t, y, mu=mu: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
                                        (0.0, 4.0), x0[i], method="DOP853", rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sol.x[i].numpy(), ref.y[:, -1], rtol=0, atol=tol)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_van_der_pol_each_sample_as_if_alone(method: str) -> None:
    mu = torch.linspace(0, 25, 8, dtype=F64)
    x0 = torch.stack([torch.linspace(0.5, 2.0, 8, dtype=F64), torch.zeros(8, dtype=F64)], dim=1)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    batch = batch_odeint(van_der_pol(mu), x0, t, method, rtol=1e-5, atol=1e-7)
    assert len(set(batch.nfe.tolist())) > 4  # samples really took different numbers of steps
    for i in range(8):
        alone = batch_odeint(van_der_pol(mu[i:i + 1]), x0[i:i + 1], t, method, rtol=1e-5, atol=1e-7)
        assert int(alone.nfe) == int(batch.nfe[i])
        assert int(alone.accepted) == int(batch.accepted[i]) and int(alone.rejected) == int(batch.rejected[i])
        torch.testing.assert_close(alone.x[0], batch.x[i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
@pytest.mark.parametrize("rtol", [1e-3, 1e-8])
def test_no_field_calls_after_every_sample_is_done(method: str, rtol: float) -> None:
    """Chunks between host syncs never run idle: the batch calls f exactly as often as its busiest sample."""
    mu = torch.linspace(0, 10, 6, dtype=F64)
    calls = []

    def counted(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return van_der_pol(mu)(t, x)

    x0 = torch.stack([torch.linspace(0.5, 2.0, 6, dtype=F64), torch.zeros(6, dtype=F64)], dim=1)
    for t in ([0.0, 2.0], [0.0, 0.5, 1.0, 2.0]):
        calls.clear()
        sol = batch_odeint(counted, x0, torch.tensor(t, dtype=F64), method, rtol=rtol, atol=rtol / 100, save="times")
        assert len(calls) == int(sol.nfe.max())


def test_per_sample_steps_track_torchode() -> None:
    """torchode also steps each sample on its own: same Van der Pol batch, same accepted-step profile.

    torchode's Dopri5 uses a different embedded 4th-order estimator (slightly smaller errors), so the
    counts are close rather than equal; a batch-shared step size would give every sample the same count.
    """
    pytest.importorskip("torchode")
    from gentool.core.solvers.benchmark import torchode_solve

    mu = torch.linspace(0, 25, 8, dtype=F64)
    x0 = torch.stack([torch.linspace(0.5, 2.0, 8, dtype=F64), torch.zeros(8, dtype=F64)], dim=1)
    ours = batch_odeint(van_der_pol(mu), x0, torch.tensor([0.0, 3.0], dtype=F64), "dopri5", rtol=1e-7, atol=1e-9,
                  controller="integral")
    theirs, accepted, _ = torchode_solve(van_der_pol(mu), x0, 3.0, 1e-7, 1e-9)
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-6)
    ratio = ours.accepted.double() / accepted.double()
    assert bool(((ratio > 0.9) & (ratio < 1.2)).all()), ratio.tolist()
    assert accepted.max() > 3 * accepted.min()


def tanh_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x.flip(1)) * torch.cos(t)[:, None] - 0.3 * x


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_torchdiffeq_backend_agrees_with_fixed_methods(method: str) -> None:
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    t = torch.linspace(0, 2, 101, dtype=F64)
    ours = batch_odeint(tanh_field, x0, t, method, save="times")
    theirs = batch_odeint(tanh_field, x0, t, method, save="times", backend="torchdiffeq")
    torch.testing.assert_close(ours.xs, theirs.xs, rtol=0, atol=1e-6)
    assert theirs.nfe.tolist() == ours.nfe.tolist()


def test_torchdiffeq_backend_adaptive_and_unsupported_modes() -> None:
    x0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    sol = batch_odeint(decay, x0, t, "dopri5", rtol=1e-9, atol=1e-11, save="times", backend="torchdiffeq")
    torch.testing.assert_close(sol.xs[:, 0, 0], torch.exp(-t), rtol=1e-7, atol=0)
    assert int(sol.accepted[0]) == -1
    with pytest.raises(BadInput, match="trajectory"):
        batch_odeint(decay, x0, t, "dopri5", save="trajectory", backend="torchdiffeq")
    with pytest.raises(MaxStepsExceeded):
        batch_odeint(van_der_pol(torch.full((3,), 10.0, dtype=F64)), x0, t * 10, "dopri5", max_steps=3,
               backend="torchdiffeq")


def test_save_modes_fixed() -> None:
    x0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 11, dtype=F64)
    final = batch_odeint(decay, x0, t, "heun")
    times = batch_odeint(decay, x0, t, "heun", save="times")
    traj = batch_odeint(decay, x0, t, "heun", save="trajectory")
    assert final.xs is None and final.ts.shape == (3,)
    assert times.xs.shape == (11, 3, 2) and torch.equal(times.xs, traj.xs) and torch.equal(times.ts, t)
    assert torch.equal(times.xs[0], x0) and torch.equal(times.xs[-1], final.x)
    assert final.nfe.tolist() == [20, 20, 20] and final.accepted.tolist() == [10, 10, 10]


def test_save_modes_adaptive() -> None:
    x0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([0.0, 0.1, 0.7, 2.0], dtype=F64)
    times = batch_odeint(decay, x0, t, "dopri5", save="times", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(times.xs[:, :, 0], torch.exp(-t)[:, None] * x0[:, 0], rtol=1e-8, atol=0)
    traj = batch_odeint(decay, x0, t, "dopri5", save="trajectory", rtol=1e-6, atol=1e-8)
    final = batch_odeint(decay, x0, t, "dopri5", rtol=1e-6, atol=1e-8)
    assert traj.xs.shape[0] == int(traj.accepted.max()) + 1 and traj.ts.shape == traj.xs.shape[:2]
    assert bool((traj.ts.diff(dim=0) >= 0).all()) and torch.equal(traj.ts[-1], final.ts)
    assert torch.equal(traj.xs[-1], final.x) and torch.equal(traj.xs[0], x0)
    torch.testing.assert_close(traj.xs[:, :, 0], torch.exp(-traj.ts) * x0[:, 0], rtol=1e-5, atol=0)


@pytest.mark.parametrize("controller", ["integral", "pi"])
def test_max_steps_raise_and_return(controller: str) -> None:
    mu = torch.tensor([0.0, 20.0], dtype=F64)
    x0 = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    with pytest.raises(MaxStepsExceeded, match="max_steps=40"):
        batch_odeint(van_der_pol(mu), x0, t, "dopri5", rtol=1e-3, atol=1e-6, max_steps=40, controller=controller)
    sol = batch_odeint(van_der_pol(mu), x0, t, "dopri5", rtol=1e-3, atol=1e-6, max_steps=40, controller=controller,
                 on_max_steps="return")
    assert sol.reached.tolist() == [True, False]
    assert int(sol.accepted[1] + sol.rejected[1]) == 40 and float(sol.ts[1]) < 10.0
    assert bool(torch.isfinite(sol.x).all())


def test_non_finite_state_names_step_and_time() -> None:
    x0 = torch.ones(2, 1)
    t = torch.linspace(0, 4, 41)
    x, first_bad = x0.clone(), None
    for i in range(40):
        x = x + 0.1 * x * x
        if first_bad is None and not bool(torch.isfinite(x).all()):
            first_bad = i
    with pytest.raises(NonFiniteState, match=f"step {first_bad} "):
        batch_odeint(lambda t, x: x * x, x0, t, "euler")
    with pytest.raises(NonFiniteState, match="step 0"):
        batch_odeint(decay, torch.tensor([[float("nan")]]), t, "rk4")
    poisoned = lambda t, x: torch.where(t[:, None] > 0.5, torch.full_like(x, float("nan")), -x)  # noqa: E731
    with pytest.raises(NonFiniteState, match=r"t=0\.5"):
        batch_odeint(poisoned, x0.double(), t.double(), "dopri5")


def test_finiteness_check_survives_overflowing_sums() -> None:
    big = torch.full((4, 2), 3e38)  # float32: finite entries whose sum overflows
    assert solver_api.all_finite(big)
    assert not solver_api.all_finite(torch.tensor([[1.0, float("inf")]]))
    assert not solver_api.all_finite(torch.tensor([[float("nan"), 0.0]]))
    sol = batch_odeint(lambda t, x: torch.zeros_like(x), big, torch.linspace(0, 1, 3), "heun")
    assert torch.equal(sol.x, big)
    with pytest.raises(NonFiniteState, match="initial state"):
        batch_odeint(decay, torch.tensor([[float("inf")]]), torch.linspace(0, 1, 3), "euler")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "rk45"}, "allowed: bosh3, dopri5, euler, heun, midpoint, rk4"),
    ({"backend": "jax"}, "allowed: gentool, torchdiffeq"),
    ({"save": "every"}, "allowed: final, times, trajectory"),
    ({"controller": "pid"}, "allowed: integral, pi"),
    ({"graph": "yes"}, "allowed: auto, off, on"),
    ({"on_max_steps": "warn"}, "allowed: raise, return"),
    ({"rtol": 0.0}, "rtol must be > 0"),
    ({"t": [0.0]}, "steps must be >= 1"),
    ({"t": [0.0, 1.0, 0.5]}, "strictly increasing or strictly decreasing"),
    ({"graph": "on"}, "CUDA"),
])
def test_bad_input_is_reported(kwargs: dict, match: str) -> None:
    args = {"t": torch.linspace(0, 1, 3), "method": "rk4"} | kwargs
    t = torch.as_tensor(args.pop("t"))
    with pytest.raises(BadInput, match=match):
        batch_odeint(decay, torch.ones(2, 2), t, **args)


def test_cpu_path_never_touches_cuda_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("CUDA graph path used on CPU")

    from gentool.core.solvers import cuda_graph

    monkeypatch.setattr(cuda_graph, "graphed_solver", boom)
    monkeypatch.setattr(solver_api, "graphed_chunks", boom)
    with torch.no_grad():
        sol = batch_odeint(decay, torch.ones(2, 2), torch.linspace(0, 1, 5), "rk4", graph="auto")
        adaptive = batch_odeint(decay, torch.ones(2, 2), torch.linspace(0, 1, 5), "dopri5", graph="auto")
    assert sol.x.shape == adaptive.x.shape == (2, 2)


def test_progress_callback_and_gradients() -> None:
    calls: list[tuple[int, int]] = []
    x0 = torch.ones(4, 2, requires_grad=True)
    sol = batch_odeint(decay, x0, torch.linspace(0, 1, 101), "rk4",
                 progress=lambda d, n, **kw: calls.append((d, n)))
    assert calls[-1] == (100, 100) and len(calls) >= 10
    sol.x.sum().backward()
    torch.testing.assert_close(x0.grad, torch.full_like(x0, math.exp(-1)), rtol=1e-6, atol=0)


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(st.floats(0.01, 0.5), min_size=1, max_size=6), reverse=st.booleans(),
       shape=st.lists(st.integers(1, 3), min_size=1, max_size=2), batch=st.integers(2, 6),
       pick=st.integers(0, 5), method=st.sampled_from(["heun", "rk4", "bosh3", "dopri5"]))
def test_result_does_not_depend_on_batch_composition(steps: list[float], reverse: bool, shape: list[int],
                                                     batch: int, pick: int, method: str) -> None:
    t = torch.cumsum(torch.tensor([0.0] + steps, dtype=F64), 0)
    t = t.flip(0) if reverse else t
    x0 = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch), dtype=F64)
    field = lambda t, x: torch.sin(3 * x) * (1 + t.reshape(-1, *[1] * (x.dim() - 1))) - 0.5 * x  # noqa: E731
    i = pick % batch
    whole = batch_odeint(field, x0, t, method, rtol=1e-4, atol=1e-6, save="times")
    alone = batch_odeint(field, x0[i:i + 1], t, method, rtol=1e-4, atol=1e-6, save="times")
    torch.testing.assert_close(alone.xs[:, 0], whole.xs[:, i], rtol=1e-13, atol=1e-13)
    assert int(alone.nfe) == int(whole.nfe[i])


@pytest.mark.gpu
@pytest.mark.parametrize("save", ["final", "times"])
def test_cuda_graph_matches_eager(save: str) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2)).cuda()
    x0 = torch.randn(1024, 2, device="cuda")
    t = torch.linspace(1, 0, 33, device="cuda")
    with torch.no_grad():
        eager = batch_odeint(lambda t, x: net(x), x0, t, "rk4", graph="off", save=save)
        field = lambda t, x: net(x)  # noqa: E731
        graphed = batch_odeint(field, x0, t, "rk4", graph="on", save=save)
        again = batch_odeint(field, 2 * x0, t, "rk4", graph="on", save=save)  # replay of the cached graph
        again_eager = batch_odeint(field, 2 * x0, t, "rk4", graph="off", save=save)
    torch.testing.assert_close(graphed.x, eager.x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(again.x, again_eager.x, rtol=1e-6, atol=1e-6)
    if save == "times":
        torch.testing.assert_close(graphed.xs, eager.xs, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graph_auto_falls_back_when_capture_fails() -> None:
    def syncing_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -x * float(x.abs().max())  # host sync: not capturable

    x0 = torch.ones(8, 2, device="cuda")
    with torch.no_grad():
        sol = batch_odeint(syncing_field, x0, torch.linspace(0, 1, 5, device="cuda"), "euler", graph="auto")
    assert bool(torch.isfinite(sol.x).all())


def test_graph_cache_reuses_bounds_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache logic of the CUDA-graph path, with capture stubbed out (runs without a GPU)."""
    from gentool.core.solvers import cache, cuda_graph
    from gentool.core.solvers.fixed import tableau_plan
    from gentool.core.solvers.tableau import FIXED_TABLEAUS

    captured: list[tuple] = []

    def fake_capture(f: object, x0: torch.Tensor, plan: object, noise: object, save_all: bool,
                     program: object) -> tuple:
        if x0.shape[0] == 3:
            raise RuntimeError("operation not permitted when stream is capturing")
        captured.append((x0.shape, save_all))
        return ("graph", len(captured))

    monkeypatch.setattr(cuda_graph, "capture", fake_capture)

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -x

    def solver(x0: torch.Tensor, grid: tuple[float, ...], strict: bool = False) -> object:
        plan = tableau_plan(FIXED_TABLEAUS["rk4"], grid, x0.shape[0], x0.dtype, x0.device)
        return cuda_graph.graphed_solver(field, x0, plan, None, False, cache.CacheScope(field), None, strict)

    x0 = torch.ones(2, 1)
    first, again = solver(x0, (0.0, 1.0)), solver(x0, (0.0, 1.0))
    assert first is again and len(captured) == 1
    assert solver(torch.ones(3, 1), (0.0, 1.0)) is None
    with pytest.raises(RuntimeError, match="capturing"):
        solver(torch.ones(3, 1), (0.0, 2.0), strict=True)
    for n in range(2 * cuda_graph.MAX_GRAPHS_PER_FIELD):
        solver(x0, (0.0, float(n + 1)))
    assert len(cache.entries(field, "graphs")) == cuda_graph.MAX_GRAPHS_PER_FIELD
