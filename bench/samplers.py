"""Sampler accuracy on the GMM ring (exact denoiser): endpoint RMSE at each NFE budget and at each step count.

    python bench/samplers.py [--n 2000] [--seed 0] [--nfe 5,10,20,50,100] [--steps 5,10,20,50]

Endpoint RMSE is against a float64 dopri5 reference (rtol 1e-10) from the same initial noise
(x0 = 80 z, z ~ N(0, I) from the seed). The first table fixes the NFE budget (2-evaluation samplers take
(NFE + 1) // 2 steps); the second fixes the number of grid steps, the convention of SPEC §2's k-diffusion
figures (Euler 0.312/0.140/0.061/0.022, DPM++(2M) 0.676/0.257/0.028/0.005, Heun 2.74/0.128/0.016/0.002
at 5/10/20/50 steps). Speed: `gentool bench samplers`.
"""

from __future__ import annotations

import argparse

import torch
from gentool.core.diffusion import SAMPLERS, edm_grid, make_target, run_sampler
from gentool.core.diffusion.targets import reference_flow

SAMPLER_RUNS = [(name, {}) for name, spec in SAMPLERS.items() if spec.fn is not None] + [("unipc", {"order": 3})]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def rmse(target, x0: torch.Tensor, ref: torch.Tensor, sampler: str, steps: int, seed: int, **opts) -> tuple[float, int]:
    x, nfe = run_sampler(target, x0, edm_grid(steps), sampler, seed=seed, **opts)
    return float(((x - ref) ** 2).sum(1).mean().sqrt()), nfe


def table(title: str, counts: list[int], by_nfe: bool, target, x0, ref, seed: int) -> None:
    print(f"\n{title}")
    print(f"{'sampler':<16}" + "".join(f"{c:>15}" for c in counts))
    for sampler, opts in SAMPLER_RUNS:
        cells = []
        for c in counts:
            steps = SAMPLERS[sampler].steps_for_nfe(c) if by_nfe else c
            err, nfe = rmse(target, x0, ref, sampler, steps, seed, **opts)
            cells.append(f"{err:.3g} ({nfe})")
        label = sampler + "".join(f" {k}={v:g}" for k, v in opts.items())
        print(f"{label:<16}" + "".join(f"{c:>15}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nfe", default="5,10,20,50,100")
    p.add_argument("--steps", default="5,10,20,50")
    a = p.parse_args()
    target = make_target("gmm-ring")
    x0 = 80.0 * torch.randn(a.n, 2, generator=torch.Generator().manual_seed(a.seed), dtype=torch.float64)
    ref = reference_flow(target, x0, 80.0)
    print(f"GMM ring (8 Gaussians, std 0.1), n={a.n}, seed {a.seed}, float64, EDM grid 80 -> 0.002 -> 0; "
          "cells: endpoint RMSE (NFE)")
    table("by NFE budget", _ints(a.nfe), True, target, x0, ref, a.seed + 1)
    table("by grid steps", _ints(a.steps), False, target, x0, ref, a.seed + 1)


if __name__ == "__main__":
    main()
