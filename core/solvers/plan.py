"""Linear-combination plans: one step format for Runge–Kutta, multistep, exponential and stochastic methods.

A step maps the state x_i to x_{i+1} with a few *registers*:

    X       the state x_i
    H(j)    values kept from earlier steps (multistep history), most recent first
    Z       a standard normal draw (stochastic plans; pre-drawn from the run's generator)
    K(s)    the output of stage s of this step

Stage s evaluates the term at a precomputed time,   K(s) = F(t_s, sum_r a_sr r)   (r over X, H, Z, K(<s)),
the step ends with   x_{i+1} = sum_r b_r r   and keeps   H' = (r_1, r_2, ...)   for the next step.

A Butcher tableau is the case a_sX = b_X = 1, a_sK(j) = h a_sj, b_K(s) = h b_s (no history); Euler on a
sigma-form denoiser is x' = (s'/s) x + (1 - s'/s) D(x, s); DPM-Solver++(2M) adds a history register for
the previous D; DDIM with eta > 0 adds s_up Z. Builders write steps symbolically (`StepSpec`, with `X`,
`Z`, `H(j)`, `K(s)`); `make_plan` turns them into register indices, stage-time tensors and the cheapest
kernel for each combination, once, on the host (float64 Python floats): the loop that runs a plan
(`runner.py`) has no host synchronisation and no Python work that scales with the batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import torch


class Slot(IntEnum):
    """Where a register lives."""

    STATE = 0
    HISTORY = 1
    NOISE = 2
    STAGE = 3


@dataclass(frozen=True)
class Reg:
    """A symbolic register: the state, the j-th kept value, the noise draw, or the s-th stage output."""

    slot: Slot
    index: int = 0


X = Reg(Slot.STATE)
Z = Reg(Slot.NOISE)


def H(j: int) -> Reg:
    """The j-th value kept from earlier steps (0 = most recent)."""
    return Reg(Slot.HISTORY, j)


def K(s: int) -> Reg:
    """The output of stage s of the current step."""
    return Reg(Slot.STAGE, s)


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
    """One step: its stages, the new state `sum_r w_r r`, and the registers kept for the next step."""

    stages: tuple[StageSpec, ...]
    update: Terms
    keep: tuple[Reg, ...] = ()


def stage(time: float, weights: Mapping[Reg, float]) -> StageSpec:
    return StageSpec(float(time), terms(weights))


def step(stages: Sequence[StageSpec], update: Mapping[Reg, float], keep: Sequence[Reg] = ()) -> StepSpec:
    return StepSpec(tuple(stages), terms(update), tuple(keep))


class Head(IntEnum):
    """The first kernel of a combination (the remaining terms are fused in-place adds)."""

    COPY = 0  # out = r_i                      (no kernel)
    ADD = 1  # out = r_i + w r_j              (coefficient of r_i is 1)
    LERP = 2  # out = w r_i + (1 - w) r_j     (two coefficients summing to 1)
    SCALE = 3  # out = w r_i


AFFINE_TOL = 4e-16  # |c_i + c_j - 1| below this: one lerp kernel instead of a multiply and an add


@dataclass(frozen=True)
class Combination:
    """`head(regs) + sum_(j, c) in rest  c regs[j]` over a step's flat register list."""

    head: Head
    i: int
    j: int
    w: float
    rest: tuple[tuple[int, float], ...]

    def __call__(self, regs: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.head is Head.COPY:
            return regs[self.i]
        if self.head is Head.ADD:
            out = torch.add(regs[self.i], regs[self.j], alpha=self.w)
        elif self.head is Head.LERP:
            out = torch.lerp(regs[self.j], regs[self.i], self.w)
        else:
            out = torch.mul(regs[self.i], self.w)
        for j, c in self.rest:
            out.add_(regs[j], alpha=c)
        return out

    @property
    def shape(self) -> tuple:
        """The combination without its coefficients (what a compiled step specialises on)."""
        return (self.head, self.i, self.j, tuple(j for j, _ in self.rest))


def combination(flat: Sequence[tuple[int, float]]) -> Combination:
    """The cheapest kernel sequence for `sum c_j regs[j]` (at least one term)."""
    if not flat:
        raise ValueError("a combination needs at least one nonzero term")
    unit = next((n for n, (_, c) in enumerate(flat) if c == 1.0), None)
    if len(flat) == 1:
        (i, c), = flat
        return Combination(Head.COPY if c == 1.0 else Head.SCALE, i, i, c, ())
    if unit is not None:
        i = flat[unit][0]
        rest = [t for n, t in enumerate(flat) if n != unit]
        return Combination(Head.ADD, i, rest[0][0], rest[0][1], tuple(rest[1:]))
    for a in range(len(flat)):
        for b in range(a + 1, len(flat)):
            if abs(flat[a][1] + flat[b][1] - 1.0) <= AFFINE_TOL:
                rest = tuple(t for n, t in enumerate(flat) if n not in (a, b))
                return Combination(Head.LERP, flat[a][0], flat[b][0], flat[a][1], rest)
    return Combination(Head.SCALE, flat[0][0], flat[0][0], flat[0][1], tuple(flat[1:]))


@dataclass(frozen=True)
class Stage:
    time: torch.Tensor  # (B,)
    inputs: Combination


@dataclass(frozen=True)
class Step:
    """A compiled step. Registers: [x, *history, (noise row `noise` if not None), *stage outputs]."""

    stages: tuple[Stage, ...]
    update: Combination
    keep: tuple[int, ...]
    noise: int | None

    @property
    def shape(self) -> tuple:
        """Everything but coefficients and times: steps of one shape share a compiled kernel."""
        return (tuple(s.inputs.shape for s in self.stages), self.update.shape, self.keep, self.noise is not None)


@dataclass(frozen=True)
class Plan:
    """All steps of a solve on one grid for one batch size, dtype and device.

    `key` identifies the plan in caches (name, options, grid, batch, dtype, device); `grid` holds the
    times t_0..t_N (sigma for samplers); `noise_draws` standard normal states (B, ...) are consumed, one
    per step that uses Z; `nfe` is the number of term evaluations per sample.
    """

    key: Hashable
    steps: tuple[Step, ...]
    grid: tuple[float, ...]
    noise_draws: int
    nfe: int


def _index(reg: Reg, n_hist: int, noise: bool, n_stages: int) -> int:
    if reg.slot is Slot.STATE:
        return 0
    if reg.slot is Slot.HISTORY:
        if reg.index >= n_hist:
            raise ValueError(f"H({reg.index}) read but only {n_hist} value(s) are kept")
        return 1 + reg.index
    if reg.slot is Slot.NOISE:
        return 1 + n_hist
    if reg.index >= n_stages:
        raise ValueError(f"K({reg.index}) read before it is computed")
    return 1 + n_hist + int(noise) + reg.index


def _uses_noise(spec: StepSpec) -> bool:
    regs = [r for st in spec.stages for r, _ in st.inputs] + [r for r, _ in spec.update] + list(spec.keep)
    return Z in regs


def make_plan(key: Hashable, specs: Sequence[StepSpec], grid: Sequence[float], batch: int,
              dtype: torch.dtype, device: torch.device | str) -> Plan:
    """Compile symbolic steps: register indices, kernel choice, and (B,) stage-time tensors (one allocation)."""
    if len(specs) != len(grid) - 1:
        raise ValueError(f"{len(specs)} steps for a grid of {len(grid)} points")
    times = [st.time for spec in specs for st in spec.stages]
    flat_times = torch.tensor(times, dtype=dtype, device=device).unsqueeze(1).expand(len(times), batch).unbind(0)
    steps, n_hist, draws, at = [], 0, 0, 0
    for spec in specs:
        noise = _uses_noise(spec)
        stages = []
        for s, st in enumerate(spec.stages):
            inputs = combination([(_index(r, n_hist, noise, s), w) for r, w in st.inputs])
            stages.append(Stage(flat_times[at], inputs))
            at += 1
        n = len(stages)
        update = combination([(_index(r, n_hist, noise, n), w) for r, w in spec.update])
        keep = tuple(_index(r, n_hist, noise, n) for r in spec.keep)
        steps.append(Step(tuple(stages), update, keep, draws if noise else None))
        draws, n_hist = draws + int(noise), len(keep)
    return Plan(key, tuple(steps), tuple(float(t) for t in grid), draws, len(times))
