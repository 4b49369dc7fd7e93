"""Optimisation over the probability simplex Δⁿ⁻¹: objectives and first-order methods.

KKT optimality of `p` for a convex `F` on the simplex: `p·∇F(p) = min_i ∇F(p)_i`; every method
reports the Frank–Wolfe gap `g(p) = p·∇F(p) − min_i ∇F(p)_i ≥ 0` and stops once `g ≤ tol`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.errors import BadInput, choose, require
from gentool.core.probspace.projection import check_simplex, project_simplex
from torch import Tensor

ValueFn = Callable[[torch.Tensor], torch.Tensor]
_TINY = 1e-300


@dataclass(frozen=True)
class SimplexObjective:
    """A convex objective `F` on the simplex: `value(p)` (scalar tensor; NaN if unknown), `grad(p)`."""

    name: str
    value: ValueFn
    grad: ValueFn
    dim: int


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * torch.log(p.clamp_min(_TINY)), torch.zeros_like(p))


def sparsemax_objective(x: torch.Tensor) -> SimplexObjective:
    """`F(p) = ½‖p − x‖²`, `∇F = p − x`; the minimiser is sparsemax(x) = proj_Δ(x)."""
    return SimplexObjective("sparsemax", lambda p: 0.5 * ((p - x) ** 2).sum(), lambda p: p - x, x.numel())


def softmax_objective(x: torch.Tensor, tau: float = 1.0) -> SimplexObjective:
    """Linear + entropy `F(p) = −x·p + τ Σ p log p`, `∇F = −x + τ(log p + 1)`; minimiser softmax(x/τ)."""
    require(tau > 0, f"temperature tau must be > 0, got {tau}")
    return SimplexObjective("softmax", lambda p: -(x * p).sum() + tau * _xlogx(p).sum(),
                            lambda p: -x + tau * (torch.log(p.clamp_min(_TINY)) + 1.0), x.numel())


def kl_objective(q: torch.Tensor) -> SimplexObjective:
    """`F(p) = KL(p‖q) = Σ p log(p/q)`, `∇F = log(p/q) + 1`; minimiser q (which must be on the simplex)."""
    check_simplex(q, "target q")
    logq = torch.log(q.clamp_min(_TINY))
    return SimplexObjective("kl", lambda p: (_xlogx(p) - p * logq).sum(),
                            lambda p: torch.log(p.clamp_min(_TINY)) - logq + 1.0, q.numel())


def quadratic_objective(a: torch.Tensor, b: torch.Tensor) -> SimplexObjective:
    """Convex quadratic form `F(p) = ½ pᵀAp + b·p` (A symmetric PSD), `∇F = Ap + b`."""
    require(a.ndim == 2 and a.shape[0] == a.shape[1] == b.numel(), "quadratic form needs A (n, n) and b (n,)")
    a = 0.5 * (a + a.T)
    require(float(torch.linalg.eigvalsh(a).min()) >= -1e-10, "quadratic form matrix A must be PSD")
    return SimplexObjective("quadratic", lambda p: 0.5 * p @ a @ p + b @ p, lambda p: a @ p + b, b.numel())


def portfolio_objective(returns: torch.Tensor) -> SimplexObjective:
    """Log-optimal portfolio (log-barrier) `F(p) = −(1/m) Σ_j log(r_j·p)` for returns `R (m, n) > 0`."""
    require(returns.ndim == 2 and bool((returns > 0).all()), "portfolio returns: positive (m, n) array")
    m = returns.shape[0]
    return SimplexObjective("portfolio", lambda p: -torch.log(returns @ p).mean(),
                            lambda p: -(returns / (returns @ p)[:, None]).sum(0) / m, returns.shape[1])


def _python_objective(spec: str, dim: int) -> SimplexObjective:
    """Load `module:function`; `function(p)` returns a scalar F (gradient by autograd), a gradient
    tensor shaped like `p`, or a tuple `(F, grad)`."""
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BadInput(f"cannot import objective {spec!r} ({exc}); expected module:function") from None

    def call(q: torch.Tensor) -> Any:
        try:
            return fn(q)
        except Exception as exc:  # noqa: BLE001 - the user's function failed: report it on one line
            raise BadInput(f"objective {spec!r} raised {type(exc).__name__}: {exc}") from None

    def tensor(value: Any) -> torch.Tensor:
        try:
            return torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise BadInput(f"objective {spec!r} must return F, grad or (F, grad) as numbers; got "
                           f"{type(value).__name__}") from None

    def evaluate(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = p.detach().clone().requires_grad_(True)
        out = call(q)
        if isinstance(out, tuple) and len(out) == 2:
            return tensor(out[0]).detach(), tensor(out[1]).detach()
        if isinstance(out, torch.Tensor) and out.numel() == 1 and out.requires_grad:
            (g,) = torch.autograd.grad(out, q)
            return out.detach(), g
        out = tensor(out)
        require(out.shape == p.shape, f"objective {spec!r} must return F, grad or (F, grad); got shape "
                f"{tuple(out.shape)}")
        return torch.tensor(math.nan, dtype=p.dtype), out.detach()

    return SimplexObjective(spec, lambda p: evaluate(p)[0], lambda p: evaluate(p)[1], dim)


OBJECTIVES = ("sparsemax", "softmax", "kl", "quadratic", "portfolio")


def make_objective(name: str, x: torch.Tensor | None = None, *, tau: float = 1.0,
                   matrix: torch.Tensor | None = None) -> SimplexObjective:
    """Build a built-in objective by name, or import `module:function` (then `x` only fixes the dimension).

    sparsemax/softmax use the vector `x`; kl uses `x` as the target q; quadratic uses `matrix` A and b = `x`;
    portfolio uses `matrix` as the returns R.
    """
    if ":" in name:
        require(x is not None, "a Python objective needs x (or p0) to fix the dimension")
        return _python_objective(name, x.numel())
    choose("objective", name, OBJECTIVES)
    if name in ("quadratic", "portfolio"):
        require(matrix is not None, f"objective {name!r} needs a matrix")
    if name == "portfolio":
        return portfolio_objective(matrix)
    require(x is not None, f"objective {name!r} needs a vector x")
    require(bool(torch.isfinite(x).all()), f"vector x must be finite, got {x.tolist()}")
    if name == "quadratic":
        return quadratic_objective(matrix, x)
    return {"sparsemax": sparsemax_objective, "kl": kl_objective,
            "softmax": lambda v: softmax_objective(v, tau)}[name](x)


def fw_gap(p: torch.Tensor, grad: torch.Tensor) -> float:
    """Frank–Wolfe duality gap `p·∇F − min_i ∇F_i` (zero exactly at a minimiser of a convex F)."""
    return float(p @ grad - grad.min())


@dataclass
class SimplexResult:
    """Final point, per-iteration trace rows {iter, objective, gap}, iterations run, and convergence flag."""

    p: torch.Tensor
    trace: list[dict[str, Any]] = field(default_factory=list)
    iters: int = 0
    converged: bool = False


def _line_search(obj: SimplexObjective, p: torch.Tensor, d: torch.Tensor, g: torch.Tensor) -> float:
    """Step η ∈ [0, 1] minimising F(p + η d): exact for quadratics (curvature from a gradient difference),
    golden-section search otherwise."""
    slope = float(g @ d)
    if obj.name in ("sparsemax", "quadratic"):
        curv = float((obj.grad(p + d) - g) @ d)
        return 1.0 if curv <= 0 else min(1.0, max(0.0, -slope / curv))
    lo, hi, r = 0.0, 1.0, (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - r * (hi - lo), lo + r * (hi - lo)
        fa, fb = float(obj.value(p + a * d)), float(obj.value(p + b * d))
        if math.isnan(fa) or math.isnan(fb):  # value unknown: fall back to the gradient sign
            fa, fb = float(obj.grad(p + a * d) @ d), 0.0
        lo, hi = (lo, b) if fa < fb else (a, hi)
    return 0.5 * (lo + hi)


def _fw_step(obj: SimplexObjective, p: Tensor, g: Tensor, t: int, lr: float, step: str) -> Tensor:
    """Conditional gradient `p ← (1 − η) p + η onehot(argmin ∇F)`, η = 2/(t+2) or line search."""
    s = torch.zeros_like(p)
    s[int(torch.argmin(g))] = 1.0
    eta = 2.0 / (t + 2.0) if step == "open-loop" else _line_search(obj, p, s - p, g)
    return p + eta * (s - p)


def _eg_step(obj: SimplexObjective, p: Tensor, g: Tensor, t: int, lr: float, step: str) -> Tensor:
    """Exponentiated gradient (mirror descent with KL): `p ← p ⊙ exp(−η∇F)/Z`, done in log space."""
    logits = torch.log(p.clamp_min(_TINY)) - lr * (g - g.min())
    return torch.softmax(logits, dim=0)


def _pg_step(obj: SimplexObjective, p: Tensor, g: Tensor, t: int, lr: float, step: str) -> Tensor:
    """Projected gradient `p ← proj_Δ(p − η∇F)` with the exact simplex projection."""
    return project_simplex(p - lr * g)


def _softmax_step(obj: SimplexObjective, p: torch.Tensor, g: torch.Tensor, t: int, lr: float,
                  step: str) -> torch.Tensor:
    """Gradient descent on logits θ, p = softmax(θ): `θ ← θ − η p ⊙ (∇F − p·∇F)` (θ = log p + shift)."""
    theta = torch.log(p.clamp_min(_TINY)) - lr * p * (g - p @ g)
    return torch.softmax(theta, dim=0)


METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "frank-wolfe": _fw_step, "exponentiated-gradient": _eg_step, "projected-gradient": _pg_step,
    "softmax-gd": _softmax_step,
}
FW_STEPS = ("open-loop", "line-search")


def _check_grad(g: torch.Tensor, p: torch.Tensor, t: int) -> torch.Tensor:
    if not bool(torch.isfinite(g).all()):
        raise BadInput(f"objective gradient is not finite at iteration {t}: grad={g.tolist()} "
                       f"at p={p.tolist()}")
    return g


class SimplexRun:
    """An iterative solve in progress: point `p`, iteration `t`, and whether it has converged.

    `iterate(k)` runs up to `k` iterations and returns the trace rows `{iter, objective, gap}` of the logged
    ones (every `log_every`-th, the first, and the last); the run stops at gap ≤ `tol` or after `iters`.
    """

    def __init__(self, obj: SimplexObjective, method: str, *, p0: torch.Tensor | None = None, iters: int = 1000,
                 tol: float = 0.0, lr: float = 0.1, step: str = "open-loop", log_every: int = 1) -> None:
        self.stepper = METHODS[choose("method", method, METHODS)]
        choose("Frank-Wolfe step rule", step, FW_STEPS)
        require(iters >= 0, f"iters must be >= 0, got {iters}")
        require(lr > 0 and math.isfinite(lr), f"step size lr must be a positive number, got {lr}")
        require(math.isfinite(tol), f"tol must be a finite number (negative: never stop early), got {tol}")
        require(log_every >= 1, f"log_every must be >= 1, got {log_every}")
        p = torch.full((obj.dim,), 1.0 / obj.dim, dtype=torch.float64) if p0 is None else p0.to(torch.float64)
        self.p = check_simplex(p.clone(), "initial point p0")
        self.obj, self.iters, self.tol, self.lr, self.step_rule, self.log_every = obj, iters, tol, lr, step, log_every
        self.t, self.converged, self.finished, self.gap = 0, False, False, math.inf

    def iterate(self, k: int) -> list[dict[str, Any]]:
        """Up to `k` iterations (each: gradient, gap, log, stop test, step)."""
        rows: list[dict[str, Any]] = []
        for _ in range(k):
            if self.finished:
                break
            g = _check_grad(self.obj.grad(self.p), self.p, self.t)
            self.gap = fw_gap(self.p, g)
            self.converged = self.gap <= self.tol
            self.finished = self.converged or self.t == self.iters
            if self.t % self.log_every == 0 or self.finished:
                rows.append({"iter": self.t, "objective": float(self.obj.value(self.p)), "gap": self.gap})
            if self.finished:
                break
            self.p = self.stepper(self.obj, self.p, g, self.t, self.lr, self.step_rule)
            self.t += 1
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "t": self.t, "converged": self.converged, "finished": self.finished, "gap": self.gap}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.t = state["p"], int(state["t"])
        self.converged, self.finished, self.gap = bool(state["converged"]), bool(state["finished"]), state["gap"]


def solve_simplex(obj: SimplexObjective, method: str, *, p0: torch.Tensor | None = None, iters: int = 1000,
                  tol: float = 0.0, lr: float = 0.1, step: str = "open-loop", log_every: int = 1,
                  progress: Callable[..., None] | None = None) -> SimplexResult:
    """Minimise `obj` over Δⁿ⁻¹ with `method` from the uniform point (or `p0`) for at most `iters` iterations.

    Each logged iteration records `{iter, objective, gap}`; the run stops as soon as gap ≤ `tol`.
    `lr` is the step size of the gradient methods; `step` the Frank–Wolfe rule (open-loop 2/(t+2) or
    line-search).
    """
    run = SimplexRun(obj, method, p0=p0, iters=iters, tol=tol, lr=lr, step=step, log_every=log_every)
    res = SimplexResult(run.p)
    while not run.finished:
        res.trace += run.iterate(log_every)
        if progress is not None:
            progress(run.t, iters, gap=run.gap)
    res.p, res.iters, res.converged = run.p, run.t, run.converged
    return res
