"""Linear-combination plans: one step format for Runge–Kutta, multistep, exponential and stochastic methods.

A step maps the state x_i to x_{i+1} with a few *registers*:

    X       the state x_i
    H(j)    values kept from earlier steps (multistep history), most recent first
    Z(k)    the k-th standard normal draw of this step (stochastic plans; drawn before the solve by a
            noise sampler, so every runner sees the same numbers); `Z` is Z(0)
    I(s)    the input of stage s of this step (a value a later combination may reuse, e.g. a noised state)
    K(s)    the output of stage s of this step

Stage s evaluates the term at a precomputed time,   K(s) = F(t_s, I(s)),  I(s) = sum_r a_sr r   (r over X, H,
Z, I(<s), K(<s)),
the step ends with   x_{i+1} = sum_r b_r r   and keeps   H'_j = sum_r c_jr r   for the next step (most
often a single register: no arithmetic).

A Butcher tableau is the case a_sX = b_X = 1, a_sK(j) = h a_sj, b_K(s) = h b_s (no history); Euler on a
sigma-form denoiser is x' = (s'/s) x + (1 - s'/s) D(x, s); DPM-Solver++(2M) adds a history register for
the previous D; DDIM with eta > 0 adds s_up Z. Builders write steps symbolically (`StepSpec`, with `X`,
`Z`, `H(j)`, `K(s)`); `make_plan` turns them into register indices, stage-time tensors and the cheapest
kernel for each combination, once, on the host (float64 Python floats): the loop that runs a plan
(`runner.py`) has no host synchronisation and no Python work that scales with the batch.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import torch


class Slot(IntEnum):
    """Where a register lives."""

    STATE = 0
    HISTORY = 1
    NOISE = 2
    STAGE = 3
    INPUT = 4


@dataclass(frozen=True)
class Reg:
    """A symbolic register: the state, the j-th kept value, the noise draw, or the s-th stage's output or input."""

    slot: Slot
    index: int = 0


X = Reg(Slot.STATE)
Z = Reg(Slot.NOISE)


def Zk(k: int) -> Reg:
    """The k-th standard normal draw of the current step (Z = Zk(0))."""
    return Reg(Slot.NOISE, k)


def H(j: int) -> Reg:
    """The j-th value kept from earlier steps (0 = most recent)."""
    return Reg(Slot.HISTORY, j)


def K(s: int) -> Reg:
    """The output of stage s of the current step."""
    return Reg(Slot.STAGE, s)


def I(s: int) -> Reg:  # noqa: E743 - the plan notation's name
    """The input of stage s of the current step (what the term was evaluated on)."""
    return Reg(Slot.INPUT, s)


Terms = tuple[tuple[Reg, float], ...]


def terms(weights: Mapping[Reg, float]) -> Terms:
    """The nonzero entries of `weights`, in insertion order."""
    return tuple((r, float(w)) for r, w in weights.items() if w != 0.0)


@dataclass(frozen=True)
class StageSpec:
    """Evaluate the term at `time` on `sum_r w_r r`."""

    time: float
    inputs: Terms


@dataclass(frozen=True)
class StepSpec:
    """One step: its stages, the new state `sum_r w_r r`, and the values kept for the next step (each a
    combination of registers; usually one register)."""

    stages: tuple[StageSpec, ...]
    update: Terms
    keep: tuple[Terms, ...] = ()
    draws: int = 0  # noise draws taken by the step (at least every Z(k) it reads)


def stage(time: float, weights: Mapping[Reg, float]) -> StageSpec:
    return StageSpec(float(time), terms(weights))


def step(stages: Sequence[StageSpec], update: Mapping[Reg, float],
         keep: Sequence[Reg | Mapping[Reg, float]] = (), draws: int = 0) -> StepSpec:
    kept = tuple(((k, 1.0),) if isinstance(k, Reg) else terms(k) for k in keep)
    return StepSpec(tuple(stages), terms(update), kept, draws)


