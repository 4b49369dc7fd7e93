"""The one loop that runs a plan: eager, compiled, or captured in a CUDA graph; checks, saving, progress.

`advance` takes one step of a `Plan` (see `plan.py`): it evaluates the stages on linear combinations of
the registers and forms the new state and the kept history. `run_steps` chains steps with no host
synchronisation (so it can be captured); `solve_plan` wraps it with everything a solve needs:

* the CUDA-graph path (`cuda_graph.py`): whole solve captured once per (owner, plan, shape, dtype,
  device), replayed;
* `compile=True` (`compile.py`): the plan runs as compiled segments of same-shape steps (field and
  combinations fused by inductor);
* the finiteness check: one reduction at the end; on failure an eager re-run names the first bad step,
  its times and the knob to turn;
* saving (`final`, or the state after every step), progress callbacks, per-sample NFE.

Stochastic plans read pre-drawn noise (`draw_noise`): the same generator and seed give the same numbers
eagerly, compiled and replayed; or noise made on the device by a pure function of per-solve inputs
(`NoiseRows`), which a CUDA graph runs inside its replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from gentool.core.errors import require
from gentool.core.solvers.cache import CacheScope
from gentool.core.solvers.errors import NonFiniteState
from gentool.core.solvers.plan import Plan, Step
from gentool.core.solvers.saving import Solution
from gentool.core.solvers.term import Field

History = tuple[torch.Tensor, ...]
Noise = torch.Tensor | Sequence[torch.Tensor]  # the plan's draws (draws, B, ...), or its rows
PROGRESS_UPDATES = 50


@dataclass(frozen=True)
class NoiseRows:
    """A plan's noise draws (draws, B, ...) as `make(inputs)`: a pure tensor function of the per-solve `inputs`
    (no host synchronisation, no generator state; e.g. a counter-based hash of per-sample keys), so a CUDA
    graph draws them itself, inside its replay, from its copy of `inputs`. `key` names `make` for the graph
    cache: two NoiseRows with one key make the same rows from the same inputs."""

    inputs: torch.Tensor
    make: Callable[[torch.Tensor], torch.Tensor]
    key: Hashable

    def rows(self) -> torch.Tensor:
        return self.make(self.inputs)


def noise_tensor(noise: torch.Tensor | NoiseRows | None) -> torch.Tensor | None:
    """The draws themselves (`NoiseRows` made now)."""
    return noise.rows() if isinstance(noise, NoiseRows) else noise


def advance(f: Field, x: torch.Tensor, hist: History, step: Step, noise: Noise | None
            ) -> tuple[torch.Tensor, History]:
    """One step: I(s) = sum a_sr r, K(s) = f(t_s, I(s)) for each stage, x' = sum b_r r, history' = the kept
    registers."""
    regs = [x, *hist]
    if step.noise:
        regs += [noise[k] for k in step.noise]
    for st in step.stages:
        inputs = st.inputs(regs)
        regs += [inputs, f(st.time, inputs)]
    return step.update(regs), tuple([keep(regs) for keep in step.keep])


def run_steps(f: Field, x: torch.Tensor, plan: Plan, noise: torch.Tensor | None, xs: torch.Tensor | None,
              hist: History = (), start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, History]:
    """Steps `start..stop-1` from (x, hist); the state after step i goes to `xs[i + 1]` if given.

    No host synchronisation happens here, so this loop can be captured in a CUDA graph.
    """
    rows = noise.unbind(0) if noise is not None else None  # one view per draw, made once
    steps = plan.steps[start:stop]
    if xs is None:
        for st in steps:
            x, hist = advance(f, x, hist, st, rows)
        return x, hist
    for i, st in enumerate(steps, start=start):
        x, hist = advance(f, x, hist, st, rows)
        xs[i + 1].copy_(x)
    return x, hist


def draw_noise(plan: Plan, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """The plan's standard normal draws (draws, B, ...), one `randn(x0.shape)` per draw in step order on
    the generator's device (the CPU global generator when None), then moved to x0's device."""
    if plan.noise_draws == 0:
        return None
    device = generator.device if generator is not None else torch.device("cpu")
    draws = [torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=device)
             for _ in range(plan.noise_draws)]
    return torch.stack(draws).to(x0.device)


def all_finite(x: torch.Tensor) -> bool:
    """True iff every entry of x is finite: one reduction to a scalar, the elementwise test only when
    the sum is not finite (a NaN/inf entry, or an overflowing sum of finite ones)."""
    return math.isfinite(float(x.sum())) or bool(torch.isfinite(x).all())


def first_non_finite_step(f: Field, x0: torch.Tensor, plan: Plan, noise: torch.Tensor | None) -> int | None:
    """Re-run eagerly, checking after every step; the index of the first step giving NaN/inf."""
    x, hist = x0, ()
    for i, st in enumerate(plan.steps):
        x, hist = advance(f, x, hist, st, noise)
        if not bool(torch.isfinite(x).all()):
            return i
    return None


def raise_non_finite(f: Field, x0: torch.Tensor, plan: Plan, noise: torch.Tensor | None, label: str,
                     hint: str) -> None:
    """A solve ended non-finite: name the initial state, or the first bad step and its times."""
    g = plan.grid
    if not all_finite(x0):
        raise NonFiniteState(f"non-finite initial state at step 0, {label}={g[0]:.6g}", step=0, time=g[0])
    i = first_non_finite_step(f, x0, plan, noise)
    i = len(plan.steps) - 1 if i is None else i
    raise NonFiniteState(f"non-finite state at step {i} ({label}={g[i]:.6g} -> {g[i + 1]:.6g}); {hint}",
                         step=i, time=g[i])


def use_graph(graph: str, x0: torch.Tensor) -> bool:
    """Whether to take the CUDA-graph path (`graph` is "auto", "on" or "off")."""
    if graph == "on":
        require(x0.is_cuda, "graph='on' needs a CUDA state; allowed on CPU: auto, off")
        require(not torch.is_grad_enabled(), "graph='on' needs gradients disabled (torch.no_grad())")
        return True
    return graph == "auto" and x0.is_cuda and not torch.is_grad_enabled()


def _run_eager(f: Field, x: torch.Tensor, plan: Plan, noise: torch.Tensor | None, xs: torch.Tensor | None,
               progress: Callable[..., None] | None) -> torch.Tensor:
    n = len(plan.steps)
    if progress is None and xs is None:
        return plan.program(f, x, noise.unbind(0) if noise is not None else None)
    if progress is None:
        return run_steps(f, x, plan, noise, xs)[0]
    chunk, hist = max(1, n // PROGRESS_UPDATES), ()
    for start in range(0, n, chunk):
        x, hist = run_steps(f, x, plan, noise, xs, hist, start, min(n, start + chunk))
        progress(min(n, start + chunk), n)
    return x


def solve_plan(f: Field, x0: torch.Tensor, plan: Plan, *, noise: torch.Tensor | NoiseRows | None = None,
               save: str = "final", graph: str = "auto", compile: bool = False,
               progress: Callable[..., None] | None = None, scope: CacheScope | None = None,
               label: str = "t", hint: str = "take more (smaller) steps") -> Solution:
    """Run `plan` from x0 (B, ...) with term `f(t (B,), x)`; `noise` (plan.noise_draws, B, ...) if stochastic
    (`NoiseRows`: made inside the CUDA graph on that path, else first).

    `save`: "final", or "times"/"trajectory" (the state after every step, xs of shape (N+1, B, ...)).
    `graph` ("auto", "on", "off"): the CUDA-graph path (needs CUDA and no autograd). `compile`: the plan
    runs as compiled segments (`compile.py`; progress is then reported at the end). `scope` owns cached
    graphs and compiled code (default: the field itself). A non-finite result raises `NonFiniteState`
    naming the step and its `label` times, with `hint` as the remedy.
    """
    scope = scope or CacheScope(f)
    n, save_all = len(plan.steps), save != "final"
    program, solver = None, None
    if compile:
        from gentool.core.solvers.compile import compiled_plan

        program = compiled_plan(plan, scope)
    if use_graph(graph, x0):
        from gentool.core.solvers.cuda_graph import graphed_solver

        solver = graphed_solver(f, x0, plan, noise, save_all, scope, program, strict=graph == "on")
    if solver is not None:
        x, xs = solver(x0, noise)
    else:
        noise = noise_tensor(noise)
        xs = x0.new_empty((n + 1, *x0.shape)) if save_all else None
        if xs is not None:
            xs[0].copy_(x0)
        x = program.run(f, x0, noise, xs) if program is not None else _run_eager(f, x0, plan, noise, xs, progress)
    if not all_finite(x) or (xs is not None and not all_finite(xs)):
        raise_non_finite(f, x0, plan, noise_tensor(noise), label, hint)
    if progress is not None:
        progress(n, n)
    return plan_solution(x, xs, x0, plan)


def plan_solution(x: torch.Tensor, xs: torch.Tensor | None, x0: torch.Tensor, plan: Plan) -> Solution:
    """The `Solution` of a plan solve: every sample took the plan's steps and NFE (`Plan.final`: no kernel)."""
    nfe, accepted, rejected, last, reached = plan.final if x0.shape[0] > 1 else (t.clone() for t in plan.final)
    ts = plan.grid_tensor.clone() if xs is not None else last
    return Solution(x=x, xs=xs, ts=ts, nfe=nfe, accepted=accepted, rejected=rejected, reached=reached)
