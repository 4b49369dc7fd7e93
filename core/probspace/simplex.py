"""First-order methods on the probability simplex Δⁿ⁻¹ for `F(p) = G(p) + τ Σ p log p` (see `objectives`).

KKT optimality of `p` for a convex `F` on the simplex: `p·∇F(p) = min_i ∇F(p)_i`; every method reports the
Frank–Wolfe gap `g(p) = p·∇F(p) − min_i ∇F(p)_i ≥ F(p) − F*` and stops once `g ≤ tol`. For softmax and kl
(G linear) `g = τ(KL(p‖p*) + max_i log(p*_i/p_i))`: it certifies even the smallest entries of p.

Methods (each a small class whose `step` maps one `Point` to the next):
- `frank-wolfe`: conditional gradient with away steps and an exact line search (default), plain with a line
  search, or the open-loop step 2/(t + 2).
- `exponentiated-gradient`: mirror descent with the KL divergence; the entropy term enters its prox exactly.
- `projected-gradient`: proximal gradient in the Euclidean metric (exact simplex projection when τ = 0, the
  exact prox of the entropy on the simplex when τ > 0).
- `softmax-gd`: gradient descent on logits θ, p = softmax(θ); only for objectives with an entropy term.
The gradient methods start from step `lr`, try twice the last accepted step at every iteration and halve it
until a sufficient-decrease test holds (backtracking), or keep `lr` fixed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol

import torch
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.probspace.objectives import (
    OBJECTIVES,
    SimplexObjective,
    make_objective,
    safe_log,
)
from gentool.core.probspace.projection import check_simplex, project_simplex, prox_entropy_simplex
from torch import Tensor

__all__ = ["FW_STEPS", "METHODS", "OBJECTIVES", "SimplexObjective", "SimplexResult", "SimplexRun", "fw_gap",
           "make_method", "make_objective", "solve_simplex", "suitable_methods"]



class FWStep(Enum):
    """Frank–Wolfe step rules: away steps with an exact line search, plain FW with one, or η_t = 2/(t + 2)."""

    AWAY = "away"
    LINE_SEARCH = "line-search"
    OPEN_LOOP = "open-loop"


FW_STEPS = tuple(s.value for s in FWStep)
ITERS, TOL = 20000, 1e-8  # defaults: enough for every built-in objective at n = 1000 (tests/test_simplex.py)
MAX_HALVINGS = 60  # backtracking tries lr·2^k for k down to −60 before giving up
MAX_STEP = 1e12  # backtracking never grows a step beyond this


@dataclass(frozen=True)
class Point:
    """An iterate `p` with the gradients of the smooth part, ∇G(p), and of the whole objective, ∇F(p)."""

    p: Tensor
    smooth_grad: Tensor
    grad: Tensor

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.grad).all())


def evaluate(obj: SimplexObjective, p: Tensor) -> Point:
    """The `Point` at `p` (one evaluation of ∇G)."""
    gs = obj.smooth_grad(p)
    return Point(p, gs, obj.full_grad(p, gs))


def fw_gap(p: Tensor, grad: Tensor) -> float:
    """Frank–Wolfe duality gap `p·∇F − min_i ∇F_i` (zero exactly at a minimiser of a convex F)."""
    return float(p @ grad - grad.min())


def kl_divergence(p: Tensor, q: Tensor) -> float:
    """KL(p‖q) for p, q on the simplex with q > 0 where p > 0, as Σ q (r eʳ − (eʳ − 1)) with r = log(p/q):
    a sum of nonnegative terms (no cancellation between large ones)."""
    r = torch.where(p > 0, safe_log(p) - safe_log(q), torch.full_like(p, -math.inf))
    terms = torch.where(p > 0, q * (r * torch.exp(r) - torch.expm1(r)), q)
    return float(terms.clamp_min(0.0).sum())


class SimplexMethod(Protocol):
    """One iteration `step(obj, point, t) -> next point`, with the state a resumed run needs."""

    name: ClassVar[str]

    def step(self, obj: SimplexObjective, pt: Point, t: int) -> Point: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# ---- Frank–Wolfe ----------------------------------------------------------------------------------------

def line_search(obj: SimplexObjective, pt: Point, d: Tensor, eta_max: float) -> float:
    """Exact line search: the minimiser of the convex φ(η) = F(p + ηd) over [0, η_max], from the slope
    φ′(η) = ∇F(p + ηd)·d alone (no values needed). Quadratic F: η = −φ′(0)/(d·(∇F(p + d) − ∇F(p))); otherwise
    the root of the nondecreasing φ′ (`slope_root`)."""
    s0 = float(pt.grad @ d)
    if s0 >= 0:
        return 0.0
    if obj.quadratic and not obj.entropy:
        curv = float((obj.smooth_grad(pt.p + d) - pt.smooth_grad) @ d)
        return eta_max if curv <= 0 else min(eta_max, -s0 / curv)
    return slope_root(obj.slope_along(pt.p, d), s0, eta_max)


def slope_root(slope: Callable[[float], float], s0: float, eta_max: float) -> float:
    """Where the nondecreasing `slope` (φ′, with φ′(0) = s0 < 0) crosses 0 in [0, η_max], or η_max if it stays
    negative: the Illinois (modified regula falsi) method, which halves the kept end's slope when the same end
    moves twice, kept inside the bracket; a non-finite slope counts as positive (the step left the domain).
    Returns a point with |φ′| ≤ 1e-12|s0|, else the bracket's left end (where φ still decreases)."""
    lo, hi, s_lo, s_hi = 0.0, eta_max, s0, slope(eta_max)
    if s_hi <= 0:
        return eta_max
    s_hi, side = (abs(s0) if math.isnan(s_hi) else s_hi), 0
    for _ in range(100):
        eta = (lo * s_hi - hi * s_lo) / (s_hi - s_lo)
        eta = eta if lo < eta < hi else 0.5 * (lo + hi)
        s = slope(eta)
        if abs(s) <= 1e-12 * abs(s0):
            return eta
        if math.isnan(s) or s > 0:
            hi, s_hi, s_lo, side = eta, (abs(s0) if math.isnan(s) else s), s_lo / 2 if side == -1 else s_lo, -1
        else:
            lo, s_lo, s_hi, side = eta, s, s_hi / 2 if side == 1 else s_hi, 1
        if hi - lo <= 1e-15 * eta_max:
            break
    return lo