class Head(IntEnum):
    """How a combination starts; every later term is one fused in-place kernel of the same kind."""

    COPY = 0  # out = r_first                                  (one term with coefficient 1: no kernel)
    ADD = 1  # out = r_first + w r_j, then out += w r_k        (a coefficient is exactly 1)
    LERP = 2  # out = lerp(r_first, r_j, w), then out.lerp_, then out += w r_k   (some coefficients sum to 1)
    SCALE = 3  # out = w r_first, then out += w r_k


AFFINE_RTOL = 1e-14  # |sum c - 1| <= AFFINE_RTOL * sum |c|: evaluated as a chain of lerps
MIN_PARTIAL = 1e-6  # a lerp chain needs its partial sums away from 0 (relative to max |c|)


@dataclass(frozen=True)
class Combination:
    """`sum_(j, c) in terms  c regs[j]` over a step's flat register list.

    Eagerly it costs n - 1 kernels for n terms when a coefficient is 1 (`ADD`: adds with `alpha`) or when
    some of the coefficients (at least two) sum to 1 (`LERP`: with partial sums S_k = c_1 + ... + c_k of
    that affine part, the chain out_k = lerp(out_{k-1}, r_k, c_k / S_k) is exactly its sum c_k r_k, then
    the other terms are added; every denoiser-form sampler update is of this kind, a stochastic one adding
    its noise), else n (`SCALE`). Compiled plans use `terms` as plain arithmetic instead (`compile.py`).
    """

    terms: tuple[tuple[int, float], ...]
    head: Head
    first: int
    scale: float
    ops: tuple[tuple[int, float], ...]
    adds: tuple[tuple[int, float], ...] = ()  # LERP: the terms outside the affine part, added after the chain

    def __call__(self, regs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.function(regs)

    @functools.cached_property
    def function(self) -> Callable[[Sequence[torch.Tensor]], torch.Tensor]:
        """`statements` as a function of the register list (made on first use): the one definition of the
        kernels, which `straight_line` inlines into a whole solve."""
        names = [f"regs[{j}]" for j in range(1 + max(j for j, _ in self.terms))]
        body = "".join(f"    {line}\n" for line in self.statements(names, "out"))
        return _define(f"def combination(regs):\n{body}    return out\n", "combination")

    @property
    def shape(self) -> tuple[int, ...]:
        """The registers read, without coefficients (what a compiled step specialises on)."""
        return (-1, self.first) if self.head is Head.COPY else tuple(j for j, _ in self.terms)

    @property
    def kernels(self) -> int:
        """Kernels an eager evaluation launches."""
        return 0 if self.head is Head.COPY else len(self.terms) - (self.head is not Head.SCALE)

    def statements(self, names: Sequence[str], out: str) -> list[str]:
        """The same kernels as Python statements assigning `out`, register j named `names[j]` (`straight_line`)."""
        if self.head is Head.COPY:
            return [f"{out} = {names[self.first]}"]
        if self.head is Head.LERP:
            (j, w), *lerps = self.ops
            lines = [f"{out} = lerp({names[self.first]}, {names[j]}, {w!r})"]
            lines += [f"{out}.lerp_({names[j]}, {w!r})" for j, w in lerps]
            adds = self.adds
        elif self.head is Head.ADD:
            (j, w), *adds = self.ops
            lines = [f"{out} = add({names[self.first]}, {names[j]}, alpha={w!r})"]
        else:
            lines, adds = [f"{out} = mul({names[self.first]}, {self.scale!r})"], self.ops
        return lines + [f"{out}.add_({names[j]}, alpha={w!r})" for j, w in adds]


def _lerp_chain(flat: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...] | None:
    """For an affine combination, the term order whose partial sums stay farthest from 0, as
    (first register, ((r_k, c_k / S_k), ...)); None when every order has a partial sum near 0."""
    best, best_score = None, MIN_PARTIAL * max(abs(c) for _, c in flat)
    for order in itertools.permutations(flat):
        partial = list(itertools.accumulate(c for _, c in order))
        score = min(abs(v) for v in partial[:-1])
        if score > best_score:
            best, best_score = (order, partial), score
    if best is None:
        return None
    order, partial = best
    return ((order[0][0], 1.0), *((j, c / p) for (j, c), p in zip(order[1:], partial[1:], strict=True)))


def _affine_part(flat: tuple[tuple[int, float], ...]) -> tuple[tuple[tuple[int, float], ...], tuple] | None:
    """The largest subset (at least two terms) whose coefficients sum to 1 and that has a lerp chain, as
    (chain, the other terms); None when there is none."""
    for size in range(len(flat), 1, -1):
        for part in itertools.combinations(range(len(flat)), size):
            terms = tuple(flat[n] for n in part)
            total, norm = sum(c for _, c in terms), sum(abs(c) for _, c in terms)
            chain = _lerp_chain(terms) if abs(total - 1.0) <= AFFINE_RTOL * norm else None
            if chain is not None:
                return chain, tuple(t for n, t in enumerate(flat) if n not in part)
    return None


def combination(flat: Sequence[tuple[int, float]]) -> Combination:
    """The cheapest kernel sequence for `sum c_j regs[j]` (at least one term)."""
    if not flat:
        raise ValueError("a combination needs at least one nonzero term")
    flat = tuple(flat)
    if len(flat) == 1 and flat[0][1] == 1.0:
        return Combination(flat, Head.COPY, flat[0][0], 1.0, ())
    unit = next((n for n, (_, c) in enumerate(flat) if c == 1.0), None)
    if unit is not None:
        rest = tuple(t for n, t in enumerate(flat) if n != unit)
        return Combination(flat, Head.ADD, flat[unit][0], 1.0, rest)
    affine = _affine_part(flat) if len(flat) > 1 else None
    if affine is not None:
        chain, adds = affine
        return Combination(flat, Head.LERP, chain[0][0], 1.0, chain[1:], adds)
    return Combination(flat, Head.SCALE, flat[0][0], flat[0][1], flat[1:])


def normalised(flat: Sequence[tuple[int, float]]) -> tuple[Combination, float]:
    """`(combination(flat / g), g)`: a kept value stored divided by g where that saves a kernel (a SCALE
    combination becomes an ADD one, a scaled copy a plain copy; its readers multiply their coefficient by g)."""
    comb = combination(flat)
    if comb.head is not Head.SCALE:
        return comb, 1.0
    g = flat[0][1]
    return combination([(j, c / g) for j, c in flat]), g


@dataclass(frozen=True)
class Stage:
    time: torch.Tensor  # (B,)
    inputs: Combination


@dataclass(frozen=True)
class Step:
    """A compiled step. Registers: [x, *history, *noise rows `noise`, then per stage its input and output]."""

    stages: tuple[Stage, ...]
    update: Combination
    keep: tuple[Combination, ...]
    noise: tuple[int, ...]

    @property
    def shape(self) -> tuple:
        """Everything but coefficients and times: steps of one shape share a compiled kernel."""
        return (tuple(s.inputs.shape for s in self.stages), self.update.shape, tuple(k.shape for k in self.keep),
                len(self.noise))


@dataclass(frozen=True)
class Plan:
    """All steps of a solve on one grid for one batch size, dtype and device.

    `key` identifies the plan in caches (name, options, grid, batch, dtype, device); `grid` holds the
    times t_0..t_N (sigma for samplers); `times` (nfe, B) every stage time in order (each `Stage.time` is
    a row of it); `noise_draws` standard normal states (B, ...) are consumed, one per Z(k) a step reads (with
    mixing: the draws the rows combine; each step reads those in its `Step.noise`);
    `nfe` is the number of term evaluations per sample; `grid_tensor`, `counts` ((nfe, steps, 0) as a
    (3, 1) long tensor) and `reached` (one True) are the device tensors a `Solution` is built from.
    """

    key: Hashable
    steps: tuple[Step, ...]
    grid: tuple[float, ...]
    times: torch.Tensor
    noise_draws: int
    nfe: int
    grid_tensor: torch.Tensor
    counts: torch.Tensor
    reached: torch.Tensor

    @functools.cached_property
    def final(self) -> tuple[torch.Tensor, ...]:
        """(nfe, accepted, rejected, final time, reached) per sample (B,) for a final-state `Solution`: views of
        `counts`, `grid_tensor` and `reached` expanded to the batch, made once (writing to one in place raises,
        as to any expanded tensor; for a batch of one, where it would not, `plan_solution` copies them)."""
        batch = self.times.shape[1]
        return (*self.counts.expand(3, batch).unbind(0), self.grid_tensor[-1:].expand(batch),
                self.reached.expand(batch))

    @functools.cached_property
    def program(self) -> Callable[..., torch.Tensor]:
        """`straight_line(self)`, made on first use."""
        return straight_line(self)


def straight_line(plan: Plan) -> Callable[..., torch.Tensor]:
    """The plan as one generated Python function `run(f, x, rows) -> x` (rows: the noise draws, one tensor
    per draw): every step's kernels in line, with registers as local variables and coefficients as
    literals, so an eager solve pays no per-step interpretation (register lists, dispatch on the kernel
    kind). It launches exactly the kernels `advance` does (`Combination.statements` for both), on the same
    values."""
    body, times, n_hist = [], [], 0
    for st in plan.steps:
        names = ["x", *(f"h{j}" for j in range(n_hist)), *(f"rows[{k}]" for k in st.noise)]
        for s, stage in enumerate(st.stages):
            body += [*stage.inputs.statements(names, f"i{s}"), f"k{s} = f(T[{len(times)}], i{s})"]
            times.append(stage.time)
            names += [f"i{s}", f"k{s}"]
        body += st.update.statements(names, "new")
        for j, keep in enumerate(st.keep):
            body += keep.statements(names, f"keep{j}")
        if st.keep:
            body.append(", ".join(f"h{j}" for j in range(len(st.keep))) + ", = "
                        + ", ".join(f"keep{j}" for j in range(len(st.keep))) + ",")
        body.append("x = new")
        n_hist = len(st.keep)
    source = "def run(f, x, rows):\n" + "".join(f"    {line}\n" for line in body) + "    return x\n"
    return _define(source, "run", T=tuple(times))


def _define(source: str, name: str, **values: Any) -> Callable[..., Any]:
    """The function `name` defined by `source` (built from a plan's numbers: register names, literals, which
    may be `inf` or `nan`), with torch's `lerp`, `add` and `mul` and `values` in scope."""
    namespace = {"lerp": torch.lerp, "add": torch.add, "mul": torch.mul, "inf": math.inf, "nan": math.nan, **values}
    exec(compile(source, f"<plan {name}>", "exec"), namespace)  # noqa: S102 - source made by this module
    return namespace[name]


def _index(reg: Reg, n_hist: int, n_noise: int, n_stages: int) -> int:
    if reg.slot is Slot.STATE:
        return 0
    if reg.slot is Slot.HISTORY:
        if reg.index >= n_hist:
            raise ValueError(f"H({reg.index}) read but only {n_hist} value(s) are kept")
        return 1 + reg.index
    if reg.slot is Slot.NOISE:
        return 1 + n_hist + reg.index
    if reg.index >= n_stages:
        raise ValueError(f"{'K' if reg.slot is Slot.STAGE else 'I'}({reg.index}) read before it is computed")
    return 1 + n_hist + n_noise + 2 * reg.index + (reg.slot is Slot.STAGE)


def _noise_count(spec: StepSpec) -> int:
    """Draws of the step: one more than the largest Z(k) read (a plan draws Z(0..k) in order)."""
    combos = [st.inputs for st in spec.stages] + [spec.update, *spec.keep]
    return max([spec.draws, *(r.index + 1 for c in combos for r, _ in c if r.slot is Slot.NOISE)])


Mixing = tuple[tuple[float, ...], ...]  # (noise rows, draws): the rows as combinations of standard normal draws


def _flat(ts: Terms, n_noise: int, n_stages: int, scales: Sequence[float], noise_scale: float,
          mixes: Sequence[Sequence[tuple[int, float]]] | None = None) -> list[tuple[int, float]]:
    """Terms as (register index, coefficient), a read of H(j) scaled by the factor H(j) is stored with, a read
    of a noise row by `noise_scale`; with `mixes` (per noise row Z(k) of the step: (draw register k', c)
    pairs) a read of Z(k) is the reads of its draws, c each (a register read twice: one term, weights summed)."""
    out: dict[int, float] = {}
    for r, w in ts:
        if r.slot is Slot.NOISE and mixes is not None:
            reads = [(_index(Zk(k), len(scales), n_noise, n_stages), w * noise_scale * c) for k, c in mixes[r.index]]
        else:
            scale = scales[r.index] if r.slot is Slot.HISTORY else noise_scale if r.slot is Slot.NOISE else 1.0
            reads = [(_index(r, len(scales), n_noise, n_stages), w * scale)]
        for j, c in reads:
            out[j] = out.get(j, 0.0) + c
    return [(j, c) for j, c in out.items() if c != 0.0]


def _step_draws(rows: range, mixing: Mixing | None) -> tuple[tuple[int, ...], list[list[tuple[int, float]]] | None]:
    """The draws a step with noise rows `rows` reads (the rows themselves, or with `mixing` the draws their
    combinations use, in order) and, with `mixing`, each row as (index among those draws, coefficient) pairs."""
    if mixing is None:
        return tuple(rows), None
    draws = tuple(sorted({j for g in rows for j, c in enumerate(mixing[g]) if c}))
    return draws, [[(draws.index(j), c) for j, c in enumerate(mixing[g]) if c] for g in rows]


def make_plan(key: Hashable, specs: Sequence[StepSpec], grid: Sequence[float], batch: int,
              dtype: torch.dtype, device: torch.device | str, noise_scale: float = 1.0,
              mixing: Mixing | None = None) -> Plan:
    """Compile symbolic steps: register indices, kernel choice, and (B,) stage-time tensors (one allocation).

    A kept value may be stored scaled, H_j = (its value) / g_j (`normalised`); every read of H(j) then
    uses the coefficient w g_j, so the plan computes the same sums with fewer kernels. Likewise the noise
    rows the plan is given may be standard normals divided by `noise_scale` (a noise sampler that leaves
    that multiply to its consumer); every read of one uses w noise_scale. With `mixing` (one row per noise
    row of the steps, one column per draw) the noise rows are combinations of standard normal draws
    z_j (a Brownian path's increments): the plan reads the draws (`noise_draws` of them) and each read of
    row g is the reads of the z_j with coefficients w mixing[g][j] (folded into the step's combinations: no
    matrix product at run time). `key` must tell such plans apart."""
    if len(specs) != len(grid) - 1:
        raise ValueError(f"{len(specs)} steps for a grid of {len(grid)} points")
    times = [st.time for spec in specs for st in spec.stages]
    all_times = torch.tensor(times, dtype=dtype, device=device).unsqueeze(1).expand(len(times), batch)
    flat_times = all_times.unbind(0)
    steps, draws, at, scales = [], 0, 0, []
    for spec in specs:
        rows = range(draws, draws + _noise_count(spec))
        read, mixes = _step_draws(rows, mixing)
        flat = functools.partial(_flat, n_noise=len(read), scales=scales, noise_scale=noise_scale, mixes=mixes)
        stages = []
        for s, st in enumerate(spec.stages):
            stages.append(Stage(flat_times[at], combination(flat(st.inputs, n_stages=s))))
            at += 1
        n = len(stages)
        update = combination(flat(spec.update, n_stages=n))
        kept = [normalised(flat(k, n_stages=n)) for k in spec.keep]
        steps.append(Step(tuple(stages), update, tuple(c for c, _ in kept), read))
        draws, scales = rows.stop, [g for _, g in kept]
    if mixing is not None:
        if len(mixing) != draws:
            raise ValueError(f"mixing has {len(mixing)} rows for {draws} noise rows")
        draws = len(mixing[0]) if mixing else 0
    grid_tensor = torch.tensor([float(t) for t in grid], dtype=dtype, device=device)
    counts = torch.tensor([[len(times)], [len(steps)], [0]], dtype=torch.long, device=device)
    reached = torch.ones(1, dtype=torch.bool, device=device)
    return Plan(key, tuple(steps), tuple(float(t) for t in grid), all_times, draws, len(times), grid_tensor, counts,
                reached)
