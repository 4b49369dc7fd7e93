"""Sampler benchmark: speed and accuracy of every plan sampler, side by side.

For each sampler x batch x NFE: microseconds per step of gentool eager (the recorded plan, `graph="off"`),
gentool graph (CUDA only: the whole solve replayed from one CUDA graph), gentool compiled (`compile=True`;
on CUDA also graph-captured), the model alone (the eager solve's denoiser calls on their own inputs,
recorded once, for the model's time depends on its inputs' values: one CUDA graph on CUDA, an eager loop on
CPU), the sampler's definition run as a plain loop on tensors (what k-diffusion's `sampling.py` does) and,
for a stochastic sampler, its default noise drawn alone (the RNG's share of eager);
plus the endpoint RMSE of the sampler at that NFE on the gmm-ring (exact denoiser, float64) against the
float64 reference solve (`reference_flow`: dopri5, rtol 1e-10) from the same noise. The timed denoiser is
`D(x, sigma) = MLP([x, log sigma])`, 3->64->64->2 SiLU, float32. The gentool contenders time a sampler
prepared once (`prepare_sampler`: options and grid checked), as a `gentool sample` run solves batch after batch:
each timed call is the run's next batch (new samples, so new noise keys). Returns rows (dicts); rendering is
the caller's job (`gentool bench samplers`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.diffusion.grids import edm_grid
from gentool.core.diffusion.samplers import (
    SAMPLERS,
    PreparedSampler,
    default_noise,
    draw_all,
    folds,
    prepare_sampler,
    run_definition,
    run_sampler,
    sampler_plan,
)
from gentool.core.diffusion.targets import make_target, reference_flow
from gentool.core.errors import choose
from gentool.core.nn import make_generator, mlp, seeded
from gentool.core.solvers.benchmark import best_times, model_floor, recorded_inputs
from gentool.core.solvers.runner import noise_tensor

CPU_BATCH_SIZES = (1024, 16384)
GPU_BATCH_SIZES = (1024, 65536, 1048576)
NFES = (10, 50)
PLAN_SAMPLERS: tuple[str, ...] = tuple(name for name, spec in SAMPLERS.items() if spec.fn is not None)
SIGMA_MAX = 80.0


@dataclass(frozen=True)
class SamplerBenchConfig:
    """What to measure."""

    batch_sizes: tuple[int, ...]
    nfes: tuple[int, ...] = NFES
    samplers: tuple[str, ...] = PLAN_SAMPLERS
    compile: bool = False
    repeats: int = 3
    accuracy_n: int = 2000
    seed: int = 0
    clock: str = "wall"  # "cpu": process CPU time (see `best_times`)


class MLPDenoiser(torch.nn.Module):
    """`D(x, sigma) = MLP([x, log sigma])` (2-D data): the timed model."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        with seeded(seed):
            self.net = mlp([3, 64, 64, 2], "silu")

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, sigma.log()[:, None]], dim=1))


def check_samplers(names: tuple[str, ...]) -> None:
    """Validate sampler names (BadInput naming the allowed ones)."""
    for name in names:
        choose("sampler (plan samplers only)", name, PLAN_SAMPLERS)


def ring_reference(cfg: SamplerBenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, x_ref): `accuracy_n` starts at sigma_max (float64) and their exact endpoints on the gmm-ring."""
    x0 = SIGMA_MAX * torch.randn(cfg.accuracy_n, 2, generator=make_generator(cfg.seed), dtype=torch.float64)
    return x0, reference_flow(make_target("gmm-ring"), x0, SIGMA_MAX)


def ring_error(cfg: SamplerBenchConfig, reference: tuple[torch.Tensor, torch.Tensor], name: str, nfe: int) -> float:
    """Endpoint RMSE sqrt(mean_i |x_i - x_ref,i|^2) of sampler `name` at `nfe` from `ring_reference`'s starts."""
    x0, ref = reference
    x, _ = run_sampler(make_target("gmm-ring"), x0, edm_grid(SAMPLERS[name].steps_for_nfe(nfe)), name,
                       seed=cfg.seed + 1)
    return float(((x - ref) ** 2).sum(1).mean().sqrt())


def ring_errors(cfg: SamplerBenchConfig, progress: Callable[..., None]) -> dict[tuple[str, int], float]:
    """Endpoint RMSE at each (sampler, NFE) on the gmm-ring, float64, `accuracy_n` samples (CPU)."""
    reference = ring_reference(cfg)
    out, total = {}, len(cfg.samplers) * len(cfg.nfes)
    for name in cfg.samplers:
        for nfe in cfg.nfes:
            out[name, nfe] = ring_error(cfg, reference, name, nfe)
            progress(len(out), total)
    return out


