"""`compile=True`: `torch.compile` (inductor: C++ on CPU, Triton on CUDA) of plan steps or of a field.

A plan step is compiled as a whole, field and linear combinations together, so inductor can fuse the
combinations into the field's last kernels. Steps that differ only in coefficients and times share one
compiled function (floats and stage-time tensors are graph inputs); each distinct step *shape* gets its
own function with its own code object, so torch's per-code-object recompile limit counts shapes of one
plan, not every plan ever compiled. Where compilation is unavailable (no C++ compiler, an unsupported
Python, a field inductor cannot trace) the step falls back to eager with one `CompileFallbackWarning`.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from gentool.core.solvers import cache
from gentool.core.solvers.plan import Step
from gentool.core.solvers.runner import History, Stepper
from gentool.core.solvers.term import Field

MAX_COMPILED_PER_OWNER = 64


class CompileFallbackWarning(RuntimeWarning):
    """torch.compile was unavailable or failed; the computation ran eagerly."""


def _fresh_copy(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`fn` with its own code object (torch.compile keeps one cache per code object)."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def warn_fallback(exc: BaseException) -> None:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {first}); running eagerly",
                  CompileFallbackWarning, stacklevel=3)


class _Compiled:
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


def traced_advance(f: Field, x: torch.Tensor, hist: History, step: Step, noise: torch.Tensor | None
                   ) -> tuple[torch.Tensor, History]:
    """`runner.advance` with the combinations as plain arithmetic (`Combination.traced`), for tracing."""
    regs = [x, *hist]
    if step.noise is not None:
        regs.append(noise[step.noise])
    for st in step.stages:
        regs.append(f(st.time, st.inputs.traced(regs)))
    return step.update.traced(regs), tuple(regs[j] for j in step.keep)


def compiled_stepper(scope: cache.CacheScope) -> Stepper:
    """A stepper that runs each step through the compiled function of its shape (cached per scope)."""
    compiled = cache.entries(scope.owner, "compiled")

    def stepper(f: Field, x: torch.Tensor, hist: History, step: Step, noise: torch.Tensor | None
                ) -> tuple[torch.Tensor, History]:
        key = (scope.tag, step.shape)
        fn = compiled.get(key)
        if fn is None:
            fn = cache.put(compiled, key, _Compiled(traced_advance, f"step_{len(compiled)}"), MAX_COMPILED_PER_OWNER)
        return fn(f, x, hist, step, noise)

    return stepper


def compiled_field(f: Field) -> Field:
    """`f` compiled as a whole (where a solver has no plan steps to compile: the adaptive methods)."""
    return _Compiled(f)
