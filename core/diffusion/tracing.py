"""Run a sampler definition once on symbolic values to record its plan.

A sampler (`sampler_defs.py`) is a generator `fn(model, noise, x, sigmas, **options)` that yields the state
after every grid step. Every value it forms is linear in the state, the model outputs and the noise draws,
with coefficients that are functions of the sigmas. Run on concrete tensors it *is* the eager sampler
(gradients reach the sigmas and tensor options). Run here on `Lin` values, it records which model calls
happen at which sigma on which combination, and how each new state is combined:

    Lin   a linear combination  sum_r c_r v_r  of recorded values v_r (coefficients are floats here)

A combination becomes a recorded value of its own ("is materialised") when it is fed to the model, yielded
as a state, or read in a later step than the one that formed it; `Lin` objects are updated in place to
point at it, so the definition's variables stay small. `record(...)` then cuts the record at the yields
into the solver core's `StepSpec`s: within a step, values are the registers X (the previous state),
K(s) (model outputs), I(s) (model inputs), Z(k) (noise draws) and H(j) (values kept from earlier steps,
found by a backward liveness pass; what a step keeps may itself be a combination). A combination reads an
earlier model input of its step as I(s) where that takes fewer terms than writing it out (a noised state
that a Heun step reuses: one register instead of the state and the noise), else inlines it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from gentool.core.solvers.plan import H, I, K, Reg, StepSpec, X, Zk, stage, step


class Kind(Enum):
    """What a recorded value is."""

    INITIAL = "initial"  # the starting state
    MODEL = "model"  # a model output
    NOISE = "noise"  # a standard normal draw
    STATE = "state"  # a yielded state
    COMBINED = "combined"  # a materialised combination (model input, or a value read by a later step)


@dataclass
class Value:
    kind: Kind
    step: int  # the step that forms it
    expansion: dict[int, float] = field(default_factory=dict)  # for STATE / COMBINED: sum c_r v_r


@dataclass
class Call:
    """A model call at `sigma` on value `input`, giving value `output`."""

    sigma: float
    input: int
    output: int


class Trace:
    """The record of one run of a sampler on symbolic values."""

    def __init__(self) -> None:
        self.values: list[Value] = [Value(Kind.INITIAL, -1)]
        self.calls: list[list[Call]] = [[]]
        self.draws: list[list[int]] = [[]]
        self.pairs: list[tuple[float, float]] = []  # (sigma, sigma_next) of every noise draw, in order
        self.step = 0

    def new(self, kind: Kind, expansion: dict[int, float] | None = None, step: int | None = None) -> int:
        self.values.append(Value(kind, self.step if step is None else step, dict(expansion or {})))
        return len(self.values) - 1

    def materialise(self, lin: Lin, kind: Kind) -> int:
        """The value `lin` stands for (a new one unless it is a single value with coefficient 1)."""
        if kind is not Kind.STATE and len(lin.terms) == 1 and next(iter(lin.terms.values())) == 1.0:
            return next(iter(lin.terms))
        v = self.new(kind, lin.terms, step=lin.step if kind is Kind.COMBINED else None)
        lin.terms = {v: 1.0}
        return v

    def model(self, lin: Lin, sigma: float) -> Lin:
        src = self.materialise(lin, Kind.COMBINED)
        out = self.new(Kind.MODEL)
        self.calls[-1].append(Call(float(sigma), src, out))
        return Lin(self, {out: 1.0})

    def noise(self, sigma: float, sigma_next: float) -> Lin:
        out = self.new(Kind.NOISE)
        self.draws[-1].append(out)
        self.pairs.append((float(sigma), float(sigma_next)))
        return Lin(self, {out: 1.0})

    def end_step(self, lin: Lin) -> None:
        self.materialise(lin, Kind.STATE)
        self.step += 1
        self.calls.append([])
        self.draws.append([])

    def current(self, lin: Lin) -> dict[int, float]:
        """The terms of `lin`, materialised first if it was formed in an earlier step (so that a later
        step reads one kept value, not the registers it was made of)."""
        if lin.step < self.step and len(lin.terms) > 1:
            self.materialise(lin, Kind.COMBINED)
        return lin.terms


class Lin:
    """A symbolic value: `sum c_r v_r` over recorded values (linear arithmetic with scalars only)."""

    __slots__ = ("trace", "terms", "step")

    def __init__(self, trace: Trace, terms: dict[int, float]) -> None:
        self.trace, self.terms, self.step = trace, terms, trace.step

    def _combine(self, other: Lin, sign: float) -> Lin:
        if not isinstance(other, Lin):
            raise TypeError("a sampler may only add values to values (plans are linear), not constants")
        out = dict(self.trace.current(self))
        for r, c in self.trace.current(other).items():
            out[r] = out.get(r, 0.0) + sign * c
        return Lin(self.trace, {r: c for r, c in out.items() if c != 0.0})

    def _scale(self, a: float) -> Lin:
        a = float(a)
        return Lin(self.trace, {r: a * c for r, c in self.trace.current(self).items() if a * c != 0.0})

    def __add__(self, other: Lin) -> Lin:
        return self._combine(other, 1.0)

    def __sub__(self, other: Lin) -> Lin:
        return self._combine(other, -1.0)

    def __neg__(self) -> Lin:
        return self._scale(-1.0)

    def __mul__(self, a: float) -> Lin:
        return self._scale(a)

    __rmul__ = __mul__

    def __truediv__(self, a: float) -> Lin:
        return self._scale(1.0 / float(a))


class SymbolicModel:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def __call__(self, x: Lin, sigma: float) -> Lin:
        return self.trace.model(x, sigma)


class SymbolicNoise:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def __call__(self, sigma: float, sigma_next: float) -> Lin:
        return self.trace.noise(sigma, sigma_next)


@dataclass(frozen=True)
class Recording:
    """A sampler's steps on one grid, the (sigma, sigma_next) of each noise draw, and the NFE."""

    steps: tuple[StepSpec, ...]
    noise_pairs: tuple[tuple[float, float], ...]
    nfe: int


