"""Adaptive embedded Runge–Kutta integration with a per-sample step size.

Every sample b carries its own time t_b, step size h_b, error history and counters. One iteration
tries a step for all samples at once:

    h_try = min(h_b, |target_b - t_b|)            (step clipping: land exactly on save times / t_end;
                                                   after such a landing the unclipped h_b is kept)
    x'    = x + h * sum_i b_i k_i,   e = h * sum_i (b_i - b_low_i) k_i
    err_b = sqrt(mean_j (e_j / (atol + rtol * max(|x_j|, |x'_j|)))^2)      (over the non-batch dims)
    accept_b = active_b and err_b <= 1 and x' finite

and updates x, t, the first-same-as-last stage and the controller state with `torch.where` — never a
Python branch on tensor values. Finished samples (reached t_end, or out of steps) get h = 0, are frozen,
and their NFE stops counting, so a sample's result and statistics do not depend on its batch-mates.
The host synchronises once per `chunk` iterations, to test "all done".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from gentool.core.solvers.controllers import ERR_FLOOR, StepController
from gentool.core.solvers.errors import MaxStepsExceeded, NonFiniteState
from gentool.core.solvers.tableau import ButcherTableau
from gentool.core.solvers.term import Field, broadcast_to_state

CHUNK = 8
H_UNDERFLOW = 1e-13  # relative to max(|t|, 1): below this the step size has collapsed


def rms_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample root-mean-square over all non-batch dims: (B, ...) -> (B,)."""
    return v.reshape(v.shape[0], -1).pow(2).mean(dim=1).sqrt()


@dataclass
class AdaptiveState:
    """Per-sample solver state; every field is a device tensor with leading dim B."""

    x: torch.Tensor
    k1: torch.Tensor
    t: torch.Tensor
    h: torch.Tensor  # step-size magnitude
    err_prev: torch.Tensor
    idx: torch.Tensor  # index of the next target time
    active: torch.Tensor
    nfe: torch.Tensor
    accepted: torch.Tensor
    rejected: torch.Tensor
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


@dataclass(frozen=True)
class AdaptiveProblem:
    """What stays fixed during a solve."""

    f: Field
    tableau: ButcherTableau
    targets: torch.Tensor  # (T,) times to land on; the last one is t_end
    direction: float
    rtol: float
    atol: float
    controller: StepController
    max_steps: int
    xs: torch.Tensor | None  # (T, B, ...) buffer for save="times"
    keep_history: bool
    span: float  # |t_end - t_0|
    h0: float | None  # first step size; None: Hairer's estimate


def initial_step(f: Field, x0: torch.Tensor, f0: torch.Tensor, t0: torch.Tensor, direction: float,
                 span: float, tableau: ButcherTableau, rtol: float, atol: float) -> torch.Tensor:
    """Hairer–Nørsett–Wanner starting step (one extra field call), per sample.

    d0 = ||x0||, d1 = ||f0||, h0 = 0.01 d0/d1 (1e-6 if tiny), d2 = ||f(t0+h0, x0+h0 f0) - f0|| / h0,
    h1 = (0.01 / max(d1, d2))^(1/(q+1)), h = min(100 h0, h1, |t_end - t0|), norms scaled by atol + rtol|x0|.
    """
    scale = atol + rtol * x0.abs()
    d0, d1 = rms_norm(x0 / scale), rms_norm(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    x1 = x0 + broadcast_to_state(direction * h0, x0) * f0
    f1 = f(t0 + direction * h0, x1)
    d2 = rms_norm((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp_min(h0 * 1e-3, 1e-6),
                     (0.01 / dmax).pow(1.0 / (tableau.error_order + 1)))
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, span))


def initial_state(p: AdaptiveProblem, x0: torch.Tensor) -> AdaptiveState:
    """The state at t_0: k1 = f(t_0, x0), the first step size (`h0`, or Hairer's estimate: one more field
    call), zero counters; the save buffer (if any) is reset to x0. No host synchronisation."""
    batch, dev = x0.shape[0], x0.device
    t0 = p.targets[0].expand(batch).clone()
    k1 = p.f(t0, x0)
    if p.h0 is None:
        with torch.no_grad():  # step sizes are not differentiated (sqrt of a zero norm has no derivative)
            h = initial_step(p.f, x0.detach(), k1.detach(), t0, p.direction, p.span, p.tableau, p.rtol, p.atol)
        nfe0 = 2
    else:
        h, nfe0 = torch.full((batch,), min(abs(p.h0), p.span), dtype=x0.dtype, device=dev), 1
    if p.xs is not None:
        p.xs.copy_(x0.unsqueeze(0).expand_as(p.xs))
    zeros = torch.zeros(batch, dtype=torch.long, device=dev)
    return AdaptiveState(x=x0, k1=k1, t=t0, h=h, err_prev=torch.full_like(h, ERR_FLOOR), idx=zeros + 1,
                         active=torch.ones(batch, dtype=torch.bool, device=dev), nfe=zeros + nfe0,
                         accepted=zeros.clone(), rejected=zeros.clone())


