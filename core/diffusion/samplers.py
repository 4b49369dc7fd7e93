"""Samplers over a denoiser `D(x, sigma)` on a grid `sigma_0 > ... > sigma_{N-1} > sigma_N` (usually 0).

Every sampler runs on the solver core: a plan sampler (`sampler_plans.py`) turns the grid into a
`gentool.core.solvers.Plan` that the one plan runner executes (eager, compiled, or captured in a CUDA
graph; finiteness check naming the step and sigma; trajectory saving; per-sample NFE); `ode` integrates
the PF-ODE in log sigma with `odeint`. The registry `SAMPLERS` holds each sampler's term, NFE per step,
order and options; `sampler_table()` renders it. The plain-loop versions are in `plain_loops.py`.

    x, nfe = run_sampler(denoiser, x0, sigmas, "dpmpp-3m", compile=True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.diffusion import sampler_plans as plans
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.errors import choose, require
from gentool.core.progress import Progress
from gentool.core.solvers import ADAPTIVE_METHODS, FIXED_METHODS, CacheScope, Plan, Solution, odeint
from gentool.core.solvers.plan import make_plan
from gentool.core.solvers.runner import draw_noise, solve_plan
from gentool.core.solvers.term import broadcast_to_state

HINT = "use more steps (a finer sigma grid), or float64"


class DenoisedTerm:
    """The term `F(sigma, x) = D(x, sigma)` (sigma a per-sample (B,) tensor)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma)


class DirectionTerm:
    """The PF-ODE direction `F(sigma, x) = dx/dsigma = (x - D(x, sigma)) / sigma`."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x - self.denoiser(x, sigma)) / broadcast_to_state(sigma, x)


class LogSigmaTerm:
    """The PF-ODE in u = log sigma: `F(u, x) = dx/du = x - D(x, e^u)`."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - self.denoiser(x, u.exp())


def _between(lo: float, hi: float, integer: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        ok = (float(value).is_integer() if integer else math.isfinite(float(value))) and lo <= float(value) <= hi
        require(ok, f"{name} must be {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}], got {value!r}")
        return int(value) if integer else float(value)
    return check


def _positive(name: str, value: Any) -> float:
    require(math.isfinite(float(value)) and float(value) > 0, f"{name} must be > 0, got {value!r}")
    return float(value)


def _method(name: str, value: Any) -> str:
    return choose(name, str(value), FIXED_METHODS + ADAPTIVE_METHODS)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler: its plan builder (None for `ode`), the term it evaluates, NFE per step, its observed
    convergence order on the EDM grid, and its options (default, validator)."""

    name: str
    build: Callable[..., list] | None
    term: type
    nfe_per_step: str
    order: str
    options: Mapping[str, tuple[Any, Callable[[str, Any], Any]]] = field(default_factory=dict)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Options with defaults filled in, validated; an unknown option is `BadInput`."""
        for name in given:
            choose(f"option of sampler {self.name!r}", name, self.options or {"(none)": None})
        return {k: check(k, given.get(k, default)) for k, (default, check) in self.options.items()}

    def steps_for_nfe(self, nfe: int) -> int:
        """Grid steps that spend about `nfe` evaluations (2-evaluation samplers: (nfe + 1) // 2)."""
        return max(1, (nfe + 1) // 2) if self.nfe_per_step.startswith("2") else nfe


ORDER_1_TO_3 = {"order": (2, _between(1, 3, integer=True))}
ORDER_1_TO_4 = {"order": (4, _between(1, 4, integer=True))}
SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    SamplerSpec("euler", plans.euler_steps, DenoisedTerm, "1", "1"),
    SamplerSpec("ddim", plans.ddim_steps, DenoisedTerm, "1", "1", {"eta": (1.0, _between(0.0, math.inf))}),
    SamplerSpec("heun", plans.heun_steps, DenoisedTerm, "2, last 1", "2"),
    SamplerSpec("dpmpp-2m", plans.dpmpp_2m_steps, DenoisedTerm, "1", "2"),
    SamplerSpec("dpmpp-3m", plans.dpmpp_3m_steps, DenoisedTerm, "1", "3"),
    SamplerSpec("dpmpp-3m-kd", plans.dpmpp_3m_kd_steps, DenoisedTerm, "1", "2"),
    SamplerSpec("amed", plans.amed_steps, DenoisedTerm, "2, last 1", "2", {"r": (0.5, _between(1e-9, 1 - 1e-9))}),
    SamplerSpec("unipc", plans.unipc_steps, DenoisedTerm, "1", "order+1", ORDER_1_TO_3),
    SamplerSpec("ipndm", plans.ipndm_steps, DirectionTerm, "1", "2", ORDER_1_TO_4),
    SamplerSpec("ipndm-v", plans.ipndm_v_steps, DirectionTerm, "1", "order", ORDER_1_TO_4),
    SamplerSpec("ode", None, LogSigmaTerm, "adaptive", "-",
                {"method": ("dopri5", _method), "rtol": (1e-5, _positive), "atol": (1e-5, _positive)}),
)}