def _contenders(cfg: SamplerBenchConfig, name: str, den: MLPDenoiser, x0: torch.Tensor, sigmas: torch.Tensor,
                pairs: tuple[tuple[float, float], ...]) -> dict[str, Callable[[], object]]:
    """The timed functions of one case. Each is a run of its own: each call solves that run's next batch (the
    next `first_index`), so its samples are new and their noise keys are made anew, as in `gentool sample`, not
    memoised from the last call."""
    spec, grid, dev, model = SAMPLERS[name], sigmas.tolist(), x0.device, lambda t, x: den(x, t)
    runs_first = lambda: functools.partial(next, itertools.count(len(x0), len(x0)))  # noqa: E731 - a run's batches
    loop_first, noise_first = runs_first(), runs_first()
    sampler = prepare_sampler(sigmas, name)  # once per run, as `gentool sample` does: a batch is one `run`
    runs: dict[str, Callable[[], object]] = {
        "eager": _run_batches(sampler, den, x0, cfg.seed, runs_first(), graph="off"),
        "loop": lambda: run_definition(spec, den, x0, grid, default_noise(spec, x0, grid, cfg.seed, loop_first())
                                       if spec.noise else None, spec.resolve({})),
        "floor": model_floor(model, recorded_inputs(model, lambda f: prepare_sampler(sigmas, name).run(
            lambda x, sigma: f(sigma, x), x0, seed=cfg.seed, graph="off"))),
    }
    if spec.noise:  # the default noise alone, as the eager solve draws it: the part of "eager" that is the RNG
        runs["noise"] = lambda: _draw(default_noise(spec, x0, grid, cfg.seed, noise_first()), pairs, x0)
    if dev.type == "cuda":
        runs["graph"] = _run_batches(prepare_sampler(sigmas, name), den, x0, cfg.seed, runs_first(), graph="on")
    if cfg.compile:
        runs["compiled"] = _run_batches(prepare_sampler(sigmas, name), den, x0, cfg.seed, runs_first(), compile=True)
    return runs


def _draw(noise: Any, pairs: tuple[tuple[float, float], ...], x0: torch.Tensor) -> torch.Tensor | None:
    """A plan's draws from `noise`, made as the eager solve makes them (`folds`: a Brownian path's own draws)."""
    return noise_tensor(draw_all(noise, pairs, x0, folds(noise)))


def _run_batches(sampler: PreparedSampler, den: MLPDenoiser, x0: torch.Tensor, seed: int, first: Callable[[], int],
                 **how: Any) -> Callable[[], object]:
    """A run of `sampler` from x0: each call solves its next batch (`first()`: that batch's first sample)."""
    return lambda: sampler.run(den, x0, seed=seed, first_index=first(), **how)


def sampler_cases(cfg: SamplerBenchConfig) -> list[tuple[str, int, int]]:
    """The table's cases (sampler, batch, NFE budget), in table order."""
    return [(name, batch, nfe) for name in cfg.samplers for batch in cfg.batch_sizes for nfe in cfg.nfes]


def sampler_row(cfg: SamplerBenchConfig, device: torch.device, den: MLPDenoiser, case: tuple[str, int, int],
                error: float) -> dict:
    """One case's row: per-step times (s) of each contender, measured together (so their ratios are same-run
    ratios), and the gmm-ring endpoint RMSE `error` at that NFE."""
    name, batch, nfe = case
    x0 = SIGMA_MAX * torch.randn(batch, 2, generator=make_generator(cfg.seed, device), device=device)
    steps = SAMPLERS[name].steps_for_nfe(nfe)
    sigmas = edm_grid(steps)
    plan, pairs = sampler_plan(name, tuple(sigmas.tolist()), tuple(sorted(SAMPLERS[name].resolve({}).items())),
                               batch, x0.dtype, device)  # the plan run_sampler will use (memoised)
    with torch.no_grad():
        times = best_times(_contenders(cfg, name, den, x0, sigmas, pairs), device, cfg.repeats, clock=cfg.clock)
    per_step = {k: v / steps for k, v in times.items()}
    return {"sampler": name, "batch": batch, "nfe": plan.nfe, "steps": steps, "clock": cfg.clock,
            "endpoint_rmse": error, **{f"{k}_s": v for k, v in per_step.items()}}


def sampler_rows(cfg: SamplerBenchConfig, device: torch.device, errors: dict[tuple[str, int], float],
                 progress: Callable[..., None]) -> list[dict]:
    """One row per sampler x batch x NFE (`sampler_row`), the RMSE from `errors` (`ring_errors`)."""
    den = MLPDenoiser(cfg.seed).to(device)
    rows, cases = [], sampler_cases(cfg)
    for case in cases:
        rows.append(sampler_row(cfg, device, den, case, errors[case[0], case[2]]))
        progress(len(rows), len(cases))
    return rows
