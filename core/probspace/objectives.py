"""Convex objectives on the probability simplex Δⁿ⁻¹, split as `F(p) = G(p) + τ Σ_i p_i log p_i`.

G is the smooth convex part (its value may be unknown: a user's function can return only ∇G); τ ≥ 0 weighs the
(negative) entropy, which is not smooth on Δ (its gradient log p + 1 is unbounded at the faces) and which the
gradient methods therefore handle exactly in their prox step rather than through its gradient.

Built-ins: sparsemax ½‖p − x‖², softmax −x·p + τH(p), kl KL(p‖q), quadratic ½pᵀAp + b·p, portfolio
−mean_j log(r_j·p); or a user's `module:function`, optionally given a data array.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.errors import BadInput, GentoolError, UserCodeFailure, choose, require
from gentool.core.probspace.projection import check_simplex, project_simplex
from torch import Tensor

ValueFn = Callable[[Tensor], Tensor]
SlopeFn = Callable[[float], float]
Data = Tensor | dict[str, Tensor] | None
TINY = 1e-300  # log p is evaluated at max(p, TINY): log 0 is read as log(1e-300) ≈ −690.8


def xlogx(p: Tensor) -> Tensor:
    """`p log p` elementwise, with 0 log 0 = 0."""
    return torch.where(p > 0, p * torch.log(p.clamp_min(TINY)), torch.zeros_like(p))


def safe_log(p: Tensor) -> Tensor:
    """`log p`, with log 0 read as log(1e-300)."""
    return torch.log(p.clamp_min(TINY))


@dataclass(frozen=True)
class SimplexObjective:
    """`F(p) = G(p) + τ Σ p log p` on Δⁿ⁻¹, with G convex and smooth on the simplex.

    `smooth_value(p)`: G(p) as a scalar tensor (NaN when the objective gives only a gradient);
    `smooth_grad(p)`: ∇G(p); `entropy`: τ ≥ 0; `quadratic`: G is a quadratic or linear form (then a line
    search is exact from one gradient difference); `minimiser`: the closed-form p*, where one is known;
    `smooth_ray(p, d)`: optionally, a cheap `η ↦ ∇G(p + ηd)·d` (for line searches).
    """

    name: str
    smooth_value: ValueFn
    smooth_grad: ValueFn
    dim: int
    entropy: float = 0.0
    quadratic: bool = False
    minimiser: Tensor | None = None
    smooth_ray: Callable[[Tensor, Tensor], SlopeFn] | None = None

    def value(self, p: Tensor) -> Tensor:
        """`F(p) = G(p) + τ Σ p log p` (NaN when G's value is unknown)."""
        g = self.smooth_value(p)
        return g + self.entropy * xlogx(p).sum() if self.entropy else g

    def grad(self, p: Tensor) -> Tensor:
        """`∇F(p) = ∇G(p) + τ (log p + 1)`."""
        return self.full_grad(p, self.smooth_grad(p))

    def full_grad(self, p: Tensor, smooth_grad: Tensor) -> Tensor:
        """∇F at `p` from ∇G(p) already computed."""
        return smooth_grad + self.entropy * (safe_log(p) + 1.0) if self.entropy else smooth_grad

    def slope_along(self, p: Tensor, d: Tensor) -> SlopeFn:
        """`φ′(η) = ∇F(p + ηd)·d` of `φ(η) = F(p + ηd)` (NaN where ∇F is not finite). The smooth part costs
        O(1) per η when G is quadratic (φ_G′ is affine: two gradients in all), or `smooth_ray`'s price."""
        smooth, tau = self._smooth_slope(p, d), self.entropy
        if not tau:
            return smooth
        return lambda eta: smooth(eta) + tau * float((safe_log(p + eta * d) + 1.0) @ d)

    def _smooth_slope(self, p: Tensor, d: Tensor) -> SlopeFn:
        """`η ↦ ∇G(p + ηd)·d`."""
        if self.smooth_ray is not None:
            return self.smooth_ray(p, d)
        if self.quadratic:
            g0 = self.smooth_grad(p)
            a, c = float(g0 @ d), float((self.smooth_grad(p + d) - g0) @ d)
            return lambda eta: a + eta * c

        def slope(eta: float) -> float:
            g = self.smooth_grad(p + eta * d)
            return float(g @ d) if bool(torch.isfinite(g).all()) else math.nan

        return slope


def sparsemax_objective(x: Tensor) -> SimplexObjective:
    """`F(p) = ½‖p − x‖²`, `∇F = p − x`; the minimiser is sparsemax(x) = proj_Δ(x)."""
    return SimplexObjective("sparsemax", lambda p: 0.5 * ((p - x) ** 2).sum(), lambda p: p - x, x.numel(),
                            quadratic=True, minimiser=project_simplex(x))


def softmax_objective(x: Tensor, tau: float = 1.0) -> SimplexObjective:
    """Linear + entropy `F(p) = −x·p + τ Σ p log p`, `∇F = −x + τ(log p + 1)`; minimiser softmax(x/τ)."""
    require(tau > 0 and math.isfinite(tau), f"tau must be a finite number > 0, got {tau}")
    return SimplexObjective("softmax", lambda p: -(x * p).sum(), lambda p: -x, x.numel(), entropy=tau,
                            quadratic=True, minimiser=torch.softmax(x / tau, dim=0))


def kl_objective(q: Tensor) -> SimplexObjective:
    """`F(p) = KL(p‖q) = Σ p log p − p·log q`, `∇F = log p − log q + 1`; minimiser q (on the simplex)."""
    check_simplex(q, "target q")
    logq = safe_log(q)
    return SimplexObjective("kl", lambda p: -(p * logq).sum(), lambda p: -logq, q.numel(), entropy=1.0,
                            quadratic=True, minimiser=q / q.sum())


def quadratic_objective(a: Tensor, b: Tensor) -> SimplexObjective:
    """Convex quadratic form `F(p) = ½ pᵀAp + b·p` (A symmetric PSD), `∇F = Ap + b`."""
    require(a.ndim == 2 and a.shape[0] == a.shape[1] == b.numel(), f"quadratic form needs matrix A (n, n) and "
            f"x = b (n,); got A {tuple(a.shape)} and b ({b.numel()},)")
    a = 0.5 * (a + a.T)
    require(float(torch.linalg.eigvalsh(a).min()) >= -1e-10 * max(1.0, float(a.abs().max())),
            "quadratic form matrix A must be PSD")
    return SimplexObjective("quadratic", lambda p: 0.5 * p @ a @ p + b @ p, lambda p: a @ p + b, b.numel(),
                            quadratic=True)


def portfolio_objective(returns: Tensor) -> SimplexObjective:
    """Log-optimal portfolio `F(p) = −(1/m) Σ_j log(r_j·p)` for returns `R (m, n) > 0`,
    `∇F = −(1/m) Rᵀ(1/(Rp))` (smooth on Δ because every r_j·p ≥ min R > 0)."""
    require(returns.ndim == 2 and bool((returns > 0).all()) and bool(torch.isfinite(returns).all()),
            "portfolio returns (matrix) must be a positive, finite (m, n) array")
    m = returns.shape[0]

    def ray(p: Tensor, d: Tensor) -> SlopeFn:
        """`η ↦ −(1/m) Σ_j (r_j·d)/(r_j·p + η r_j·d)` in O(m)."""
        rp, rd = returns @ p, returns @ d
        return lambda eta: float(-(rd / (rp + eta * rd)).mean())

    return SimplexObjective("portfolio", lambda p: -torch.log(returns @ p).mean(),
                            lambda p: -(returns.T @ (1.0 / (returns @ p))) / m, returns.shape[1], smooth_ray=ray)


def _names_module(exc: ModuleNotFoundError, module: str) -> bool:
    """Whether `exc` is about `module` itself (or a package above it), not about something it imports."""
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))


