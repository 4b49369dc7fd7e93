"""`batch_odeint` and `sdeint`: the batched entry points over the fixed-step, adaptive, stochastic and
torchdiffeq integrators."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from gentool.core.errors import choose, require
from gentool.core.solvers import adaptive, fixed
from gentool.core.solvers.adaptive_graph import StaticChunks, graphed_chunks
from gentool.core.solvers.cache import CacheScope
from gentool.core.solvers.compile import compiled_field
from gentool.core.solvers.controllers import CONTROLLERS, StepController
from gentool.core.solvers.errors import NonFiniteState
from gentool.core.solvers.runner import all_finite, draw_noise, solve_plan, use_graph
from gentool.core.solvers.saving import SAVE_MODES, Solution, assemble_trajectory
from gentool.core.solvers.tableau import ADAPTIVE_TABLEAUS, FIXED_TABLEAUS, ButcherTableau
from gentool.core.solvers.term import Field

FIXED_METHODS: tuple[str, ...] = tuple(FIXED_TABLEAUS)
ADAPTIVE_METHODS: tuple[str, ...] = tuple(ADAPTIVE_TABLEAUS)
BACKENDS = ("gentool", "torchdiffeq")
GRAPH_MODES = ("auto", "on", "off")
ON_MAX_STEPS = ("raise", "return")


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


def _check_state(x0: torch.Tensor, t0: float, check_finite: bool) -> None:
    require(isinstance(x0, torch.Tensor) and x0.dim() >= 1 and x0.shape[0] >= 1,
            "x0 must be a tensor of shape (B, ...) with B >= 1")
    require(x0.is_floating_point(), f"x0 must be floating point, got {x0.dtype}")
    if check_finite and not all_finite(x0):
        raise NonFiniteState(f"non-finite initial state at step 0, t={t0:.6g}", step=0, time=t0)


def _solve_fixed(f: Field, x0: torch.Tensor, t: torch.Tensor, grid: list[float], tableau: ButcherTableau,
                 save: str, graph: str, compile: bool, progress: Callable[..., None] | None,
                 scope: CacheScope) -> Solution:
    plan = fixed.tableau_plan(tableau, tuple(grid), x0.shape[0], x0.dtype, x0.device)  # memoised
    sol = solve_plan(f, x0, plan, save=save, graph=graph, compile=compile, progress=progress, scope=scope)
    sol.ts = t.to(x0.device) if save != "final" else t[-1].to(x0.device).expand(x0.shape[0])
    return sol


def _adaptive_chunks(p: adaptive.AdaptiveProblem, x0: torch.Tensor, save: str, graph: str,
                     scope: CacheScope, key: tuple) -> StaticChunks | None:
    """The captured chunks of the CUDA-graph path, or None for the eager path."""
    if graph == "on":
        require(save != "trajectory", "graph='on' is not available with save='trajectory' for adaptive methods; "
                                      "allowed: final, times")
    if save == "trajectory" or not use_graph(graph, x0):
        return None
    return graphed_chunks(p, x0, scope, key, strict=graph == "on")


def _solve_adaptive(f: Field, x0: torch.Tensor, t: torch.Tensor, grid: list[float], tableau: ButcherTableau,
                    save: str, rtol: float, atol: float, controller: str, max_steps: int, on_max_steps: str,
                    h0: float | None, graph: str, compile: bool, progress: Callable[..., None] | None,
                    scope: CacheScope) -> Solution:
    if h0 is not None:
        require(h0 != 0 and abs(h0) < float("inf"), f"h0 must be finite and nonzero, got {h0}")
    tt = t.to(device=x0.device, dtype=x0.dtype)
    targets = tt if save == "times" else tt[[0, -1]]
    p = adaptive.AdaptiveProblem(
        f=compiled_field(f) if compile else f, tableau=tableau, targets=targets,
        direction=1.0 if grid[-1] > grid[0] else -1.0, rtol=rtol, atol=atol,
        controller=StepController(controller), max_steps=max_steps,
        xs=x0.new_empty((len(targets), *x0.shape)) if save == "times" else None,
        keep_history=save == "trajectory", span=abs(grid[-1] - grid[0]), h0=h0)
    key = (tableau.name, tuple(grid) if save == "times" else (grid[0], grid[-1]), rtol, atol, controller,
           max_steps, save, h0, compile, tuple(x0.shape), x0.dtype, x0.device)
    chunks = _adaptive_chunks(p, x0, save, graph, scope, key)
    if chunks is None:
        s = adaptive.initial_state(p, x0)
        chunks, start = adaptive.EagerChunks(p, s), adaptive.start_status(s, p)
    else:
        p, s, start = chunks.p, chunks.s, chunks.start(x0)
    finite, predicted = start.tolist()
    if not finite:
        raise NonFiniteState(f"non-finite field value at step 0, t={grid[0]:.6g}", step=0, time=grid[0])
    s = adaptive.integrate(p, s, chunks, adaptive.chunk_length(predicted), on_max_steps, progress)
    if save == "trajectory":
        xs, ts = assemble_trajectory(x0, targets[0].expand(x0.shape[0]), s.history)
    else:
        xs, ts = (None if p.xs is None else p.xs.clone()), (targets if save == "times" else s.t.clone())
    return Solution(x=s.x.clone(), xs=xs, ts=ts, nfe=s.nfe.clone(), accepted=s.accepted.clone(),
                    rejected=s.rejected.clone(), reached=s.idx >= len(targets))


def batch_odeint(f: Field, x0: torch.Tensor, t: torch.Tensor | Sequence[float], method: str = "rk4", *,
           rtol: float = 1e-6, atol: float = 1e-8, controller: str = "pi", max_steps: int = 100_000,
           on_max_steps: str = "raise", save: str = "final", backend: str = "gentool", graph: str = "auto",
           progress: Callable[..., None] | None = None, h0: float | None = None, compile: bool = False,
           cache_scope: CacheScope | None = None) -> Solution:
    """Integrate dx/dt = f(t, x) for a batch x0 (B, ...), where f receives per-sample times t (B,), and
    return a `Solution` (per-sample final state, saved states, counters). For torchdiffeq's convention
    (scalar t, states at `t` returned as one tensor, dopri5 by default) use `gentool.core.solvers.odeint`.

    Fixed methods (euler, midpoint, heun, rk4) take one step per interval of the grid `t`; adaptive
    methods (bosh3, dopri5) integrate from t[0] to t[-1] with per-sample step sizes controlled by
    `rtol`/`atol` and `controller` (first step `h0`, or Hairer's estimate). `save`: "final", "times"
    (states at every entry of `t`) or "trajectory" (every accepted step). `graph` ("auto", "on", "off")
    selects the CUDA-graph fast path: the whole fixed-step solve, or the chunks of an adaptive solve,
    captured and replayed (CUDA, no autograd; not for adaptive save="trajectory"). `compile=True`
    compiles the steps (fixed) or the field (adaptive) with torch.compile, falling back to eager with a
    `CompileFallbackWarning`. `cache_scope` owns cached graphs and compiled steps (default: `f`).
    `backend="torchdiffeq"` routes the call through `torchdiffeq.odeint`. See `Solution` for what is
    returned.
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
    scope = cache_scope or CacheScope(f)
    if method in FIXED_TABLEAUS:
        return _solve_fixed(f, x0, t, grid, FIXED_TABLEAUS[method], save, graph, compile, progress, scope)
    return _solve_adaptive(f, x0, t, grid, ADAPTIVE_TABLEAUS[method], save, rtol, atol, controller,
                           int(max_steps), on_max_steps, h0, graph, compile, progress, scope)


def sdeint(f: Field, x0: torch.Tensor, t: torch.Tensor | Sequence[float], diffusion: float, *,
           generator: torch.Generator | None = None, save: str = "final", graph: str = "auto",
           compile: bool = False, progress: Callable[..., None] | None = None,
           cache_scope: CacheScope | None = None) -> Solution:
    """Euler–Maruyama for dx = f(t, x) dt + g dW with constant g = `diffusion`, on the grid `t`:

        x_{i+1} = x_i + h_i f(t_i, x_i) + g sqrt(|h_i|) z_i,    z_i ~ N(0, I) from `generator`

    (one `randn(x0.shape)` per step, drawn up front on the generator's device, so eager, compiled and
    CUDA-graph runs see the same numbers). Other arguments as in `batch_odeint`.
    """
    choose("save", save, SAVE_MODES)
    choose("graph", graph, GRAPH_MODES)
    require(diffusion >= 0 and math.isfinite(diffusion), f"diffusion must be finite and >= 0, got {diffusion}")
    t, grid = _check_grid(t)
    _check_state(x0, grid[0], check_finite=False)
    plan = fixed.euler_maruyama_plan(tuple(grid), float(diffusion), x0.shape[0], x0.dtype, x0.device)
    return solve_plan(f, x0, plan, noise=draw_noise(plan, x0, generator), save=save, graph=graph,
                      compile=compile, progress=progress, scope=cache_scope or CacheScope(f))



