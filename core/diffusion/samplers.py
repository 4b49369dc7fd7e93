"""The sampler registry and the one entry point, `solve_sampler` / `run_sampler`.

Each sampler is written once, in `sampler_defs.py`, as a short function of the denoiser; `SAMPLERS` binds
a name to that definition, its declared options (`Option`: the single source of the CLI flags, help,
validation and config keys), NFE per step and observed order. Without gradients a sampler runs as its
plan (the definition recorded once on symbolic values, `tracing.record`) on the solver core's runner:
eager, compiled, or captured in a CUDA graph, with the finiteness check naming the step and sigma,
trajectory saving, progress and per-sample NFE. With gradients (a grid, state or option that requires
grad) the definition runs on tensors. `ode` integrates the PF-ODE in log sigma with `batch_odeint`.

    x, nfe = run_sampler(denoiser, x0, sigmas, "dpmpp-2m-sde", eta=0.5, seed=0)
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from gentool.core.diffusion import sampler_defs as defs
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.diffusion.noise import BrownianPath, SeededNoise, brownian_increments, float_pairs
from gentool.core.diffusion.tracing import record
from gentool.core.errors import choose, require
from gentool.core.progress import Progress
from gentool.core.solvers import ADAPTIVE_METHODS, FIXED_METHODS, CacheScope, Plan, Solution, batch_odeint
from gentool.core.solvers.errors import NonFiniteState
from gentool.core.solvers.plan import make_plan
from gentool.core.solvers.runner import NoiseRows, all_finite, solve_plan

HINT = "use more steps (a finer sigma grid), or float64"
SAVES = ("final", "times", "trajectory")
NoiseSampler = Callable[[Any, Any], torch.Tensor]


class DenoisedTerm:
    """The term `F(sigma, x) = D(x, sigma)` (sigma a per-sample (B,) tensor)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma)


