"""`odeint`: one entry point over the fixed-step, adaptive and torchdiffeq integrators."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from gentool.core.errors import choose, require
from gentool.core.solvers import adaptive, fixed
from gentool.core.solvers.controllers import CONTROLLERS, ERR_FLOOR, StepController
from gentool.core.solvers.cuda_graph import graphed_solver
from gentool.core.solvers.errors import NonFiniteState
from gentool.core.solvers.saving import SAVE_MODES, Solution, assemble_trajectory
from gentool.core.solvers.tableau import ADAPTIVE_TABLEAUS, FIXED_TABLEAUS, ButcherTableau
from gentool.core.solvers.term import Field

FIXED_METHODS: tuple[str, ...] = tuple(FIXED_TABLEAUS)
ADAPTIVE_METHODS: tuple[str, ...] = tuple(ADAPTIVE_TABLEAUS)
BACKENDS = ("gentool", "torchdiffeq")
GRAPH_MODES = ("auto", "on", "off")
ON_MAX_STEPS = ("raise", "return")
PROGRESS_UPDATES = 50


def _check_grid(t: torch.Tensor | Sequence[float]) -> tuple[torch.Tensor, list[float]]:
    """A finite, strictly monotone 1-D grid with at least two points (at least one step), and its floats."""
    t = torch.as_tensor(t)
    require(t.dim() == 1, f"time grid must be 1-D, got shape {tuple(t.shape)}")
    require(t.is_floating_point(), f"time grid must be floating point, got {t.dtype}")
    grid = t.tolist()
    require(len(grid) >= 2, f"steps must be >= 1 (time grid needs >= 2 points), got {len(grid)} point(s)")
    require(all(math.isfinite(v) for v in grid), "time grid contains non-finite values")
    up = all(b > a for a, b in zip(grid[:-1], grid[1:], strict=True))
    require(up or all(b < a for a, b in zip(grid[:-1], grid[1:], strict=True)),
            "time grid must be strictly increasing or strictly decreasing")
    return t, grid


def all_finite(x: torch.Tensor) -> bool:
    """True iff every entry of x is finite: one reduction to a scalar, the elementwise test only when
    the sum is not finite (a NaN/inf entry, or an overflowing sum of finite ones)."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _check_state(x0: torch.Tensor, t0: float, check_finite: bool) -> None:
    require(isinstance(x0, torch.Tensor) and x0.dim() >= 1 and x0.shape[0] >= 1,
            "x0 must be a tensor of shape (B, ...) with B >= 1")
    require(x0.is_floating_point(), f"x0 must be floating point, got {x0.dtype}")
    if check_finite and not all_finite(x0):
        raise NonFiniteState(f"non-finite initial state at step 0, t={t0:.6g}")


def _raise_non_finite(f: Field, x0: torch.Tensor, plan: fixed.FixedPlan, grid: list[float]) -> None:
    """A fixed-step solve ended non-finite: name the initial state, or re-run to find the first bad step."""
    _check_state(x0, grid[0], check_finite=True)
    i = fixed.first_non_finite_step(f, x0, plan)
    i = len(grid) - 2 if i is None else i
    raise NonFiniteState(f"non-finite state at step {i} (t={grid[i]:.6g} -> {grid[i + 1]:.6g})")


def _use_graph(graph: str, x0: torch.Tensor) -> bool:
    if graph == "on":
        require(x0.is_cuda, "graph='on' needs a CUDA state; allowed on CPU: auto, off")
        require(not torch.is_grad_enabled(), "graph='on' needs gradients disabled (torch.no_grad())")
        return True
    return graph == "auto" and x0.is_cuda and not torch.is_grad_enabled()


