"""Learned schedules against every hand-designed sampler on the GMM ring (exact denoiser, float64).

    python bench/tune.py [--nfe 4,5,6,7,8,9,10] [--train 256] [--eval 4000] [--sampler unipc] [--seed 0]

Held-out endpoint error against the float64 reference flow from the same initial noise (x0 = 80 z; training
and held-out noises from different generators), measured side by side in one run, for each NFE budget:
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
from gentool.core.diffusion.samplers import SAMPLERS
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
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = make_target("gmm-ring")
    x_tr = 80.0 * torch.randn(args.train, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    x_ev = 80.0 * torch.randn(args.eval, 2, generator=torch.Generator().manual_seed(args.seed + 1_000_003),
                              dtype=torch.float64)
    start = time.perf_counter()
    ref_tr, ref_ev = reference_flow(target, x_tr, 80.0), reference_flow(target, x_ev, 80.0)
    print(f"teacher (float64 DOP853, rtol 1e-12): {args.train} + {args.eval} solves in "
          f"{time.perf_counter() - start:.1f} s")
    summary = []
    for nfe in _ints(args.nfe):
        print(f"\nNFE {nfe}: held-out endpoint RMSE / median over {args.eval} noises")
        print(f"  {'sampler':<14} {'steps':>5} {'EDM grid':>19} {'searched EDM grid':>27}")
        best_edm, best_searched = (9e9, ""), (9e9, "")
        for name in tunable_samplers():
            spec = SAMPLERS[name]
            steps = steps_for(spec, nfe)
            e = endpoint_errors(run_schedule(spec, target, x_ev, edm_grid(steps)), ref_ev)
            grid, found = search_edm_grid(spec, target, x_tr, ref_tr, steps, 80.0, 0.002)
            s = endpoint_errors(run_schedule(spec, target, x_ev, grid), ref_ev)
            print(f"  {name:<14} {steps:>5} {e['rmse']:>9.4f} / {e['median']:<7.4f} {s['rmse']:>9.4f} / "
                  f"{s['median']:<7.4f} (ρ={found['rho']:g}, σ_min={found['sigma_min']:g})")
            best_edm = min(best_edm, (e["rmse"], name))
            best_searched = min(best_searched, (s["rmse"], name))
        start = time.perf_counter()
        schedule = tune(target, args.sampler, nfe, x_tr, ref_tr, sigma_max=80.0, sigma_min=0.002,
                        settings=Optimiser(iterations=args.iterations))
        seconds = time.perf_counter() - start
        t = endpoint_errors(schedule.run(target, x_ev), ref_ev)
        print(f"  {'tuned ' + args.sampler:<14} {len(schedule.sigmas) - 1:>5} {t['rmse']:>9.4f} / "
              f"{t['median']:<7.4f} (NFE {schedule.nfe}, tuned in {seconds:.1f} s)")
        summary.append((nfe, best_edm, best_searched, t, seconds))
    print("\nsummary: held-out RMSE (best sampler)")
    print(f"  {'NFE':>3} {'best EDM grid':>22} {'best searched EDM':>22} {'tuned':>8} {'tuned/best EDM':>15} "
          f"{'tuned/best searched':>20} {'tune s':>7}")
    for nfe, (e, en), (s, sn), t, seconds in summary:
        print(f"  {nfe:>3} {e:>9.4f} {en:<12} {s:>9.4f} {sn:<12} {t['rmse']:>8.4f} {t['rmse'] / e:>15.3f} "
              f"{t['rmse'] / s:>20.3f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
