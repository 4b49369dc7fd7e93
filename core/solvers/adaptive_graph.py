"""GPU fast path for adaptive solves: chunks of masked iterations captured as CUDA graphs and replayed.

A chunk of n iterations of `attempt_step` has no host synchronisation, so it can be recorded into a CUDA
graph that reads and writes a *static* `AdaptiveState` (buffers allocated once). Graphs for n = 8, 4, 2, 1
are captured once per (owner, problem, shape, dtype, device), sharing one memory pool; a chunk of n
iterations replays the graphs of n's binary digits back to back, and the status vector (computed inside
the last graph) is read with the one host synchronisation per chunk. The replayed path therefore runs
exactly the iterations of the eager path with the same kernels: same values, same per-sample NFE. The
start of a solve (first field call, initial step size, start status) is one more graph.

`StaticChunks(capture=False)` runs the same bodies on the same static buffers without recording them:
that is how the static-buffer logic is tested without a GPU.
"""

from __future__ import annotations

import copy

import torch
from gentool.core.solvers import cache
from gentool.core.solvers.adaptive import (
    CHUNK,
    AdaptiveProblem,
    AdaptiveState,
    attempt_step,
    chunk_status,
    initial_state,
    start_status,
)

STATE_FIELDS = ("x", "k1", "t", "h", "err_prev", "idx", "active", "nfe", "accepted", "rejected")
LENGTHS = tuple(2**k for k in reversed(range(CHUNK.bit_length())) if 2**k <= CHUNK)
MAX_ADAPTIVE_GRAPHS_PER_FIELD = 4


def binary_parts(n: int) -> list[int]:
    """The captured chunk lengths whose sum is n (1 <= n <= CHUNK), largest first."""
    if not 1 <= n <= CHUNK:
        raise ValueError(f"chunk of {n} iterations; allowed 1..{CHUNK}")
    return [length for length in LENGTHS if n & length]


class StaticChunks:
    """Adaptive chunks on static buffers: `start(x0)` loads a problem, `run(n)` advances, `status()` reports.

    With `capture=True` (CUDA) the start and chunk bodies are recorded once into graphs and replayed;
    otherwise they run directly, with identical buffer traffic.
    """

    def __init__(self, p: AdaptiveProblem, x0: torch.Tensor, capture: bool) -> None:
        self.p = p
        self.static_x0 = x0.clone()
        fresh = initial_state(p, self.static_x0)
        self.s = AdaptiveState(**{name: getattr(fresh, name).clone() for name in STATE_FIELDS})
        self.start_buf = start_status(self.s, p)
        self.status_buf = chunk_status(p, self.s)
        self.start_graph: torch.cuda.CUDAGraph | None = None
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if capture:
            self._capture()

    def _store(self, src: AdaptiveState) -> None:
        for name in STATE_FIELDS:
            dst, val = getattr(self.s, name), getattr(src, name)
            if val is not dst:
                dst.copy_(val)

    def _start_body(self) -> None:
        self._store(initial_state(self.p, self.static_x0))
        self.start_buf.copy_(start_status(self.s, self.p))

    def _chunk_body(self, n: int) -> None:
        work = copy.copy(self.s)  # same tensors; attempt_step rebinds fields or updates them in place
        for _ in range(n):
            attempt_step(self.p, work)
        self._store(work)
        self.status_buf.copy_(chunk_status(self.p, self.s))

    def _capture(self) -> None:
        device = self.static_x0.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lazy library init, compilation of a compiled field
            self._start_body()
            self._chunk_body(1)
        torch.cuda.current_stream(device).wait_stream(side)
        self.start_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.start_graph):
            self._start_body()
        pool = self.start_graph.pool()
        for length in LENGTHS:
            self.graphs[length] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graphs[length], pool=pool):
                self._chunk_body(length)

    def start(self, x0: torch.Tensor) -> torch.Tensor:
        """Load x0 and compute the start state; returns the start status (read it to sync)."""
        self.static_x0.copy_(x0)
        if self.start_graph is not None:
            self.start_graph.replay()
        else:
            self._start_body()
        return self.start_buf

    def run(self, n: int) -> None:
        for length in binary_parts(n):
            if self.graphs:
                self.graphs[length].replay()
            else:
                self._chunk_body(length)

    def status(self) -> torch.Tensor:
        return self.status_buf


def graphed_chunks(p: AdaptiveProblem, x0: torch.Tensor, scope: cache.CacheScope, key: tuple, strict: bool
                   ) -> StaticChunks | None:
    """The cached captured chunks for (scope, key), captured on first use; None when capture fails unless
    `strict`. `key` must identify the problem (method, targets, tolerances, controller, max_steps, save,
    h0) and the call (shape, dtype, device)."""
    graphs = cache.entries(scope.owner, "adaptive-graphs")
    full_key = (scope.tag, *key, torch.is_inference_mode_enabled())
    return cache.captured(graphs, full_key, lambda: StaticChunks(p, x0, capture=True),
                          MAX_ADAPTIVE_GRAPHS_PER_FIELD, strict)