@dataclass
class FrankWolfe:
    """Conditional gradient. Toward the vertex s = argmin ∇F: `p ← p + η(e_s − p)`, η ∈ [0, 1]; with away
    steps (Lacoste-Julien & Jaggi 2015), when the away gap ∇F_a − p·∇F (a = argmax over the support of ∇F_a)
    exceeds the FW gap, `p ← p + η(p − e_a)` with η ∈ [0, p_a/(1 − p_a)] (η at the bound drops a from the
    support). Steps: exact line search (`away`, `line-search`) or η_t = 2/(t + 2) (`open-loop`)."""

    rule: FWStep = FWStep.AWAY
    name: ClassVar[str] = "frank-wolfe"
    needs_entropy: ClassVar[bool] = False
    multiplicative: ClassVar[bool] = False

    @classmethod
    def create(cls, *, lr: float, step: str, backtrack: bool) -> FrankWolfe:
        return cls(FWStep(choose("Frank-Wolfe step", step, FW_STEPS)))

    def _direction(self, pt: Point) -> tuple[Tensor, float, int | None]:
        """(d, η_max, dropped vertex or None) of the FW or the away direction, whichever has the larger gap."""
        p, g = pt.p, pt.grad
        s = int(torch.argmin(g))
        d = -p.clone()
        d[s] += 1.0
        if self.rule is not FWStep.AWAY:
            return d, 1.0, None
        a = int(torch.argmax(torch.where(p > 0, g, -math.inf)))
        if float(g[a] - p @ g) <= float(p @ g - g[s]) or float(p[a]) >= 1.0:
            return d, 1.0, None
        d = p.clone()
        d[a] -= 1.0
        return d, float(p[a]) / (1.0 - float(p[a])), a

    def step(self, obj: SimplexObjective, pt: Point, t: int) -> Point:
        d, eta_max, a = self._direction(pt)
        eta = 2.0 / (t + 2.0) if self.rule is FWStep.OPEN_LOOP else line_search(obj, pt, d, eta_max)
        p = (pt.p + eta * d).clamp_min(0.0)
        if a is not None and eta >= eta_max:
            p[a] = 0.0
        return evaluate(obj, p / p.sum())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


# ---- gradient methods with backtracking -----------------------------------------------------------------

