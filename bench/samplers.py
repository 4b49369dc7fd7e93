"""Sampler benchmark on the GMM ring (exact denoiser): endpoint error vs NFE and samples/s.

    python bench/samplers.py [--n 2000] [--device cpu|cuda] [--dtype float64|float32]

Endpoint RMSE is against a float64 DOP853 reference (rtol 1e-12) from the same initial noise; sliced W2 is
against exact mixture samples (POT, 256 projections). Samples/s times one full sampling run.
"""

from __future__ import annotations

import argparse
import time

import ot
import torch
from gentool.core.diffusion import edm_grid, make_target, run_sampler
from gentool.core.diffusion.targets import reference_flow

NFES = (5, 10, 20, 50, 100)
TWO_EVAL = {"heun", "amed"}  # 2 NFE per step (the last step 1): steps = (NFE + 1) // 2


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler in TWO_EVAL else nfe


def run(sampler: str, nfe: int, x0: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, target, **opts):
    sigmas = edm_grid(steps_for(sampler, nfe)) if sampler != "ode" else edm_grid(2)
    if x0.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    x, used = run_sampler(
        target, x0, sigmas, sampler, generator=torch.Generator(x0.device).manual_seed(0), **opts
    )
    if x0.is_cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - start
    rmse = float(((x.double().cpu() - ref) ** 2).sum(1).mean().sqrt())
    sw = ot.sliced_wasserstein_distance(x.double().cpu().numpy(), exact.numpy(), n_projections=256, seed=0)
    return used, rmse, float(sw), x0.shape[0] / sec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    target = make_target("gmm-ring")
    g = torch.Generator().manual_seed(a.seed)
    x0 = 80.0 * torch.randn(a.n, 2, generator=g, dtype=torch.float64)
    ref = reference_flow(target, x0, 80.0)
    exact = target.sample(a.n, g)
    real_sw = ot.sliced_wasserstein_distance(
        target.sample(a.n, g).numpy(), exact.numpy(), n_projections=256, seed=0
    )
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(
        f"GMM ring (8 gaussians, std 0.1), n={a.n}, {a.dtype}, device {dev} ({name}), "
        f"{torch.get_num_threads()} thread(s); sliced W2 between two exact samples: {real_sw:.4f}"
    )
    print(f"{'sampler':<10}{'NFE':>5}{'endpoint RMSE':>15}{'sliced W2':>11}{'samples/s':>12}")
    x0 = x0.to(device=dev, dtype=dtype)
    for sampler in ("euler", "ddim", "heun", "dpmpp-2m", "amed"):
        opts = {"eta": 1.0} if sampler == "ddim" else {}
        for nfe in NFES:
            used, rmse, sw, rate = run(sampler, nfe, x0, ref, exact, target, **opts)
            label = "ddim η=1" if sampler == "ddim" else sampler
            print(f"{label:<10}{used:>5}{rmse:>15.3e}{sw:>11.4f}{rate:>12.3g}")
    for rtol in (1e-2, 1e-3, 1e-4, 1e-6):
        used, rmse, sw, rate = run("ode", 0, x0, ref, exact, target, method="dopri5", rtol=rtol, atol=rtol)
        print(f"{'dopri5':<10}{used:>5}{rmse:>15.3e}{sw:>11.4f}{rate:>12.3g}   rtol={rtol:g}")


if __name__ == "__main__":
    main()