def _import_module(module: str) -> Any:
    """`module` from the Python path, else from the working directory (where `python -c "import m"` finds it; a
    console script's path does not hold it)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if not _names_module(exc, module) or cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(cwd)


def import_function(spec: str, kind: str = "objective") -> Callable[..., Any]:
    """The function `module:function` names (`kind` names it in errors: objective, target)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise BadInput(f"cannot import {kind} {spec!r}; expected module:function")
    try:
        found = _import_module(module)
    except ModuleNotFoundError as exc:
        if not _names_module(exc, module):  # the user's module imports something missing
            raise BadInput(f"cannot import {kind} {spec!r}: importing {module!r} raised {_describe(exc)}") from None
        raise BadInput(f"cannot import {kind} {spec!r} ({exc}; looked on the Python path and in the working "
                       f"directory {os.getcwd()}); expected module:function") from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module (SyntaxError, RuntimeError, ...)
        raise BadInput(f"cannot import {kind} {spec!r}: importing {module!r} raised {_describe(exc)}") from None
    fn = getattr(found, attr, None)
    if fn is None:
        raise BadInput(f"cannot import {kind} {spec!r} (module {module!r} has no attribute {attr!r}); expected "
                       "module:function")
    require(callable(fn), f"{kind} {spec!r} is not a function")
    return fn


