"""GPU fast path: a whole fixed-step solve captured in one CUDA graph and replayed.

The loop of `fixed.run_steps` has no host synchronisation and reads only tensors made before the loop
(the plan's stage times), so it can be recorded once into a `torch.cuda.CUDAGraph` with a static input
buffer: a later call with the same field, grid, shape, dtype and device copies `x0` into the buffer and
replays the graph (one launch for all N*s field calls). Graphs are cached per field object (weakly, so
they die with the field). Assumes `f` is a pure function of `(t, x)` and of tensors whose storage does
not move (parameters updated in place are fine); use `graph="off"` otherwise.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.solvers.fixed import FixedPlan, rk_step, run_steps
from gentool.core.solvers.term import Field

WARMUP_STEPS = 3
MAX_GRAPHS_PER_FIELD = 8  # oldest captured graph is dropped beyond this (bounds graph-pool memory)


@dataclass
class GraphedSolve:
    """A captured solve: replay after writing into `static_x`; results appear in `out` (and `xs`)."""

    graph: torch.cuda.CUDAGraph
    static_x: torch.Tensor
    out: torch.Tensor
    xs: torch.Tensor | None
    plan: FixedPlan  # keeps the stage-time tensors the graph reads alive

    def __call__(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.static_x.copy_(x0)
        self.graph.replay()
        return self.out.clone(), None if self.xs is None else self.xs.clone()


_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple, GraphedSolve | None]] = weakref.WeakKeyDictionary()


def capture(f: Field, x0: torch.Tensor, plan: FixedPlan, save_all: bool) -> GraphedSolve:
    """Warm up on a side stream (lazy library init), then record the full loop over steps."""
    static_x = x0.clone()
    xs = x0.new_empty((len(plan.steps) + 1, *x0.shape)) if save_all else None
    side = torch.cuda.Stream(device=x0.device)
    side.wait_stream(torch.cuda.current_stream(x0.device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            rk_step(f, static_x, plan.steps[0])
    torch.cuda.current_stream(x0.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        if xs is not None:
            xs[0].copy_(static_x)
        out = run_steps(f, static_x, plan, xs)
    return GraphedSolve(graph, static_x, out, xs, plan)


def graphed_solver(f: Field, x0: torch.Tensor, plan: FixedPlan, key: tuple,
                   save_all: bool, strict: bool) -> GraphedSolve | None:
    """The cached graph for `(f, key)`, captured from `plan` on first use.

    None when capture fails, unless `strict` (then the capture error propagates).
    """
    try:
        per_field = _CACHE.setdefault(f, {})
    except TypeError:  # field cannot be weakly referenced: capture without caching
        per_field = {}
    full_key = (*key, tuple(x0.shape), x0.dtype, x0.device, save_all, torch.is_inference_mode_enabled())
    if full_key not in per_field:
        while len(per_field) >= MAX_GRAPHS_PER_FIELD:
            per_field.pop(next(iter(per_field)))
        try:
            per_field[full_key] = capture(f, x0, plan, save_all)
        except Exception:
            if strict:
                raise
            per_field[full_key] = None
    return per_field[full_key]
