"""`gentool sample`: sample an analytic target or a trained denoiser with a diffusion-ODE sampler."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import typer
from gentool.cli._common import console, handle_errors, progress_bar, resolve_device
from gentool.core.data import DATASETS, sample_data
from gentool.core.diffusion import (
    GRIDS,
    SAMPLERS,
    SCHEDULES,
    TARGETS,
    load_checkpoint,
    make_grid,
    make_target,
)
from gentool.core.diffusion.checkpoints import denoiser_from_state
from gentool.core.diffusion.samplers import run_sampler
from gentool.core.diffusion.targets import MixtureTarget, reference_flow
from gentool.core.errors import BadInput, choose, require
from gentool.core.io import atomic_save_npz, atomic_savefig, atomic_write_json, write_run_config
from gentool.core.nn import make_generator

MMD_MAX = 2000  # MMD is O(n^2): computed on the first MMD_MAX samples


def distribution_errors(x: torch.Tensor, ref: torch.Tensor, seed: int) -> dict[str, float]:
    """Sliced W2 and MMD^2 of samples `x` against reference samples `ref` (gentool.core.metrics)."""
    x, ref = x.double().cpu(), ref.double().cpu()
    from gentool.core.metrics import mmd2, sliced_w2

    return {
        "sliced_w2": float(sliced_w2(x, ref, generator=make_generator(seed))),
        "mmd2": float(mmd2(x[:MMD_MAX], ref[:MMD_MAX])),
    }


def _plot(x: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().cpu().float()
    if x.shape[1] == 64:  # 8x8 digits: image grid
        k = min(10, int(x.shape[0] ** 0.5))
        fig, axes = plt.subplots(k, k, figsize=(k, k))
        for ax, img in zip(axes.flat, x[: k * k], strict=False):
            ax.imshow(img.reshape(8, 8).clamp(-1, 1), cmap="gray_r", vmin=-1, vmax=1)
            ax.axis("off")
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_aspect("equal")
        ax.set_title(title)
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def _source(target: str | None, model: Path | None, dim: int, dev: torch.device) -> tuple[Any, int, dict]:
    """The denoiser to sample, its dimension, and facts for config.json."""
    require((target is None) != (model is None), "give exactly one of --target and --model")
    if model is not None:
        state = load_checkpoint(model)
        return (
            denoiser_from_state(state, dev),
            int(state["dim"]),
            {"model": str(model), "data": state.get("data")},
        )
    choose("target", target, TARGETS)
    t = make_target(target, dim if target in ("gaussian", "gmm-random", "point") else 2)
    return t, t.dim, {"target": target}


def sample_command(
    target: str = typer.Option(None, "--target", help=f"Analytic target: {', '.join(TARGETS)}."),
    model: Path = typer.Option(
        None, "--model", help="Checkpoint of `gentool train` (file or run directory)."
    ),
    sampler: str = typer.Option("dpmpp-2m", "--sampler", help=f"{', '.join(SAMPLERS)}."),
    steps: int = typer.Option(20, "--steps", help="Grid steps (sigma levels; the last goes to 0)."),
    n: int = typer.Option(10000, "-n", "--n", help="Number of samples."),
    out: Path = typer.Option(Path("run"), "--out"),
    dim: int = typer.Option(2, "--dim", help="Dimension for gaussian, gmm-random, point."),
    grid: str = typer.Option("edm", "--grid", help=f"{', '.join(GRIDS)}."),
    schedule: str = typer.Option(
        "vp-linear", "--schedule", help=f"For --grid uniform-t: {', '.join(SCHEDULES)}."
    ),
    sigma_min: float = typer.Option(0.002, "--sigma-min"),
    sigma_max: float = typer.Option(80.0, "--sigma-max"),
    rho: float = typer.Option(7.0, "--rho"),
    eta: float = typer.Option(1.0, "--eta", help="ddim stochasticity."),
    r: float = typer.Option(0.5, "--r", help="amed mean-value ratio."),
    method: str = typer.Option("dopri5", "--method", help="ode: core solver method."),
    rtol: float = typer.Option(1e-5, "--rtol", help="ode: adaptive tolerance."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    reference: bool = typer.Option(
        True, "--reference/--no-reference", help="Endpoint error vs float64 reference."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Sample with a diffusion-ODE sampler; write samples.npz, a plot, metrics.json and config.json."""
    choose("sampler", sampler, SAMPLERS)
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    require(n >= 1, f"-n must be >= 1, got {n}")
    choose("schedule", schedule, SCHEDULES)
    dev = resolve_device(device)
    den, d, facts = _source(target, model, dim, dev)
    sigmas = make_grid(grid, steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, schedule=schedule)
    opts = {"ddim": {"eta": eta}, "amed": {"r": r}, "ode": {"method": method, "rtol": rtol, "atol": rtol}}
    config = {
        **facts,
        "sampler": sampler,
        "steps": steps,
        "n": n,
        "dim": d,
        "grid": grid,
        "schedule": schedule,
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "rho": rho,
        **opts.get(sampler, {}),
    }
    write_run_config(out, config, seed, dev)
    analytic = isinstance(den, MixtureTarget)
    dtype = torch.float64 if analytic else torch.float32
    g = make_generator(seed)
    x0 = (torch.randn(n, d, generator=g, dtype=dtype) * float(sigmas[0])).to(dev)
    start = time.perf_counter()
    with progress_bar(f"sample {sampler}", enabled=progress) as bar:
        x, nfe = run_sampler(den, x0, sigmas, sampler, generator=g, progress=bar, **opts.get(sampler, {}))
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(x).all()):
        raise BadInput(f"sampler {sampler!r} produced non-finite samples at {steps} steps")
    metrics: dict[str, Any] = {"nfe": nfe, "seconds": seconds, "samples_per_s": n / seconds}
    if analytic:
        metrics.update(_analytic_metrics(den, x0, x, float(sigmas[0]), seed, reference))
    elif facts.get("data") in DATASETS:  # a trained model: distance to held-out data
        held_out = sample_data(facts["data"], n, make_generator(seed + 12345), split="test")
        metrics.update({f"{k}_heldout": v for k, v in distribution_errors(x, held_out, seed).items()})
    atomic_save_npz(out / "samples.npz", x=x.cpu(), x0=x0.cpu(), sigmas=sigmas)
    _plot(
        x,
        out / ("grid.png" if d == 64 else "scatter.png"),
        f"{facts.get('target', 'model')} {sampler} NFE={nfe}",
    )
    atomic_write_json(out / "metrics.json", metrics)
    console.print(
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    )


def _analytic_metrics(
    target: MixtureTarget, x0: torch.Tensor, x: torch.Tensor, sigma0: float, seed: int, reference: bool
) -> dict[str, float]:
    out: dict[str, float] = {}
    if reference:
        ref = reference_flow(target, x0, sigma0).to(x.device)
        err = ((x - ref) ** 2).sum(1).sqrt()
        out.update(endpoint_rmse=float(err.pow(2).mean().sqrt()), endpoint_max=float(err.max()))
    exact = target.sample(x.shape[0], make_generator(seed + 12345)).to(x.device)
    out.update(distribution_errors(x, exact, seed))
    return out


def register(app: typer.Typer) -> None:
    app.command("sample")(handle_errors(sample_command))