def _arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments `fn` takes (None when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def user_caller(spec: str, data: Data, kind: str = "objective", arg: str = "p") -> Callable[[Tensor], Any]:
    """`v -> fn(v)` or, with data, `v -> fn(v, data)` for the user's `module:function`; a wrong signature or an
    exception is bad input naming the `kind` (objective, target) and its first argument `arg`."""
    fn = import_function(spec, kind)
    args = _arity(fn)
    if data is not None:
        require(args is None or args >= 2, f"{kind} {spec!r} takes {args} argument(s) but data was given: "
                f"define function({arg}, data)")
    else:
        require(args is None or args >= 1, f"{kind} {spec!r} takes no argument: define function({arg})")

    def call(q: Tensor) -> Any:
        try:
            return fn(q) if data is None else fn(q, data)
        except GentoolError:  # Interrupted (a signal arrived inside the user's code), or gentool's own errors
            raise
        except Exception as exc:  # noqa: BLE001 - the user's function failed: report it on one line
            raise UserCodeFailure(f"{kind} {spec!r} raised {_describe(exc)}") from None

    return call


def _describe(exc: BaseException) -> str:
    """`Type: first line of the message` (SyntaxError with its file and line)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def checking_user_code() -> Iterator[None]:
    """The checks before a run starts: the user's code failing there is bad input (exit 2), not a failed run."""
    try:
        yield
    except UserCodeFailure as exc:
        raise BadInput(str(exc)) from None


def python_objective(spec: str, dim: int, data: Data = None) -> SimplexObjective:
    """Load `module:function`; `function(p)` (or `function(p, data)` when data is given) returns a scalar G
    (gradient by autograd), a gradient tensor shaped like `p`, or a tuple `(G, grad)`."""
    call = user_caller(spec, data)

    def tensor(value: Any) -> Tensor:
        try:
            return torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise BadInput(f"objective {spec!r} must return F, grad or (F, grad) as numbers; got "
                           f"{type(value).__name__}") from None

    def evaluate(p: Tensor) -> tuple[Tensor, Tensor]:
        q = p.detach().clone().requires_grad_(True)
        out = call(q)
        if isinstance(out, tuple) and len(out) == 2:
            value, grad = tensor(out[0]).detach(), tensor(out[1]).detach()
        elif isinstance(out, Tensor) and out.numel() == 1 and out.requires_grad:
            (grad,) = torch.autograd.grad(out, q)
            value = out.detach()
        else:
            value, grad = torch.tensor(math.nan, dtype=p.dtype), tensor(out).detach()
        require(value.numel() == 1 and grad.shape == p.shape, f"objective {spec!r} must return F, grad or "
                f"(F, grad) with grad shaped like p {tuple(p.shape)}; got grad shape {tuple(grad.shape)}")
        return value.reshape(()), grad

    return SimplexObjective(spec, lambda p: evaluate(p)[0], lambda p: evaluate(p)[1], dim)


OBJECTIVES = ("sparsemax", "softmax", "kl", "quadratic", "portfolio")


def make_objective(name: str, x: Tensor | None = None, *, tau: float = 1.0, matrix: Tensor | None = None,
                   data: Data = None, dim: int | None = None) -> SimplexObjective:
    """Build a built-in objective by name, or import `module:function`.

    sparsemax/softmax use the vector `x`; kl uses `x` as the target q; quadratic uses `matrix` A and b = `x`;
    portfolio uses `matrix` as the returns R. A `module:function` objective has dimension `dim` (default: the
    length of `x`) and receives `data` as its second argument when data is given.
    """
    if ":" in name:
        require(dim is not None or x is not None, "a module:function objective needs dim (or x) to fix the "
                "dimension")
        return python_objective(name, dim if dim is not None else x.numel(), data)
    choose("objective", name, OBJECTIVES)
    require(data is None, f"data is only read by a module:function objective, not by {name!r}")
    if name in ("quadratic", "portfolio"):
        require(matrix is not None, f"objective {name!r} needs a matrix")
    if name == "portfolio":
        return portfolio_objective(matrix)
    require(x is not None, f"objective {name!r} needs a vector x")
    require(bool(torch.isfinite(x).all()), f"vector x must be finite, got {x.tolist()[:8]}")
    if name == "quadratic":
        return quadratic_objective(matrix, x)
    return {"sparsemax": sparsemax_objective, "kl": kl_objective,
            "softmax": lambda v: softmax_objective(v, tau)}[name](x)