def _counts(batch: int, device: torch.device, nfe: int, accepted: int, rejected: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    full = lambda v: torch.full((batch,), v, dtype=torch.long, device=device)  # noqa: E731
    return full(nfe), full(accepted), full(rejected)


def _solve_fixed(f: Field, x0: torch.Tensor, t: torch.Tensor, grid: list[float], tableau: ButcherTableau,
                 save: str, graph: str, progress: Callable[..., None] | None) -> Solution:
    batch, n = x0.shape[0], len(grid) - 1
    save_all = save != "final"
    plan = fixed.make_plan(tableau, tuple(grid), batch, x0.dtype, x0.device)  # memoised
    solver = None
    if _use_graph(graph, x0):
        solver = graphed_solver(f, x0, plan, (tableau.name, tuple(grid)), save_all, strict=graph == "on")
    if solver is not None:
        x, xs = solver(x0)
    else:
        xs = x0.new_empty((n + 1, *x0.shape)) if save_all else None
        if xs is not None:
            xs[0].copy_(x0)
        x = _run_eager(f, x0, plan, xs, progress)
    if not all_finite(x) or (xs is not None and not all_finite(xs)):
        _raise_non_finite(f, x0, plan, grid)
    if progress is not None:
        progress(n, n)
    nfe, acc, rej = _counts(batch, x0.device, tableau.stages * n, n)
    ts = t.to(x0.device) if save_all else t[-1].to(x0.device).expand(batch)
    return Solution(x=x, xs=xs, ts=ts, nfe=nfe, accepted=acc, rejected=rej,
                    reached=torch.ones(batch, dtype=torch.bool, device=x0.device))


def _run_eager(f: Field, x: torch.Tensor, plan: fixed.FixedPlan, xs: torch.Tensor | None,
               progress: Callable[..., None] | None) -> torch.Tensor:
    n = len(plan.steps)
    if progress is None:
        return fixed.run_steps(f, x, plan, xs)
    chunk = max(1, n // PROGRESS_UPDATES)
    for start in range(0, n, chunk):
        x = fixed.run_steps(f, x, plan, xs, start, min(n, start + chunk))
        progress(min(n, start + chunk), n)
    return x


def _solve_adaptive(f: Field, x0: torch.Tensor, t: torch.Tensor, tableau: ButcherTableau, save: str,
                    rtol: float, atol: float, controller: str, max_steps: int, on_max_steps: str,
                    h0: float | None, progress: Callable[..., None] | None) -> Solution:
    batch, dev = x0.shape[0], x0.device
    tt = t.to(device=dev, dtype=x0.dtype)
    direction = 1.0 if float(t[-1]) > float(t[0]) else -1.0
    targets = tt if save == "times" else tt[[0, -1]]
    t0 = tt[0].expand(batch).clone()
    k1 = f(t0, x0)
    if not bool(torch.isfinite(k1).all()):
        raise NonFiniteState(f"non-finite field value at step 0, t={float(t[0]):.6g}")
    span = abs(float(t[-1]) - float(t[0]))
    if h0 is None:
        h = adaptive.initial_step(f, x0, k1, t0, direction, span, tableau, rtol, atol)
        nfe0 = 2
    else:
        require(h0 != 0 and abs(h0) < float("inf"), f"h0 must be finite and nonzero, got {h0}")
        h, nfe0 = torch.full((batch,), min(abs(h0), span), dtype=x0.dtype, device=dev), 1
    xs = None
    if save == "times":
        xs = x0.unsqueeze(0).repeat(len(targets), *([1] * x0.dim()))
    zeros = torch.zeros(batch, dtype=torch.long, device=dev)
    state = adaptive.AdaptiveState(
        x=x0, k1=k1, t=t0, h=h, err_prev=torch.full_like(h, ERR_FLOOR),
        idx=torch.ones_like(zeros), active=torch.ones(batch, dtype=torch.bool, device=dev),
        nfe=zeros + nfe0, accepted=zeros.clone(), rejected=zeros.clone())
    problem = adaptive.AdaptiveProblem(
        f=f, tableau=tableau, targets=targets, direction=direction, rtol=rtol, atol=atol,
        controller=StepController(controller), max_steps=max_steps, xs=xs, keep_history=save == "trajectory")
    state = adaptive.integrate(problem, state, on_max_steps, progress)
    ts: torch.Tensor = targets if save == "times" else state.t
    if save == "trajectory":
        xs, ts = assemble_trajectory(x0, t0, state.history)
    return Solution(x=state.x, xs=xs, ts=ts, nfe=state.nfe, accepted=state.accepted,
                    rejected=state.rejected, reached=state.idx >= len(targets))


def odeint(f: Field, x0: torch.Tensor, t: torch.Tensor | Sequence[float], method: str = "rk4", *,
           rtol: float = 1e-6, atol: float = 1e-8, controller: str = "pi", max_steps: int = 100_000,
           on_max_steps: str = "raise", save: str = "final", backend: str = "gentool", graph: str = "auto",
           progress: Callable[..., None] | None = None, h0: float | None = None) -> Solution:
    """Integrate dx/dt = f(t, x) for a batch x0 (B, ...), where f receives per-sample times t (B,).

    Fixed methods (euler, midpoint, heun, rk4) take one step per interval of the grid `t`; adaptive
    methods (bosh3, dopri5) integrate from t[0] to t[-1] with per-sample step sizes controlled by
    `rtol`/`atol` and `controller` (first step `h0`, or Hairer's estimate). `save`: "final", "times"
    (states at every entry of `t`) or "trajectory" (every accepted step). `graph` ("auto", "on", "off")
    selects the CUDA-graph fast path of fixed-step solves. `backend="torchdiffeq"` routes the call
    through `torchdiffeq.odeint`. See `Solution` for what is returned.
    """
    method = choose("method", method, FIXED_METHODS + ADAPTIVE_METHODS)
    choose("backend", backend, BACKENDS)
    choose("save", save, SAVE_MODES)
    choose("controller", controller, CONTROLLERS)
    choose("graph", graph, GRAPH_MODES)
    choose("on_max_steps", on_max_steps, ON_MAX_STEPS)
    require(rtol > 0, f"rtol must be > 0, got {rtol}")
    require(atol >= 0, f"atol must be >= 0, got {atol}")
    require(int(max_steps) >= 1, f"max_steps must be >= 1, got {max_steps}")
    t, grid = _check_grid(t)
    # a fixed-step solve checks its result instead (a non-finite x0 gives a non-finite result)
    _check_state(x0, grid[0], check_finite=method not in FIXED_TABLEAUS or backend != "gentool")
    if backend == "torchdiffeq":
        from gentool.core.solvers.torchdiffeq_backend import solve_torchdiffeq

        return solve_torchdiffeq(f, x0, t, method, save=save, rtol=rtol, atol=atol, max_steps=int(max_steps),
                                 on_max_steps=on_max_steps, h0=h0)
    if method in FIXED_TABLEAUS:
        return _solve_fixed(f, x0, t, grid, FIXED_TABLEAUS[method], save, graph, progress)
    return _solve_adaptive(f, x0, t, ADAPTIVE_TABLEAUS[method], save, rtol, atol, controller, int(max_steps),
                           on_max_steps, h0, progress)