def sampler_table() -> str:
    """A fixed-width table of the samplers: name, NFE per step, observed order, options (defaults)."""
    rows = [("sampler", "NFE/step", "order", "options")]
    for s in SAMPLERS.values():
        rows.append((s.name, s.nfe_per_step, s.order, ", ".join(f"{k}={d}" for k, (d, _) in s.options.items())))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3] for r in rows)


def _check_sigmas(sigmas: torch.Tensor | list[float]) -> tuple[float, ...]:
    grid = tuple(float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas))
    require(len(grid) >= 2, f"steps must be >= 1, got {len(grid) - 1}")
    require(all(math.isfinite(s) for s in grid), "sigma grid contains non-finite values")
    require(all(b < a for a, b in zip(grid[:-1], grid[1:], strict=True)), "sigma grid must be strictly decreasing")
    require(grid[-1] >= 0 and (len(grid) == 2 or grid[-2] > 0), "sigmas must be > 0 except the last, which may be 0")
    return grid


@functools.lru_cache(maxsize=64)
def sampler_plan(name: str, grid: tuple[float, ...], options: tuple[tuple[str, Any], ...], batch: int,
                 dtype: torch.dtype, device: torch.device) -> Plan:
    """The memoised plan of sampler `name` on `grid` (float64 coefficients; stage times in `dtype`)."""
    specs = SAMPLERS[name].build(list(grid), **dict(options))
    return make_plan((name, options, grid, batch, dtype, device), specs, grid, batch, dtype, device)


def _solve_ode(denoiser: Denoiser, x: torch.Tensor, grid: tuple[float, ...], opts: dict[str, Any], save: str,
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
        sol = odeint(LogSigmaTerm(denoiser), x, u, method=opts["method"], rtol=opts["rtol"], atol=opts["atol"],
                     progress=progress, graph=graph, compile=compile, cache_scope=CacheScope(denoiser, "log-sigma"))
        x, nfe = sol.x, sol.nfe
    if grid[-1] == 0:
        x, nfe = denoiser(x, x.new_full((x.shape[0],), pos[-1])), nfe + 1
    unknown = torch.full_like(nfe, -1)  # step counts of the ode sampler are not reported
    return Solution(x=x, xs=None, ts=x.new_full((x.shape[0],), grid[-1]), nfe=nfe, accepted=unknown,
                    rejected=unknown, reached=torch.ones_like(nfe, dtype=torch.bool))


def solve_sampler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor | list[float], sampler: str, *,
                  generator: torch.Generator | None = None, progress: Progress | None = None,
                  save: str = "final", graph: str = "auto", compile: bool = False, **options: Any) -> Solution:
    """Run `sampler` from `x` (at `sigmas[0]`) along `sigmas`, without gradients; the full `Solution`
    (xs: the state at every sigma for save="trajectory"; per-sample NFE). Stochastic samplers draw their
    noise from `generator` up front (same seed, same numbers on every path). `graph`/`compile` as in
    `odeint`; graphs and compiled steps are cached per denoiser."""
    spec = SAMPLERS[choose("sampler", sampler, SAMPLERS)]
    choose("save", save, ("final", "times", "trajectory"))
    grid, opts = _check_sigmas(sigmas), spec.resolve(options)
    with torch.no_grad():
        if spec.build is None:
            return _solve_ode(denoiser, x, grid, opts, save, graph, compile, progress)
        plan = sampler_plan(spec.name, grid, tuple(sorted(opts.items())), x.shape[0], x.dtype, x.device)
        return solve_plan(spec.term(denoiser), x, plan, noise=draw_noise(plan, x, generator), save=save,
                          graph=graph, compile=compile, progress=progress,
                          scope=CacheScope(denoiser, spec.term.__name__), label="sigma", hint=HINT)


def run_sampler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor | list[float], sampler: str, *,
                generator: torch.Generator | None = None, progress: Progress | None = None,
                graph: str = "auto", compile: bool = False, **options: Any) -> tuple[torch.Tensor, int]:
    """Run `sampler` from `x` (at `sigmas[0]`) along `sigmas`, without gradients. Returns `(x, nfe)`."""
    sol = solve_sampler(denoiser, x, sigmas, sampler, generator=generator, progress=progress, graph=graph,
                        compile=compile, **options)
    return sol.x, int(sol.nfe.max())


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