def record(fn: Callable[..., Iterator], sigmas: list[float], options: dict) -> Recording:
    """Run `fn` on symbolic values along `sigmas` and cut the record into one `StepSpec` per step."""
    trace = Trace()
    for x in fn(SymbolicModel(trace), SymbolicNoise(trace), Lin(trace, {0: 1.0}), sigmas, **options):
        trace.end_step(x)
    n = trace.step
    if n != len(sigmas) - 1:
        raise ValueError(f"the sampler yielded {n} states for a grid of {len(sigmas) - 1} steps")
    states = [0] + [i for i, v in enumerate(trace.values) if v.kind is Kind.STATE]
    live = _live_in(trace, states, n)
    specs = [_step_spec(trace, i, states, live) for i in range(n)]
    return Recording(tuple(specs), tuple(trace.pairs), sum(len(c) for c in trace.calls))


def _refs(trace: Trace, i: int, states: list[int], expansion: dict[int, float], out: set[int]) -> None:
    """Values formed before step i (other than its starting state) that `expansion` reads."""
    for r in expansion:
        v = trace.values[r]
        if r == states[i]:
            continue
        if v.step == i and v.kind in (Kind.COMBINED, Kind.STATE):
            _refs(trace, i, states, v.expansion, out)
        elif v.step < i:
            out.add(r)


def _step_expansions(trace: Trace, i: int, states: list[int]) -> list[dict[int, float]]:
    calls = [trace.values[c.input].expansion if trace.values[c.input].step == i and
             trace.values[c.input].kind is Kind.COMBINED else {c.input: 1.0} for c in trace.calls[i]]
    return [*calls, trace.values[states[i + 1]].expansion]


def _live_in(trace: Trace, states: list[int], n: int) -> list[list[int]]:
    """For each step (and a final empty entry): the values it must find kept, most recent first."""
    live: list[set[int]] = [set() for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        refs: set[int] = set()
        for e in _step_expansions(trace, i, states):
            _refs(trace, i, states, e, refs)
        carried = {r for r in live[i + 1] if trace.values[r].step < i and r != states[i]}
        live[i] = refs | carried
    return [sorted(s, reverse=True) for s in live]


def _local(trace: Trace, i: int, states: list[int], live: list[list[int]], expansion: dict[int, float],
           inputs: dict[int, Reg], scale: float = 1.0, out: dict[Reg, float] | None = None) -> dict[Reg, float]:
    """`expansion` in the registers of step i: X, H(j), Z(k), K(s), and I(s) for the model inputs in `inputs`;
    other combinations formed in step i inline."""
    out = {} if out is None else out
    draws, outputs = trace.draws[i], [c.output for c in trace.calls[i]]
    for r, c in expansion.items():
        v, w = trace.values[r], scale * c
        if r == states[i]:
            reg = X
        elif r in inputs:
            reg = inputs[r]
        elif r in live[i]:
            reg = H(live[i].index(r))
        elif v.kind is Kind.NOISE and r in draws:
            reg = Zk(draws.index(r))
        elif v.kind is Kind.MODEL and r in outputs:
            reg = K(outputs.index(r))
        elif v.step == i and v.kind in (Kind.COMBINED, Kind.STATE):
            _local(trace, i, states, live, v.expansion, inputs, w, out)
            continue
        else:
            raise ValueError(f"value {r} ({v.kind.value}, step {v.step}) is not available in step {i}")
        out[reg] = out.get(reg, 0.0) + w
    return out


def _fewest(trace: Trace, i: int, states: list[int], live: list[list[int]], expansion: dict[int, float],
            stages: int) -> dict[Reg, float]:
    """`expansion` in the registers of step i with the fewest terms: each model input of its first `stages`
    stages (a combination formed in step i) read as I(s) or written out (ties: written out)."""
    calls = trace.calls[i][:stages]
    formed = [(c.input, I(s)) for s, c in enumerate(calls)
              if trace.values[c.input].step == i and trace.values[c.input].kind is Kind.COMBINED]
    best = _local(trace, i, states, live, expansion, {})
    for k in range(1, len(formed) + 1):
        for chosen in itertools.combinations(formed, k):
            terms = _local(trace, i, states, live, expansion, dict(chosen))
            if len(terms) < len(best):
                best = terms
    return best


def _step_spec(trace: Trace, i: int, states: list[int], live: list[list[int]]) -> StepSpec:
    *inputs, update = _step_expansions(trace, i, states)
    n = len(inputs)
    stages = [stage(c.sigma, _fewest(trace, i, states, live, e, s))
              for s, (c, e) in enumerate(zip(trace.calls[i], inputs, strict=True))]
    keep = [_fewest(trace, i, states, live, {r: 1.0}, n) for r in live[i + 1]]
    return step(stages, _fewest(trace, i, states, live, update, n), keep, draws=len(trace.draws[i]))
