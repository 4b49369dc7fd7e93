"""GPU fast path: a whole plan solve captured in one CUDA graph and replayed.

`runner.run_steps` has no host synchronisation and reads only tensors made before the loop (the plan's
stage times, the noise buffer), so it can be recorded once into a `torch.cuda.CUDAGraph` with static
input buffers: a later call with the same owner, plan, shape, dtype and device copies `x0` (and the
pre-drawn noise, or the inputs the graph draws its noise from: `NoiseRows`) into the buffers and replays
the graph (one launch for the draws and all N*s field calls). Graphs are
cached per owner (`cache.py`, weakly, so they die with the field or denoiser). Assumes the field is a pure
function of `(t, x)` and of tensors whose storage does not move (parameters updated in place are fine);
use `graph="off"` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from gentool.core.solvers import cache
from gentool.core.solvers.compile import CompiledPlan
from gentool.core.solvers.plan import Plan
from gentool.core.solvers.runner import NoiseRows, advance, run_steps
from gentool.core.solvers.term import Field

WARMUP_STEPS = 3
MAX_GRAPHS_PER_FIELD = 8  # oldest captured graph is dropped beyond this (bounds graph-pool memory)


@dataclass
class GraphedSolve:
    """A captured solve: replay after writing into the static buffers; results appear in `out` (and `xs`)."""

    graph: torch.cuda.CUDAGraph
    static_x: torch.Tensor
    static_noise: torch.Tensor | None  # the pre-drawn noise, or the inputs of `NoiseRows`
    out: torch.Tensor
    xs: torch.Tensor | None
    plan: Plan  # keeps the stage-time tensors the graph reads alive
    rows: NoiseRows | None  # keeps the tensors its `make` reads (salts, coefficients) alive

    def __call__(self, x0: torch.Tensor, noise: torch.Tensor | NoiseRows | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.static_x.copy_(x0)
        if self.static_noise is not None:
            self.static_noise.copy_(noise.inputs if isinstance(noise, NoiseRows) else noise)
        self.graph.replay()
        return self.out.clone(), None if self.xs is None else self.xs.clone()


def warm_up(f: Field, x: torch.Tensor, plan: Plan, noise: Callable[[], torch.Tensor | None],
            program: CompiledPlan | None) -> None:
    """Run on a side stream before capture: lazy library init (cuBLAS handles, ...); with a compiled plan,
    one full solve, so every segment is compiled (and autotuned) before capture starts. `noise()`: the draws."""
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        rows = noise()
        if program is None:
            for _ in range(WARMUP_STEPS):
                advance(f, x, (), plan.steps[0], rows)
        else:
            program.run(f, x, rows, None)
    torch.cuda.current_stream(x.device).wait_stream(side)


def _run(f: Field, x: torch.Tensor, plan: Plan, noise: torch.Tensor | None, xs: torch.Tensor | None,
         program: CompiledPlan | None) -> torch.Tensor:
    return run_steps(f, x, plan, noise, xs)[0] if program is None else program.run(f, x, noise, xs)


def capture(f: Field, x0: torch.Tensor, plan: Plan, noise: torch.Tensor | NoiseRows | None, save_all: bool,
            program: CompiledPlan | None) -> GraphedSolve:
    """Warm up, then record the full solve into one graph (with `NoiseRows`, their drawing first)."""
    static_x = x0.clone()
    made = isinstance(noise, NoiseRows)
    static_in = None if noise is None else (noise.inputs if made else noise).clone()

    def draws() -> torch.Tensor | None:
        return noise.make(static_in) if made else static_in

    xs = x0.new_empty((len(plan.steps) + 1, *x0.shape)) if save_all else None
    warm_up(f, static_x, plan, draws, program)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        if xs is not None:
            xs[0].copy_(static_x)
        out = _run(f, static_x, plan, draws(), xs, program)
    return GraphedSolve(graph, static_x, static_in, out, xs, plan, noise if made else None)


def graphed_solver(f: Field, x0: torch.Tensor, plan: Plan, noise: torch.Tensor | NoiseRows | None, save_all: bool,
                   scope: cache.CacheScope, program: CompiledPlan | None, strict: bool) -> GraphedSolve | None:
    """The cached graph for (scope, plan, ...), captured on first use.

    None when capture fails (the field syncs with the host, allocates on the CPU, ...), unless `strict`
    (then the capture error propagates). A failed key is remembered and not retried.
    """
    graphs = cache.entries(scope.owner, "graphs")
    key = (scope.tag, plan.key, tuple(x0.shape), x0.dtype, x0.device, save_all, program is not None,
           torch.is_inference_mode_enabled(), noise.key if isinstance(noise, NoiseRows) else None)
    return cache.captured(graphs, key, lambda: capture(f, x0, plan, noise, save_all, program), MAX_GRAPHS_PER_FIELD,
                          strict)