class LogSigmaTerm:
    """The PF-ODE in u = log sigma: `F(u, x) = dx/du = x - D(x, e^u)`."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - self.denoiser(x, u.exp())


@dataclass(frozen=True)
class Option:
    """A sampler setting, declared once: the command-line option, its help table entry,
    validation, config-file key and Python keyword all come from here. `kind` float/int/str; floats and
    ints must lie in [lo, hi] (open ends where `open_lo`/`open_hi`); strings in `choices`. A float option
    may also be given as a tensor (scalar, or one value per step where the sampler says so): the eager,
    differentiable path then carries its gradient."""

    name: str
    kind: type
    default: Any
    help: str
    lo: float = -math.inf
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and self.kind is float:
            require(bool(torch.isfinite(value).all()) and bool(((value > self.lo) if self.open_lo else
                    (value >= self.lo)).all()) and bool(((value < self.hi) if self.open_hi else
                    (value <= self.hi)).all()), f"{self.name} must lie in {self.bounds()}")
            return value
        if self.kind is str:
            return choose(self.name, str(value), self.choices)
        if self.kind is bool:
            require(isinstance(value, bool), f"{self.name} must be true or false, got {value!r}")
            return value
        number = float(value) if not isinstance(value, bool) else math.nan
        ok = math.isfinite(number) or (number == math.inf and self.hi == math.inf and not self.open_hi)
        ok = ok and (number > self.lo if self.open_lo else number >= self.lo)
        ok = ok and (number < self.hi if self.open_hi else number <= self.hi)
        if self.kind is int:
            ok = ok and number.is_integer()
        require(ok, f"{self.name} must be {'an integer' if self.kind is int else 'a number'} in {self.bounds()}, "
                f"got {value!r}")
        return int(number) if self.kind is int else number

    def bounds(self) -> str:
        if self.kind is bool:
            return "{true, false}"
        if self.kind is str:
            return "{" + ", ".join(self.choices) + "}"
        return f"{'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"

    def describe(self) -> str:
        return f"{self.name}={self.default:g}" if self.kind not in (str, bool) else f"{self.name}={self.default}"


ETA = Option("eta", float, 1.0, "Noise amount: 0 is the probability-flow ODE, 1 the full SDE (DDPM-like).", 0.0)
S_NOISE = Option("s_noise", float, 1.0, "Scale of the added noise (EDM S_noise).", 0.0)
SOLVER = Option("solver", str, "midpoint", "Second-order correction (diffusers' solver_type).",
                choices=("midpoint", "heun"))
SOLVER_3M = Option("solver", str, "heun", "Correction of the second-order warm-up step (diffusers: midpoint).",
                   choices=("midpoint", "heun"))
LOWER_ORDER_FINAL = Option("lower_order_final", bool, False, "Below 15 steps, order 1 on the last step and at most "
                           "2 on the one before (diffusers' DPM-Solver default: true).")
R_SDE = Option("r", float, 0.5, "Position of the sub-step in log sigma.", 0.0, 1.0, True, True)
R_AMED = Option("r", float, 0.5, "Mean-value ratio: the direction is taken at sigma'^r sigma^(1-r).", 0.0, 1.0,
                True, True)
S_CHURN = Option("s_churn", float, 40.0, "EDM S_churn: total noise added, gamma = min(S_churn/N, sqrt2 - 1).", 0.0)
S_TMIN = Option("s_tmin", float, 0.05, "EDM S_tmin: churn only for sigma >= S_tmin.", 0.0)
S_TMAX = Option("s_tmax", float, 50.0, "EDM S_tmax: churn only for sigma <= S_tmax.", 0.0)


def order_option(hi: int, default: int) -> Option:
    return Option("order", int, default, f"Order (1-{hi}); lower on the first steps.", 1, hi)


ODE_OPTIONS = (Option("method", str, "dopri5", "Core solver method.", choices=FIXED_METHODS + ADAPTIVE_METHODS),
               Option("rtol", float, 1e-5, "Relative tolerance of an adaptive method.", 0.0, open_lo=True),
               Option("atol", float, 1e-5, "Absolute tolerance of an adaptive method.", 0.0, open_lo=True))


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its one definition (`sampler_defs`; None for `ode`) with fixed arguments `bound`, its
    options, NFE per step, observed order on the EDM grid, and whether it draws noise (`noise`: "" for
    deterministic samplers, "seeded" or "brownian" for the default noise sampler)."""

    name: str
    fn: Callable[..., Any] | None
    options: tuple[Option, ...] = ()
    bound: Mapping[str, Any] = field(default_factory=dict)
    nfe_per_step: str = "1"
    order: str = "1"
    noise: str = ""
    summary: str = ""
    internal: tuple[str, ...] = ()  # arguments a caller derives from the model (not settings), e.g. ddim's targets

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Options with defaults filled in, validated; an option the sampler does not take is `BadInput`
        naming the ones it does."""
        names = [o.name for o in self.options]
        for name in given:
            require(name in names or name in self.internal, f"sampler {self.name!r} does not take option {name!r}; "
                    f"it takes: {', '.join(names) or 'no options'}")
        internal = {k: given[k] for k in self.internal if given.get(k) is not None}
        return {o.name: o.check(given[o.name]) if o.name in given else o.default for o in self.options} | internal

    def steps_for_nfe(self, nfe: int) -> int:
        """Grid steps that spend about `nfe` evaluations (2-evaluation samplers: (nfe + 1) // 2; a Heun start:
        nfe - 1)."""
        if self.nfe_per_step == HEUN_START:
            return max(1, nfe - 1)
        return max(1, (nfe + 1) // 2) if self.nfe_per_step.startswith("2") else nfe

    def nfe(self, steps: int, to_zero: bool) -> int:
        """Evaluations of a solve of `steps` grid steps (`to_zero`: the last step goes to 0) by a sampler with
        a definition: 2 per step (1 on a step to 0), 1 per step, or 1 per step and 2 on the first of several."""
        if self.nfe_per_step == HEUN_START:
            return steps + (steps > 1)
        return 2 * steps - to_zero if self.nfe_per_step.startswith("2") else steps


TWO = "2, last 1"
HEUN_START = "1, first 2"
SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    SamplerSpec("euler", defs.euler, summary="Euler on the PF-ODE"),
    SamplerSpec("euler-ancestral", defs.euler_ancestral, (ETA, S_NOISE), noise="seeded",
                summary="ancestral Euler (k-diffusion)"),
    SamplerSpec("ddim", defs.ddim, (ETA,), noise="seeded", internal=("targets",),
                summary="DDIM(eta) = euler-ancestral, s_noise 1 (targets: diffusers' t - T//N)"),
    SamplerSpec("heun", defs.heun, nfe_per_step=TWO, order="2", summary="EDM Heun"),
    SamplerSpec("edm-stochastic", defs.heun, (S_CHURN, S_TMIN, S_TMAX, S_NOISE), nfe_per_step=TWO, noise="seeded",
                summary="EDM Heun with churn (Algorithm 2)"),
    SamplerSpec("dpm-2", defs.mean_value, nfe_per_step=TWO, order="2", summary="DPM-Solver-2 (k-diffusion)"),
    SamplerSpec("amed", defs.mean_value, (R_AMED,), nfe_per_step=TWO, order="2", summary="mean-value step at ratio r"),
    SamplerSpec("dpmpp-2m", defs.dpmpp_multistep, (SOLVER, LOWER_ORDER_FINAL), bound={"eta": 0.0, "order": 2},
                order="2", summary="DPM-Solver++(2M)"),
    SamplerSpec("dpmpp-2m-sde", defs.dpmpp_multistep, (ETA, S_NOISE, SOLVER, LOWER_ORDER_FINAL), bound={"order": 2},
                noise="seeded", summary="DPM-Solver++(2M) SDE"),
    SamplerSpec("dpmpp-3m", defs.dpmpp_multistep, bound={"eta": 0.0, "d2_weight": 2.0}, order="3",
                summary="DPM-Solver++(3M), Taylor d2 weight"),
    SamplerSpec("dpmpp-3m-kd", defs.dpmpp_multistep, (SOLVER_3M, LOWER_ORDER_FINAL), bound={"eta": 0.0}, order="2",
                summary="DPM-Solver++(3M), published d2 weight (diffusers: solver=midpoint, lower_order_final)"),
    SamplerSpec("dpmpp-3m-sde", defs.dpmpp_multistep, (ETA, S_NOISE, SOLVER_3M, LOWER_ORDER_FINAL), noise="seeded",
                summary="DPM-Solver++(3M) SDE"),
    SamplerSpec("dpmpp-sde", defs.dpmpp_sde, (ETA, S_NOISE, R_SDE), nfe_per_step=TWO, noise="brownian",
                summary="DPM-Solver++ SDE, single-step (Brownian path)"),
    SamplerSpec("unipc", defs.unipc, (order_option(3, 2),), order="order+1", summary="UniPC-bh2"),
    SamplerSpec("ipndm", defs.adams, (order_option(4, 4),), bound={"weights": defs.ab_fixed}, order="2",
                summary="iPNDM, fixed Adams–Bashforth weights"),
    SamplerSpec("ipndm-v", defs.adams, (order_option(4, 4),), order="order",
                summary="iPNDM, variable-step weights in sigma"),
    SamplerSpec("lms", defs.adams, (order_option(4, 4),), bound={"euler_to_zero": False}, order="order",
                summary="linear multistep (k-diffusion)"),
    SamplerSpec("pndm", defs.adams, bound={"order": 4, "weights": defs.ab_fixed, "euler_to_zero": False,
                                           "heun_start": True}, nfe_per_step=HEUN_START, order="2",
                summary="PNDM/PLMS (diffusers, skip_prk_steps): a Heun step, then iPNDM's weights, also to the end"),
    SamplerSpec("deis", defs.adams, (order_option(3, 3),), bound={"weights": defs.ab_vp_time}, order="order",
                summary="DEIS tAB (Lagrange in VP time)"),
    SamplerSpec("ode", None, ODE_OPTIONS, nfe_per_step="adaptive", order="-", summary="PF-ODE by a core solver"),
)}


def option_declarations(samplers: Iterable[str] | None = None) -> dict[str, list[tuple[str, Option]]]:
    """Every option name with the samplers that take it and their declarations (for config fields), of
    `samplers` (default: all)."""
    out: dict[str, list[tuple[str, Option]]] = {}
    for spec in SAMPLERS.values() if samplers is None else (SAMPLERS[name] for name in samplers):
        for opt in spec.options:
            out.setdefault(opt.name, []).append((spec.name, opt))
    return out


def sampler_table(width: int = 76) -> str:
    """A fixed-width table of the samplers: name, NFE per step, observed order, options (defaults), the options
    wrapped onto indented lines to keep within `width` columns (an 80-column terminal's help)."""
    rows = [("sampler", "NFE/step", "order", "options")]
    for s in SAMPLERS.values():
        rows.append((s.name, s.nfe_per_step, s.order, ", ".join(o.describe() for o in s.options)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    indent = sum(widths) + 2 * len(widths)
    lines = []
    for r in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  "
        parts = textwrap.wrap(r[3], max(20, width - indent)) or [""]
        lines += [head + parts[0], *(" " * indent + part for part in parts[1:])]
    return "\n".join(line.rstrip() for line in lines)


def _check_sigmas(sigmas: torch.Tensor | list[float]) -> tuple[float, ...]:
    return _checked_grid(tuple(map(float, sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)))


@functools.lru_cache(maxsize=64)
def _checked_grid(grid: tuple[float, ...]) -> tuple[float, ...]:
    """`grid` if it is a valid sigma grid (memoised: a run solves on the same grid batch after batch)."""
    require(len(grid) >= 2, f"steps must be >= 1, got {len(grid) - 1}")
    require(all(math.isfinite(s) for s in grid), "sigma grid contains non-finite values")
    require(all(b < a for a, b in zip(grid[:-1], grid[1:], strict=True)), "sigma grid must be strictly decreasing")
    require(grid[-1] >= 0 and (len(grid) == 2 or grid[-2] > 0), "sigmas must be > 0 except the last, which may be 0")
    return grid


@functools.lru_cache(maxsize=64)
def sampler_plan(name: str, grid: tuple[float, ...], options: tuple[tuple[str, Any], ...], batch: int,
                 dtype: torch.dtype, device: torch.device, noise_scale: float = 1.0, brownian: bool = False
                 ) -> tuple[Plan, tuple[tuple[float, float], ...]]:
    """The memoised plan of sampler `name` on `grid` (its definition run once on symbolic values; float64
    coefficients, stage times in `dtype`; noise rows to be multiplied by `noise_scale`) and the (sigma, sigma')
    of its noise draws, in order. `brownian`: the noise draws are the increments of a new Brownian path,
    folded into the plan's coefficients (`brownian_increments` as its mixing): the plan reads the path's
    draws (`BrownianPath.plan_draws`)."""
    spec = SAMPLERS[name]
    rec = record(spec.fn, list(grid), {**dict(options), **spec.bound})
    mixing = brownian_increments(float_pairs(rec.noise_pairs))[0] if brownian and rec.noise_pairs else None
    plan = make_plan((name, options, grid, batch, dtype, device, noise_scale, brownian), rec.steps, grid, batch,
                     dtype, device, noise_scale, mixing)
    return plan, rec.noise_pairs


def _solve_ode(denoiser: Denoiser, x: torch.Tensor, grid: tuple[float, ...], opts: Mapping[str, Any], save: str,
               graph: str, compile: bool, progress: Progress | None) -> Solution:
    """PF-ODE in u = log sigma by a core solver along log sigma_0..sigma_{N-1} (adaptive: its end points),
    then the step to sigma_N: `x <- D(x, sigma_{N-1})` when sigma_N = 0. NFE = solver NFE + 1."""
    require(save == "final", f"sampler 'ode' returns the final state only; got save={save!r}")
    pos = [s for s in grid if s > 0]
    nfe = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if len(pos) >= 2:
        u = torch.tensor([math.log(s) for s in pos], dtype=x.dtype, device=x.device)
        if opts["method"] in ADAPTIVE_METHODS:
            u = u[[0, -1]]
        sol = batch_odeint(LogSigmaTerm(denoiser), x, u, method=opts["method"], rtol=opts["rtol"], atol=opts["atol"],
                     progress=progress, graph=graph, compile=compile, cache_scope=CacheScope(denoiser, "log-sigma"))
        x, nfe = sol.x, sol.nfe
    if grid[-1] == 0:
        x, nfe = denoiser(x, x.new_full((x.shape[0],), pos[-1])), nfe + 1
    unknown = torch.full_like(nfe, -1)  # step counts of the ode sampler are not reported
    return Solution(x=x, xs=None, ts=x.new_full((x.shape[0],), grid[-1]), nfe=nfe, accepted=unknown,
                    rejected=unknown, reached=torch.ones_like(nfe, dtype=torch.bool))


def default_noise(spec: SamplerSpec, x: torch.Tensor, grid: Sequence[float], seed: int, first: int) -> NoiseSampler:
    """The sampler's default noise: `BrownianPath` for samplers with sub-step noise (its draws in one block of
    2 per grid step), else `SeededNoise`; both depend on (seed, each sample's global index) only."""
    if spec.noise == "brownian":
        return BrownianPath(x, seed, first, block=2 * len(grid))
    return SeededNoise(x, seed, first)


PLAN_NOISES = (SeededNoise, BrownianPath)  # noises that make a plan's draws themselves (`plan_rows`, `plan_scale`)


def noise_scale(noise: NoiseSampler | None) -> float:
    """The factor the rows `draw_all` makes from `noise` are to be multiplied by (a plan folds it into its
    coefficients, `make_plan`): the default noises' `plan_scale` (sqrt(2): their draws are erfinv(u) = z /
    sqrt(2), a kernel fewer), else 1."""
    return noise.plan_scale if isinstance(noise, PLAN_NOISES) else 1.0


def folds(noise: NoiseSampler | None) -> bool:
    """Whether a plan folds the noise's increments into its coefficients (a new `BrownianPath`: `sampler_plan`
    with brownian=True, `draw_all` with fold=True)."""
    return isinstance(noise, BrownianPath) and noise.fresh


def draw_all(noise: NoiseSampler, pairs: Sequence[tuple[float, float]], x: torch.Tensor, fold: bool = False
             ) -> torch.Tensor | NoiseRows | None:
    """Every draw of a plan, in order, (draws, *x.shape) on x's device, divided by `noise_scale(noise)` (the
    default noises on a device: as `NoiseRows`, which a CUDA graph draws inside its replay); with `fold` (see
    `folds`) the Brownian path's own draws, which the plan combines."""
    if not pairs:
        return None
    if fold:
        return noise.plan_draws(pairs)
    if isinstance(noise, PLAN_NOISES):
        return noise.plan_rows(pairs)
    return torch.stack([torch.as_tensor(noise(a, b)) for a, b in pairs]).to(device=x.device, dtype=x.dtype)


def _seed(seed: int | None, generator: torch.Generator | None) -> int:
    return int(seed) if seed is not None else generator.initial_seed() if generator is not None else 0


def _needs_grad(x: torch.Tensor, sigmas: Any) -> bool:
    """Whether the state or the grid requires grad (with autograd on)."""
    return torch.is_grad_enabled() and (x.requires_grad or isinstance(sigmas, torch.Tensor) and sigmas.requires_grad)


def resolve_options(sampler: str, options: Mapping[str, Any]) -> tuple[SamplerSpec, Mapping[str, Any], tuple | None]:
    """The spec of `sampler`, its options (defaults filled in, validated; read-only) and them as a sorted tuple
    (a plan's key; None when an option is a tensor: a learned value, run on the differentiable path). A run
    resolves once (`prepare_sampler`), not per batch."""
    spec = SAMPLERS[choose("sampler", sampler, SAMPLERS)]
    opts = spec.resolve(options)
    tensors = any(isinstance(v, torch.Tensor) for v in opts.values())
    return spec, MappingProxyType(opts), None if tensors else tuple(sorted(opts.items()))


class CountingModel:
    """`model(x, sigma)` for the eager path: sigma (a float or 0-d tensor) broadcast to (B,); counts calls."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        self.calls += 1
        sigma = sigma.to(dtype=x.dtype, device=x.device) if isinstance(sigma, torch.Tensor) else torch.tensor(
            sigma, dtype=x.dtype, device=x.device)
        return self.denoiser(x, sigma.expand(x.shape[0]))


def run_definition(spec: SamplerSpec, denoiser: Denoiser, x: torch.Tensor, sigmas: Any, noise: NoiseSampler,
                   options: Mapping[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """The sampler's definition run on tensors (autograd flows through sigmas, x and tensor options): the
    final state, the state after every step and the NFE per sample."""
    grid = list(sigmas.unbind(0)) if isinstance(sigmas, torch.Tensor) else [float(s) for s in sigmas]
    model = CountingModel(denoiser)
    states = list(spec.fn(model, noise, x, grid, **{**options, **spec.bound}))
    return states[-1], states, model.calls


@dataclass(frozen=True)
class PreparedSampler:
    """A sampler on one sigma grid with its options, checked and resolved once (`prepare_sampler`), for the
    batches of a run: `solve` / `run` do only a batch's work (its default noise, the memoised plan for its
    size, dtype and device, the solve). `solve_sampler` / `run_sampler` are one `prepare_sampler` and one call."""

    spec: SamplerSpec
    sigmas: torch.Tensor | tuple[float, ...]  # a tensor as given (one that requires grad: the differentiable path)
    grid: tuple[float, ...]  # its values, checked
    version: int  # the tensor's version then (`Tensor._version`: an in-place change bumps it)
    options: Mapping[str, Any]
    key: tuple | None  # the options as a plan key; None when one is a tensor (the differentiable path)

    def solve(self, denoiser: Denoiser, x: torch.Tensor, *, seed: int | None = None,
              generator: torch.Generator | None = None, first_index: int = 0,
              noise_sampler: NoiseSampler | None = None, progress: Progress | None = None, save: str = "final",
              graph: str = "auto", compile: bool = False) -> Solution:
        """The sampler from `x` (at `sigmas[0]`): the full `Solution` (see `solve_sampler`)."""
        return self._solve(denoiser, x, seed, generator, first_index, noise_sampler, progress, save, graph,
                           compile)[0]

    def run(self, denoiser: Denoiser, x: torch.Tensor, *, seed: int | None = None,
            generator: torch.Generator | None = None, first_index: int = 0, noise_sampler: NoiseSampler | None = None,
            progress: Progress | None = None, graph: str = "auto", compile: bool = False) -> tuple[torch.Tensor, int]:
        """The sampler from `x` (at `sigmas[0]`): `(x, nfe)` (see `run_sampler`)."""
        sol, nfe = self._solve(denoiser, x, seed, generator, first_index, noise_sampler, progress, "final", graph,
                               compile)
        return sol.x, nfe

    def _solve(self, denoiser: Denoiser, x: torch.Tensor, seed: int | None, generator: torch.Generator | None,
               first_index: int, noise_sampler: NoiseSampler | None, progress: Progress | None, save: str,
               graph: str, compile: bool) -> tuple[Solution, int]:
        """The solution and the NFE per sample (an int: no tensor read on the plan path)."""
        choose("save", save, SAVES)
        spec, noise, grid = self.spec, noise_sampler, self._grid()
        if noise is None and spec.noise:
            noise = default_noise(spec, x, grid, _seed(seed, generator), first_index)
        if spec.fn is not None and (self.key is None or _needs_grad(x, self.sigmas)):
            return _solve_differentiable(spec, denoiser, x, self.sigmas, noise, self.options, save)
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._solve_no_grad(denoiser, x, grid, noise, save, graph, compile, progress)
        return self._solve_no_grad(denoiser, x, grid, noise, save, graph, compile, progress)

    def _grid(self) -> tuple[float, ...]:
        """The checked grid: as prepared, or read and checked again if the tensor changed in place since."""
        if isinstance(self.sigmas, torch.Tensor) and self.sigmas._version != self.version:
            return _check_sigmas(self.sigmas)
        return self.grid

    def _solve_no_grad(self, denoiser: Denoiser, x: torch.Tensor, grid: tuple[float, ...],
                       noise: NoiseSampler | None, save: str, graph: str, compile: bool, progress: Progress | None
                       ) -> tuple[Solution, int]:
        """The recorded plan (or the `ode` solve) with autograd off, and the NFE per sample."""
        if self.spec.fn is None:
            sol = _solve_ode(denoiser, x, grid, self.options, save, graph, compile, progress)
            return sol, int(sol.nfe[0]) if len(sol.nfe) else 0
        fold = folds(noise)
        plan, pairs = sampler_plan(self.spec.name, grid, self.key, x.shape[0], x.dtype, x.device, noise_scale(noise),
                                   fold)
        return solve_plan(DenoisedTerm(denoiser), x, plan, noise=draw_all(noise, pairs, x, fold), save=save,
                          graph=graph, compile=compile, progress=progress, scope=CacheScope(denoiser, "denoised"),
                          label="sigma", hint=HINT), plan.nfe


def prepare_sampler(sigmas: torch.Tensor | list[float], sampler: str, **options: Any) -> PreparedSampler:
    """`sampler` on the grid `sigmas` with `options`, checked (a bad name, option or grid is `BadInput`) and
    resolved once, to run batch after batch: `prepare_sampler(sigmas, "dpmpp-2m-sde", eta=0.5).run(denoiser,
    x, seed=0, first_index=k)` equals `run_sampler(denoiser, x, sigmas, "dpmpp-2m-sde", eta=0.5, seed=0,
    first_index=k)`, also after `sigmas` is changed in place (its values are then read and checked again)."""
    spec, opts, key = resolve_options(sampler, options)
    grid = _check_sigmas(sigmas)
    tensor = isinstance(sigmas, torch.Tensor)
    return PreparedSampler(spec, sigmas if tensor else grid, grid, sigmas._version if tensor else 0, opts, key)


def solve_sampler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor | list[float], sampler: str, *,
                  seed: int | None = None, generator: torch.Generator | None = None, first_index: int = 0,
                  noise_sampler: NoiseSampler | None = None, progress: Progress | None = None,
                  save: str = "final", graph: str = "auto", compile: bool = False, **options: Any) -> Solution:
    """Run `sampler` from `x` (at `sigmas[0]`) along `sigmas`; the full `Solution` (xs: the state at every
    sigma for save="trajectory"; per-sample NFE).

    Noise: `noise_sampler(sigma, sigma_next)` if given (k-diffusion's signature, called in the sampler's
    order), else the default (`default_noise`) from `seed` (default: `generator.initial_seed()`, else 0) and
    the samples' global indices `first_index ..`. Without gradients the sampler runs as its recorded plan
    (eager, CUDA graph or compiled; cached per denoiser); when the grid, `x` or a tensor option requires
    grad (or an option is a tensor), it runs its definition eagerly on tensors and the result carries the
    gradient. For many batches on one grid, `prepare_sampler` checks and resolves once."""
    return prepare_sampler(sigmas, sampler, **options).solve(
        denoiser, x, seed=seed, generator=generator, first_index=first_index, noise_sampler=noise_sampler,
        progress=progress, save=save, graph=graph, compile=compile)


def _solve_differentiable(spec: SamplerSpec, denoiser: Denoiser, x: torch.Tensor, sigmas: Any,
                          noise: NoiseSampler | None, opts: Mapping[str, Any], save: str) -> tuple[Solution, int]:
    x_end, states, nfe = run_definition(spec, denoiser, x, sigmas, noise, opts)
    if not all_finite(x_end.detach()):
        raise NonFiniteState(f"non-finite state after sampler {spec.name}; {HINT}", step=len(states) - 1,
                             time=float(_check_sigmas(sigmas)[-1]))
    batch = x.shape[0]
    counts = torch.full((batch,), nfe, dtype=torch.long, device=x.device)
    xs = torch.stack([x, *states]) if save != "final" else None
    grid = torch.as_tensor(sigmas).detach().to(dtype=x.dtype, device=x.device)
    return Solution(x=x_end, xs=xs, ts=grid if xs is not None else grid[-1].expand(batch), nfe=counts,
                    accepted=torch.full_like(counts, len(states)), rejected=torch.zeros_like(counts),
                    reached=torch.ones(batch, dtype=torch.bool, device=x.device)), nfe


def run_sampler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor | list[float], sampler: str, *,
                seed: int | None = None, generator: torch.Generator | None = None, first_index: int = 0,
                noise_sampler: NoiseSampler | None = None, progress: Progress | None = None,
                graph: str = "auto", compile: bool = False, **options: Any) -> tuple[torch.Tensor, int]:
    """Run `sampler` from `x` (at `sigmas[0]`) along `sigmas` (see `solve_sampler`). Returns `(x, nfe)`."""
    return prepare_sampler(sigmas, sampler, **options).run(
        denoiser, x, seed=seed, generator=generator, first_index=first_index, noise_sampler=noise_sampler,
        progress=progress, graph=graph, compile=compile)


def sample(
    denoiser: Denoiser,
    n: int,
    dim: int,
    *,
    sampler: str = "dpmpp-2m",
    steps: int = 20,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    init_scale: float = 1.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    grid: str = "edm",
    schedule: str = "vp-linear",
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    **options: Any,
) -> tuple[torch.Tensor, int]:
    """Draw `n` samples of dimension `dim`: `x_0 = init_scale * sigma_max * z` (z ~ N(0, I) from `generator`),
    then sampler `sampler` over a `steps`-step grid (`make_grid`). Returns `(x (n, dim), nfe)`.
    """
    from gentool.core.diffusion.grids import make_grid

    require(n >= 1, f"number of samples must be >= 1, got {n}")
    sigmas = make_grid(grid, steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, schedule=schedule)
    z = torch.randn(n, dim, generator=generator, dtype=dtype, device=getattr(generator, "device", "cpu"))
    x = z.to(device) * (init_scale * float(sigmas[0]))
    return run_sampler(denoiser, x, sigmas, sampler, generator=generator, progress=progress, **options)
