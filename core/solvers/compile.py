"""`compile=True`: `torch.compile` (inductor: C++ on CPU, Triton on CUDA) of a plan, segment by segment.

A plan is split into *segments*: runs of up to `SEGMENT` consecutive steps of one shape (same registers
and stages, different coefficients and times). Each segment is one compiled call: the field and the
linear combinations of all its steps are traced together, so inductor fuses each step's combination with
the field's kernels and with the next step's input preparation, and the per-call cost (guards, wrapper)
is paid once per segment instead of once per step. Coefficients enter as one tensor and stage times as
rows of `Plan.times`, so steps that differ only in those values share the compiled code; a segment's
length is a power of two (runs are cut into 8, 4, 2, 1), so one shape compiles at most four times. Each
(shape, length) gets its own function with its own code object, since torch keeps one compile cache (and
recompile limit) per code object. Where compilation is unavailable (no C++ compiler, an unsupported
Python, a field inductor cannot trace) the segment runs eagerly with one `CompileFallbackWarning`.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.solvers import cache
from gentool.core.solvers.plan import Head, Plan, Step
from gentool.core.solvers.term import Field

SEGMENT = 8
MAX_COMPILED_PER_OWNER = 64


class CompileFallbackWarning(RuntimeWarning):
    """torch.compile was unavailable or failed; the computation ran eagerly."""


def _fresh_copy(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`fn` (closure included) with its own code object."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def warn_fallback(exc: BaseException) -> None:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {first}); running eagerly",
                  CompileFallbackWarning, stacklevel=3)


class Compiled:
    """A compiled callable that falls back to its eager original (once, with a warning) on failure."""

    def __init__(self, eager: Callable[..., Any], name: str | None = None) -> None:
        self.eager, self.fn = eager, None
        try:
            self.fn = torch.compile(eager if name is None else _fresh_copy(eager, name))
        except Exception as exc:  # noqa: BLE001 - unsupported platform: run eagerly
            warn_fallback(exc)

    def __call__(self, *args: Any) -> Any:
        if self.fn is not None:
            try:
                return self.fn(*args)
            except Exception as exc:  # noqa: BLE001 - compiler failure: run eagerly from here on
                self.fn = None
                warn_fallback(exc)
        return self.eager(*args)


def compiled_field(f: Field) -> Field:
    """`f` compiled as a whole (where a solver has no plan to compile: the adaptive methods)."""
    return Compiled(f)


def _combine(regs: Sequence[torch.Tensor], shape: tuple[int, ...], coeffs: torch.Tensor, k: int
             ) -> tuple[torch.Tensor, int]:
    """`sum_j coeffs[k + j] regs[shape[j]]` as plain arithmetic (a copy for the shape (-1, i)); the next k."""
    if shape[0] == -1:
        return regs[shape[1]], k
    out = regs[shape[0]] * coeffs[k]
    for n, j in enumerate(shape[1:], start=1):
        out = out + regs[j] * coeffs[k + n]
    return out, k + len(shape)


def segment_body(shape: tuple, length: int) -> Callable[..., tuple[tuple[torch.Tensor, ...], tuple]]:
    """The eager function of `length` steps of `shape` (`Step.shape`):
    (f, x, hist, noise rows, stage times (length * stages, B), coefficients) -> (states after each step, hist)."""
    stage_shapes, update_shape, keep_shapes, n_noise = shape

    def run_segment(f: Field, x: torch.Tensor, hist: tuple, noise: torch.Tensor | None, times: torch.Tensor,
                    coeffs: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple]:
        states, k, t = [], 0, 0
        for i in range(length):
            regs = [x, *hist, *(noise[i * n_noise + j] for j in range(n_noise))]
            for stage_shape in stage_shapes:
                inputs, k = _combine(regs, stage_shape, coeffs, k)
                regs += [inputs, f(times[t], inputs)]
                t += 1
            x, k = _combine(regs, update_shape, coeffs, k)
            kept = []
            for keep_shape in keep_shapes:
                value, k = _combine(regs, keep_shape, coeffs, k)
                kept.append(value)
            hist = tuple(kept)
            states.append(x)
        return tuple(states), hist

    return run_segment


def _step_coefficients(step: Step) -> list[float]:
    combos = [st.inputs for st in step.stages] + [step.update, *step.keep]
    return [c for comb in combos if comb.head is not Head.COPY for _, c in comb.terms]


@dataclass(frozen=True)
class Segment:
    """Steps first..first+length-1 of one shape: their coefficients (one tensor), where their stage times
    (rows of `Plan.times`) start and the noise rows they read, in order (a slice when consecutive)."""

    first: int
    length: int
    shape: tuple
    time_at: int
    coeffs: torch.Tensor
    noise_rows: slice | list[int] | None


def _lengths(run: int) -> list[int]:
    """A run of steps cut into segments of SEGMENT, then the binary digits of the remainder."""
    full, rest = divmod(run, SEGMENT)
    return [SEGMENT] * full + [n for n in (4, 2, 1) if n < SEGMENT and rest & n]


def segments(plan: Plan) -> list[Segment]:
    """The plan cut into segments of consecutive same-shape steps."""
    out, i, time_at = [], 0, 0
    dtype, device = plan.times.dtype, plan.times.device
    while i < len(plan.steps):
        shape = plan.steps[i].shape
        run = next((j for j in range(i, len(plan.steps)) if plan.steps[j].shape != shape), len(plan.steps)) - i
        for length in _lengths(run):
            steps = plan.steps[i:i + length]
            coeffs = torch.tensor([c for st in steps for c in _step_coefficients(st)], dtype=dtype, device=device)
            out.append(Segment(i, length, shape, time_at, coeffs, _rows([k for st in steps for k in st.noise])))
            i, time_at = i + length, time_at + sum(len(st.stages) for st in steps)
    return out


def _rows(read: list[int]) -> slice | list[int] | None:
    """The noise rows `read` as a selector of the noise tensor: a slice (a view) when they are consecutive."""
    if not read:
        return None
    return slice(read[0], read[-1] + 1) if read == list(range(read[0], read[-1] + 1)) else read


class CompiledPlan:
    """A plan run segment by segment through compiled functions cached per (owner, tag, shape, length)."""

    def __init__(self, plan: Plan, scope: cache.CacheScope) -> None:
        self.plan, self.segments = plan, segments(plan)
        self.fns = cache.entries(scope.owner, "compiled")
        self.tag = scope.tag

    def _fn(self, seg: Segment) -> Compiled:
        key = (self.tag, seg.shape, seg.length)
        if key not in self.fns:
            cache.put(self.fns, key, Compiled(segment_body(seg.shape, seg.length), f"segment_{len(self.fns)}"),
                      MAX_COMPILED_PER_OWNER)
        return self.fns[key]

    def run(self, f: Field, x: torch.Tensor, noise: torch.Tensor | None, xs: torch.Tensor | None) -> torch.Tensor:
        """The whole solve from x; the state after step i goes to xs[i + 1] if given (no host sync). The noise
        is made contiguous first: compiled code specialises on its inputs' strides, and draws a caller gives
        may be strided views, which would otherwise compile the segments again."""
        hist: tuple = ()
        noise = None if noise is None else noise.contiguous()
        for seg in self.segments:
            rows = None if seg.noise_rows is None else noise[seg.noise_rows]
            n_times = seg.length * len(seg.shape[0])
            states, hist = self._fn(seg)(f, x, hist, rows, self.plan.times[seg.time_at:seg.time_at + n_times],
                                         seg.coeffs)
            x = states[-1]
            if xs is not None:
                for n, state in enumerate(states):
                    xs[seg.first + n + 1].copy_(state)
        return x


def compiled_plan(plan: Plan, scope: cache.CacheScope) -> CompiledPlan:
    """The segments of `plan` for `scope` (cached per owner: their coefficient tensors are built once)."""
    plans = cache.entries(scope.owner, "compiled-plans")
    key = (scope.tag, plan.key)
    if key not in plans:
        cache.put(plans, key, CompiledPlan(plan, scope), MAX_COMPILED_PER_OWNER)
    return plans[key]