def weighted_sum(ks: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor | None:
    """`sum_j w_j k_j` over the nonzero weights (fused in-place adds); None when all weights are zero."""
    terms = [(w, k) for w, k in zip(weights, ks, strict=False) if w != 0.0]
    if not terms:
        return None
    (w0, k0), *rest = terms
    out = k0 * w0
    for w, k in rest:
        out.add_(k, alpha=w)
    return out


def _stages(p: AdaptiveProblem, s: AdaptiveState, hs: torch.Tensor, t_next: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evaluate the stages; return (x', error vector, last stage k)."""
    tab, hb = p.tableau, broadcast_to_state(hs, s.x)
    ks = [s.k1] if tab.fsal else [p.f(s.t, s.x)]
    x_in = s.x
    for c, row in zip(tab.c[1:], tab.a[1:], strict=True):
        incr = weighted_sum(ks, row)
        x_in = s.x if incr is None else torch.addcmul(s.x, hb, incr)
        ks.append(p.f(t_next if c == 1.0 else s.t + c * hs, x_in))
    # first-same-as-last: the last row of `a` equals `b`, so the last stage input is x'
    x_new = x_in if tab.fsal else torch.addcmul(s.x, hb, weighted_sum(ks, tab.b))
    return x_new, hb * weighted_sum(ks, tab.b_err), ks[-1]


def attempt_step(p: AdaptiveProblem, s: AdaptiveState) -> None:
    """Try one step for every active sample and update the state in place (masked, no host sync)."""
    target = p.targets[s.idx.clamp_max(len(p.targets) - 1)]
    remaining = (target - s.t) * p.direction
    hits = s.active & (s.h >= remaining)
    h_try = torch.where(s.active, torch.where(hits, remaining, s.h), torch.zeros_like(s.h))
    hs = p.direction * h_try
    t_next = torch.where(hits, target, s.t + hs)
    x_new, err_vec, k_last = _stages(p, s, hs, t_next)
    # the error only chooses steps: not differentiated (backpropagation runs through the accepted steps)
    scale = p.atol + p.rtol * torch.maximum(s.x.detach().abs(), x_new.detach().abs())
    err = rms_norm(err_vec.detach() / scale)
    finite = torch.isfinite(err) & torch.isfinite(x_new).reshape(x_new.shape[0], -1).all(dim=1)
    err = torch.where(finite, err, torch.full_like(err, float("inf")))  # non-finite trial: reject, shrink
    accept = s.active & (err <= 1.0)
    acc_b = broadcast_to_state(accept, s.x)
    s.nfe += s.active * (p.tableau.stages - (1 if p.tableau.fsal else 0))
    s.accepted += accept
    s.rejected += s.active & ~accept
    s.x = torch.where(acc_b, x_new, s.x)
    s.t = torch.where(accept, t_next, s.t)
    if p.tableau.fsal:
        s.k1 = torch.where(acc_b, k_last, s.k1)
    fac = p.controller.factor(err, s.err_prev, accept, p.tableau.error_order)
    landed = accept & hits
    # a step shortened to land on a target must not shrink the next one: keep the unclipped proposal
    h_new = torch.where(landed, torch.maximum(h_try * fac, s.h), h_try * fac)
    s.h = torch.where(s.active, h_new, s.h)
    s.err_prev = torch.where(accept, err.clamp_min(ERR_FLOOR), s.err_prev)
    if p.xs is not None:
        rows, cols = s.idx.clamp_max(len(p.targets) - 1), torch.arange(s.x.shape[0], device=s.x.device)
        p.xs[rows, cols] = torch.where(broadcast_to_state(landed, s.x), s.x, p.xs[rows, cols])
    s.idx = s.idx + landed
    s.active = (s.idx < len(p.targets)) & (s.accepted + s.rejected < p.max_steps)
    if p.keep_history:
        s.history.append((s.x, s.t, accept))


def predicted_steps(p: AdaptiveProblem, s: AdaptiveState) -> torch.Tensor:
    """A lower bound on the iterations still needed: max over active samples of the fewest steps that
    can cover r = |t_end - t| when the step size may grow by at most g = fac_max per step,

        n_b = ceil(log(1 + r_b (g - 1) / h_b) / log g)       (h + g h + ... + g^(n-1) h >= r).

    Running a chunk of at most this many iterations never runs an iteration after every sample is done.
    """
    g = p.controller.fac_max
    remaining = ((p.targets[-1] - s.t) * p.direction).clamp_min(0.0)
    ratio = remaining / s.h.clamp_min(torch.finfo(s.h.dtype).tiny)
    steps = (torch.log1p(ratio * (g - 1.0)) / math.log(g)).ceil()
    return torch.nan_to_num(torch.where(s.active, steps, 0.0), posinf=CHUNK).max()


def chunk_length(predicted: float) -> int:
    """The next chunk: min(CHUNK, the predicted remaining iterations), at least 1."""
    return int(min(max(predicted, 1.0), CHUNK))


def start_status(s: AdaptiveState, p: AdaptiveProblem) -> torch.Tensor:
    """(first field value finite, predicted remaining iterations): read with the first host sync."""
    return torch.stack([torch.isfinite(s.k1).all().to(s.h.dtype), predicted_steps(p, s)])


def chunk_status(p: AdaptiveProblem, s: AdaptiveState) -> torch.Tensor:
    """(active, reached t_end, collapsed, most accepted steps, predicted remaining iterations): the one
    vector read from the device after each chunk."""
    return torch.stack([s.active.sum(), (s.idx >= len(p.targets)).sum(), collapsed(s).sum(), s.accepted.max(),
                        predicted_steps(p, s)])


class Chunks(Protocol):
    """Runs n masked iterations on a state without host synchronisation, and reports its status."""

    def run(self, n: int) -> None: ...

    def status(self) -> torch.Tensor: ...


@dataclass
class EagerChunks:
    """Chunks run eagerly, one `attempt_step` after the other."""

    p: AdaptiveProblem
    s: AdaptiveState

    def run(self, n: int) -> None:
        for _ in range(n):
            attempt_step(self.p, self.s)

    def status(self) -> torch.Tensor:
        return chunk_status(self.p, self.s)


def collapsed(s: AdaptiveState) -> torch.Tensor:
    """Active samples whose step size collapsed (NaN/inf field or a singularity): (B,) bool."""
    return s.active & ~(s.h > H_UNDERFLOW * s.t.abs().clamp_min(1.0))


def raise_collapsed(s: AdaptiveState) -> None:
    """Raise `NonFiniteState` naming the first collapsed sample, its step index and time."""
    b = int(collapsed(s).nonzero()[0, 0])
    step, t = int(s.accepted[b] + s.rejected[b]), float(s.t[b])
    raise NonFiniteState(f"step size collapsed (non-finite or singular field) for sample {b} at step {step}, "
                         f"t={t:.6g}; check the field for NaN/inf or loosen rtol/atol", step=step, time=t)


def integrate(p: AdaptiveProblem, s: AdaptiveState, chunks: Chunks, first_chunk: int, on_max_steps: str,
              progress: Callable[..., None] | None) -> AdaptiveState:
    """Run chunks of at most `CHUNK` masked iterations until every sample is done.

    One host synchronisation per chunk: it reads the chunk status (`chunk_status`) together with the next
    chunk length, min(CHUNK, a lower bound on the remaining steps), so no chunk runs an iteration in which
    every sample is already done (each one would cost a full set of stage evaluations). `chunks` runs the
    iterations eagerly or by replaying captured CUDA graphs (`adaptive_graph.py`); `s` is the state it
    updates.
    """
    batch, chunk = s.x.shape[0], first_chunk
    while True:
        chunks.run(chunk)
        n_active, n_reached, n_bad, most, pred = chunks.status().tolist()  # the one host sync per chunk
        if progress is not None:
            progress(int(n_reached), batch, steps=int(most))
        if n_bad:
            raise_collapsed(s)
        if n_active == 0:
            break
        chunk = chunk_length(pred)
    if n_reached < batch and on_max_steps == "raise":
        b = int((s.idx < len(p.targets)).nonzero()[0, 0])
        raise MaxStepsExceeded(f"max_steps={p.max_steps} exceeded for {batch - int(n_reached)} of {batch} "
                               f"samples (first: sample {b} at t={float(s.t[b]):.6g}); raise max_steps, "
                               f"loosen rtol/atol, or pass on_max_steps='return'")
    return s
