"""Learned schedules against every hand-designed sampler, on the GMM ring (exact denoiser, float64) or a model.

    python bench/tune.py [--nfe 4,5,6,7,8,9,10] [--train 1024] [--eval 4000] [--sampler unipc] [--seed 0]
    python bench/tune.py --model RUN_DIR --nfe 5 --train 256 --eval 1000 [--teacher-rtol 1e-5]

Held-out endpoint error against a converged solve from the same initial noise (the ring: the float64 reference
flow, x0 = 80 z; a model: the core's dopri5 at --teacher-rtol to the model's σ_min, then the step to 0, x0 = σ_max
z; training and held-out noises from different generators), measured side by side in one run, for each NFE:
every deterministic sampler on the EDM grid (ρ = 7, σ_min = 0.002); the same samplers on the EDM grid whose
(ρ, σ_min) minimise their training error (the cheap baseline); and `gentool tune`'s learned schedule
(`--sampler` base, everything learned). Prints RMSE and median per cell, then the summary: the best of
each family and the ratio tuned / best hand-designed, with the tuning time.
"""

from __future__ import annotations

import argparse
import time

import torch
from gentool.core.diffusion.grids import edm_grid
from gentool.core.diffusion.samplers import SAMPLERS, solve_sampler
from gentool.core.diffusion.sources import model_source
from gentool.core.diffusion.targets import make_target, reference_flow
from gentool.core.diffusion.tuning import (
    Optimiser,
    endpoint_errors,
    run_schedule,
    search_edm_grid,
    steps_for,
    tunable_samplers,
    tune,
)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe", default="4,5,6,7,8,9,10")
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--eval", type=int, default=4000)
    ap.add_argument("--sampler", default="unipc")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="a gentool train run directory or checkpoint (default: the ring)")
    ap.add_argument("--teacher-rtol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.model is None:
        target, shape, dtype, (lo, hi) = make_target("gmm-ring"), (2,), torch.float64, (0.002, 80.0)
    else:
        source = model_source(args.model, "cpu")
        for p in source.denoiser.parameters():
            p.requires_grad_(False)
        target, shape, dtype, (lo, hi) = source.denoiser, source.shape, torch.float32, source.sigma_range

    def noise(n: int, seed: int) -> torch.Tensor:
        return hi * torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)

    def teacher(x: torch.Tensor) -> torch.Tensor:
        if args.model is None:
            return reference_flow(target, x, hi)
        return solve_sampler(target, x, [hi, lo, 0.0], "ode", method="dopri5", rtol=args.teacher_rtol,
                             atol=args.teacher_rtol).x

    x_tr, x_ev = noise(args.train, args.seed), noise(args.eval, args.seed + 1_000_003)
    start = time.perf_counter()
    with torch.no_grad():
        ref_tr, ref_ev = teacher(x_tr), teacher(x_ev)
    print(f"teacher: {args.train} + {args.eval} solves in {time.perf_counter() - start:.1f} s")
    summary = []
    for nfe in _ints(args.nfe):
        print(f"\nNFE {nfe}: held-out endpoint RMSE / median over {args.eval} noises")
        print(f"  {'sampler':<14} {'steps':>5} {'EDM grid':>19} {'searched EDM grid':>27}")
        best_edm, best_searched = (9e9, ""), (9e9, "")
        for name in tunable_samplers():
            spec = SAMPLERS[name]
            steps = steps_for(spec, nfe)
            with torch.no_grad():
                e = endpoint_errors(run_schedule(spec, target, x_ev, edm_grid(steps, lo, hi).to(dtype)), ref_ev)
                grid, found = search_edm_grid(spec, target, x_tr, ref_tr, steps, hi, lo)
                s = endpoint_errors(run_schedule(spec, target, x_ev, grid.to(dtype)), ref_ev)
            print(f"  {name:<14} {steps:>5} {e['rmse']:>9.4f} / {e['median']:<7.4f} {s['rmse']:>9.4f} / "
                  f"{s['median']:<7.4f} (ρ={found['rho']:g}, σ_min={found['sigma_min']:g})")
            best_edm = min(best_edm, (e["rmse"], name))
            best_searched = min(best_searched, (s["rmse"], name))
        start = time.perf_counter()
        cpu = time.process_time()
        schedule = tune(target, args.sampler, nfe, x_tr, ref_tr, sigma_max=hi, sigma_min=lo,
                        settings=Optimiser(iterations=args.iterations))
        cpu = time.process_time() - cpu
        seconds = time.perf_counter() - start
        t = endpoint_errors(schedule.run(target, x_ev), ref_ev)
        print(f"  {'tuned ' + args.sampler:<14} {len(schedule.sigmas) - 1:>5} {t['rmse']:>9.4f} / "
              f"{t['median']:<7.4f} (NFE {schedule.nfe}, tuned in {seconds:.1f} s wall, {cpu:.1f} s CPU)")
        summary.append((nfe, best_edm, best_searched, t, seconds))
    print("\nsummary: held-out RMSE (best sampler)")
    print(f"  {'NFE':>3} {'best EDM grid':>22} {'best searched EDM':>22} {'tuned':>8} {'tuned/best EDM':>15} "
          f"{'tuned/best searched':>20} {'tune s':>7}")
    for nfe, (e, en), (s, sn), t, seconds in summary:
        print(f"  {nfe:>3} {e:>9.4f} {en:<12} {s:>9.4f} {sn:<12} {t['rmse']:>8.4f} {t['rmse'] / e:>15.3f} "
              f"{t['rmse'] / s:>20.3f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