@dataclass
class _Backtracking:
    """Step-size control shared by the gradient methods: try `min(2η, MAX_STEP)` (η the last accepted step,
    initially `lr`), halve until `accept` holds; with `backtrack=False` always take `lr`."""

    lr: float = 1.0
    backtrack: bool = True
    eta: float = field(init=False)
    needs_entropy: ClassVar[bool] = False
    multiplicative: ClassVar[bool] = False

    def __post_init__(self) -> None:
        require(self.lr > 0 and math.isfinite(self.lr), f"lr must be a finite number > 0, got {self.lr}")
        self.eta = self.lr

    @classmethod
    def create(cls, *, lr: float, step: str, backtrack: bool) -> _Backtracking:
        return cls(lr, backtrack)

    def search(self, obj: SimplexObjective, pt: Point, t: int, propose: Callable[[float], Tensor],
               accept: Callable[[Point, Point, float], bool]) -> Point:
        if not self.backtrack:
            return evaluate(obj, propose(self.lr))
        eta = min(2.0 * self.eta, MAX_STEP)
        for _ in range(MAX_HALVINGS):
            nxt = evaluate(obj, propose(eta))
            if nxt.finite and accept(pt, nxt, eta):
                self.eta = eta
                return nxt
            eta /= 2.0
        raise NumericalFailure(f"no step in [{eta:.3g}, {min(2.0 * self.eta, MAX_STEP):.3g}] passes the "
                               f"sufficient-decrease test at iteration {t}: is the objective convex and smooth?")

    def state_dict(self) -> dict[str, Any]:
        return {"eta": self.eta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eta = float(state["eta"])


def _curvature(pt: Point, nxt: Point) -> float:
    """`⟨∇G(p⁺) − ∇G(p), p⁺ − p⟩ ≥ G(p⁺) − G(p) − ⟨∇G(p), p⁺ − p⟩` (G convex): a gradient-only bound."""
    return float((nxt.smooth_grad - pt.smooth_grad) @ (nxt.p - pt.p))


@dataclass
class MirrorDescent(_Backtracking):
    """Exponentiated gradient (mirror descent with the KL divergence), the entropy in the prox:
    `p⁺ = argmin_q η⟨∇G(p), q⟩ + ητ Σ q log q + KL(q‖p)`, i.e. `log p⁺ = (log p − η∇G(p))/(1 + ητ) − log Z`.
    Backtracking test (relative smoothness, Bauschke–Bolte–Teboulle 2017): ⟨∇G(p⁺) − ∇G(p), p⁺ − p⟩ ≤
    KL(p⁺‖p)/η, which implies G(p⁺) ≤ G(p) + ⟨∇G(p), p⁺ − p⟩ + KL(p⁺‖p)/η."""

    name: ClassVar[str] = "exponentiated-gradient"
    multiplicative: ClassVar[bool] = True  # p⁺ ∝ p·(…): zero entries stay zero

    def step(self, obj: SimplexObjective, pt: Point, t: int) -> Point:
        logp, tau = safe_log(pt.p), obj.entropy

        def propose(eta: float) -> Tensor:
            return torch.softmax((logp - eta * (pt.smooth_grad - pt.smooth_grad.min())) / (1.0 + eta * tau), 0)

        return self.search(obj, pt, t, propose, lambda a, b, eta: _curvature(a, b) <= kl_divergence(b.p, a.p) / eta)


@dataclass
class ProximalGradient(_Backtracking):
    """Proximal gradient in the Euclidean metric: `p⁺ = argmin_{q ∈ Δ} ½‖q − (p − η∇G(p))‖² + ητ Σ q log q`
    (the exact simplex projection when τ = 0). Backtracking test: ⟨∇G(p⁺) − ∇G(p), p⁺ − p⟩ ≤ ‖p⁺ − p‖²/(2η),
    which implies G(p⁺) ≤ G(p) + ⟨∇G(p), p⁺ − p⟩ + ‖p⁺ − p‖²/(2η)."""

    name: ClassVar[str] = "projected-gradient"

    def step(self, obj: SimplexObjective, pt: Point, t: int) -> Point:
        def propose(eta: float) -> Tensor:
            v = pt.p - eta * pt.smooth_grad
            if not bool(torch.isfinite(v.abs().sum())):  # (the projection sums the entries)
                raise NumericalFailure(f"projected-gradient step p - lr * grad overflowed at lr {eta:g}; lower lr")
            return prox_entropy_simplex(v, eta * obj.entropy) if obj.entropy else project_simplex(v)

        return self.search(obj, pt, t, propose,
                           lambda a, b, eta: _curvature(a, b) <= float(((b.p - a.p) ** 2).sum()) / (2.0 * eta))


@dataclass
class SoftmaxGradient(_Backtracking):
    """Gradient descent on logits θ, p = softmax(θ): `θ ← θ − η p ⊙ (∇F − p·∇F)` (θ = log p up to a shift).
    Backtracking (F(softmax θ) is not convex in θ, so values are needed): Armijo's test
    φ(η) ≤ φ(0) − (η/2)‖∇_θ‖² for φ(η) = F(θ − η∇_θ), or, once φ(η) ≤ φ(0) + 1e-12(1 + |φ(0)|) is all rounding
    can tell, Hager–Zhang's approximate form φ′(η) = −∇_θF(θ⁺)·∇_θF(θ) ≤ 0. Only objectives with an entropy
    term: elsewhere the minimiser may lie on a face, which p = softmax(θ) > 0 reaches only as θ → −∞, with a
    gap falling like 1/t. Its Hessian near p* is ≈ τ(diag p* − p*p*ᵀ), so its rate degrades with
    max p*/min p* (exponentiated gradient is the same step preconditioned by 1/p, and does not)."""

    name: ClassVar[str] = "softmax-gd"
    needs_entropy: ClassVar[bool] = True
    multiplicative: ClassVar[bool] = True

    def step(self, obj: SimplexObjective, pt: Point, t: int) -> Point:
        g_theta = _logit_grad(pt)
        logp, f0, sq = safe_log(pt.p), float(obj.value(pt.p)), float(g_theta @ g_theta)

        def accept(a: Point, b: Point, eta: float) -> bool:
            f1 = float(obj.value(b.p))
            return f1 <= f0 - 0.5 * eta * sq or (f1 <= f0 + 1e-12 * (1.0 + abs(f0))
                                                 and float(_logit_grad(b) @ g_theta) >= 0.0)

        return self.search(obj, pt, t, lambda eta: torch.softmax(logp - eta * g_theta, 0), accept)


def _logit_grad(pt: Point) -> Tensor:
    """∇_θ F(softmax θ) = p ⊙ (∇F − p·∇F)."""
    return pt.p * (pt.grad - pt.p @ pt.grad)


METHODS: dict[str, type[FrankWolfe] | type[_Backtracking]] = {
    m.name: m for m in (FrankWolfe, MirrorDescent, ProximalGradient, SoftmaxGradient)}


def suitable_methods(obj: SimplexObjective, p0: Tensor | None = None) -> tuple[str, ...]:
    """The methods that solve `obj` from `p0`: all but those that need an entropy term (softmax-gd) when `obj`
    has none, and the multiplicative ones when p0 has zero entries."""
    zeros = p0 is not None and bool((p0 <= 0).any())
    return tuple(name for name, cls in METHODS.items()
                 if (not cls.needs_entropy or obj.entropy > 0) and not (cls.multiplicative and zeros))


def check_method(method: str, obj: SimplexObjective, p0: Tensor | None = None) -> str:
    """`method` if it can solve `obj` from `p0`, else `BadInput` naming the methods that can."""
    cls = METHODS[choose("method", method, METHODS)]
    if cls.needs_entropy and not obj.entropy:
        raise BadInput(f"{method} cannot solve objective {obj.name!r}: its minimiser may lie on a face of the "
                       "simplex, which softmax(θ) > 0 reaches only as θ → −∞ (gap ~ 1/t); it needs an entropy "
                       "term (softmax, kl); use " + ", ".join(suitable_methods(obj)))
    if cls.multiplicative and p0 is not None and bool((p0 <= 0).any()):
        raise BadInput(f"{method} multiplies p, so zero entries of the initial point p0 stay zero: give p0 > 0 "
                       "everywhere, or use " + ", ".join(n for n, c in METHODS.items() if not c.multiplicative))
    return method


def make_method(method: str, *, lr: float = 1.0, step: str = "away", backtrack: bool = True) -> SimplexMethod:
    """A method by name: Frank–Wolfe takes its `step` rule, the gradient methods `lr` and `backtrack`."""
    return METHODS[choose("method", method, METHODS)].create(lr=lr, step=step, backtrack=backtrack)


def _check_grad(pt: Point, t: int) -> Point:
    if not pt.finite:
        raise BadInput(f"objective gradient is not finite at iteration {t}: grad={pt.grad.tolist()[:8]} "
                       f"at p={pt.p.tolist()[:8]}")
    return pt


@dataclass
class SimplexResult:
    """Final point, per-iteration trace rows {iter, objective, gap}, iterations run, and convergence flag."""

    p: Tensor
    trace: list[dict[str, Any]] = field(default_factory=list)
    iters: int = 0
    converged: bool = False
    seconds: float = 0.0


class SimplexRun:
    """An iterative solve in progress: point `p`, iteration `t`, and whether it has converged.

    `iterate(k)` runs up to `k` iterations and returns the trace rows `{iter, objective, gap}` of the logged
    ones (every `log_every`-th, the first, and the last; `objective` left out when F's value is unknown); the
    run stops at gap ≤ `tol` or after `iters`. `seconds` counts the time spent in the method's steps only
    (logging excluded); with `timed`, rows carry it too.
    """

    def __init__(self, obj: SimplexObjective, method: str, *, p0: Tensor | None = None, iters: int = ITERS,
                 tol: float = TOL, lr: float = 1.0, step: str = "away", backtrack: bool = True,
                 log_every: int = 1, timed: bool = False) -> None:
        require(iters >= 0, f"iters must be >= 0, got {iters}")
        require(math.isfinite(tol), f"tol must be a finite number (negative: never stop early), got {tol}")
        require(log_every >= 1, f"log_every must be >= 1, got {log_every}")
        p = torch.full((obj.dim,), 1.0 / obj.dim, dtype=torch.float64) if p0 is None else p0.to(torch.float64)
        require(p.numel() == obj.dim, f"p0 has {p.numel()} entries, the objective has {obj.dim}")
        p = check_simplex(p.clone(), "initial point p0").clamp_min(0.0)
        check_method(method, obj, p)
        self.method = make_method(method, lr=lr, step=step, backtrack=backtrack)
        self.obj, self.iters, self.tol, self.log_every, self.timed = obj, iters, tol, log_every, timed
        self.point = _check_grad(evaluate(obj, p / p.sum()), 0)
        self.t, self.converged, self.finished, self.gap, self.seconds = 0, False, False, math.inf, 0.0

    @property
    def p(self) -> Tensor:
        return self.point.p

    def row(self) -> dict[str, Any]:
        """The trace row of the current iterate."""
        value = float(self.obj.value(self.p))
        return {"iter": self.t, **({"seconds": self.seconds} if self.timed else {}),
                **({"objective": value} if math.isfinite(value) else {}), "gap": self.gap}

    def iterate(self, k: int) -> list[dict[str, Any]]:
        """Up to `k` iterations (each: gap, log, stop test, step)."""
        rows: list[dict[str, Any]] = []
        for _ in range(k):
            if self.finished:
                break
            self.gap = fw_gap(self.p, self.point.grad)
            self.converged = self.gap <= self.tol
            self.finished = self.converged or self.t == self.iters
            if self.t % self.log_every == 0 or self.finished:
                rows.append(self.row())
            if self.finished:
                break
            start = time.perf_counter()
            self.point = _check_grad(self.method.step(self.obj, self.point, self.t), self.t + 1)
            self.seconds += time.perf_counter() - start
            self.t += 1
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "t": self.t, "converged": self.converged, "finished": self.finished, "gap": self.gap,
                "seconds": self.seconds, "method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.point = _check_grad(evaluate(self.obj, state["p"].to(torch.float64)), int(state["t"]))
        self.t, self.seconds = int(state["t"]), float(state.get("seconds", 0.0))
        self.converged, self.finished, self.gap = bool(state["converged"]), bool(state["finished"]), state["gap"]
        self.method.load_state_dict(state.get("method", {}))


def solve_simplex(obj: SimplexObjective, method: str = "frank-wolfe", *, p0: Tensor | None = None,
                  iters: int = ITERS, tol: float = TOL, lr: float = 1.0, step: str = "away", backtrack: bool = True,
                  log_every: int = 1, progress: Callable[..., None] | None = None) -> SimplexResult:
    """Minimise `obj` over Δⁿ⁻¹ with `method` from the uniform point (or `p0`) for at most `iters` iterations.

    Each logged iteration records `{iter, objective, gap}`; the run stops as soon as gap ≤ `tol`. `lr` is the
    (initial) step of the gradient methods, adapted by backtracking unless `backtrack` is False; `step` the
    Frank–Wolfe rule (`away`, `line-search`, `open-loop`).
    """
    run = SimplexRun(obj, method, p0=p0, iters=iters, tol=tol, lr=lr, step=step, backtrack=backtrack,
                     log_every=log_every)
    res = SimplexResult(run.p)
    while not run.finished:
        res.trace += run.iterate(log_every)
        if progress is not None:
            progress(run.t, iters, gap=run.gap)
    res.p, res.iters, res.converged, res.seconds = run.p, run.t, run.converged, run.seconds
    return res
