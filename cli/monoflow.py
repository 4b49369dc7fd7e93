"""`gentool monoflow`: train a MonoFlow generator, move a particle cloud, or run an exact-ratio flow."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import typer
from gentool.cli._common import console, handle_errors, progress_bar, resolve_device
from gentool.core.data import DATASETS, sample_data
from gentool.core.errors import BadInput, choose, require
from gentool.core.io import append_jsonl, atomic_torch_save, atomic_write_jsonl, read_jsonl, write_run_config
from gentool.core.monoflow import (
    H_FUNCTIONS,
    MonoFlowConfig,
    init_generator_run,
    sample_generator,
    train_steps,
)
from gentool.core.monoflow.evaluate import sample_metrics, scatter_png
from gentool.core.monoflow.exact import TARGETS, analytic_target
from gentool.core.monoflow.particles import ExactRun, exact_steps, init_particle_run, particle_steps
from gentool.core.nn import make_generator, seeded

MODES = ("generator", "particles", "exact")
CKPT = "checkpoint.pt"


def _build(mode: str, data: str, target: str, n: int, n_train: int, cfg: MonoFlowConfig, seed: int,
           device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Generator, str | None]:
    """The run, training data, reference samples for metrics, the RNG, and the data name for mode coverage."""
    rng = make_generator(seed)
    if mode == "exact":
        tg = analytic_target(target)
        x0 = tg.initial.sample(n, rng).float().to(device)
        ref = tg.sample(n, rng).float().to(device)
        return ExactRun(cfg, x0, tg.log_prob), ref, ref, rng, "ring" if target == "gmm-ring" else None
    x_train = sample_data(data, n_train, rng, device=device)
    ref = sample_data(data, n, rng, device=device)
    if mode == "particles":
        x0 = torch.randn(n, x_train.shape[1], generator=rng).to(device)
        return init_particle_run(x0, cfg, seed=seed), x_train, ref, rng, data
    with seeded(seed):
        run = init_generator_run(x_train.shape[1], cfg, device=device)
    return run, x_train, ref, rng, data


def _advance(run: Any, mode: str, x_train: torch.Tensor, k: int, rng: torch.Generator, progress: Any) -> dict:
    if mode == "exact":
        return exact_steps(run, k, progress)
    if mode == "particles":
        return particle_steps(run, x_train, k, rng, progress)
    return train_steps(run, x_train, k, rng, progress)


def _samples(run: Any, mode: str, n: int, seed: int) -> torch.Tensor:
    if mode == "generator":
        return sample_generator(run.generator, n, run.latent_dim, generator=make_generator(seed + 1))
    return run.particles


def _resume(run: Any, out: Path, rng: torch.Generator) -> None:
    """Load the last checkpoint and drop metric rows written after it."""
    ckpt = out / CKPT
    require(ckpt.exists(), f"--resume: no checkpoint at {ckpt}")
    try:
        run.load_state_dict(torch.load(ckpt, weights_only=False), rng)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise BadInput(f"--resume: checkpoint {ckpt} does not match this run (data shape mismatch or other "
                       f"settings): {str(exc).splitlines()[0]}") from None
    rows = read_jsonl(out / "metrics.jsonl")
    atomic_write_jsonl(out / "metrics.jsonl", [r for r in rows if r["step"] <= run.step])


@dataclass(frozen=True)
class RunSpec:
    """What to run, besides the hyper-parameters: mode, data or target, sample counts, evaluation period."""

    mode: str
    data: str
    target: str
    n: int
    n_train: int
    eval_every: int


def run_monoflow(spec: RunSpec, cfg: MonoFlowConfig, out: Path, seed: int, device: torch.device, resume: bool,
                 show_progress: bool = True) -> list[dict]:
    """The whole run: build or resume, then alternate `eval_every` steps, metrics + snapshot, checkpoint."""
    mode, n, eval_every = spec.mode, spec.n, spec.eval_every
    run, x_train, real, rng, cover = _build(mode, spec.data, spec.target, n, spec.n_train, cfg, seed, device)
    dim = _samples(run, mode, 2, seed).shape[1]
    require(real.shape[1] == dim, f"data shape mismatch: model dim {dim}, data dim {real.shape[1]}")
    if resume:
        _resume(run, out, rng)
    write_run_config(out, {**asdict(spec), **cfg.to_dict()}, seed, device)
    snaps: list[tuple[str, torch.Tensor]] = []
    with progress_bar(f"monoflow {mode} h={cfg.h}", enabled=show_progress) as progress:
        while run.step < cfg.steps:
            info = _advance(run, mode, x_train, min(eval_every, cfg.steps - run.step), rng, progress)
            fake = _samples(run, mode, n, seed)
            row = {"step": run.step, **info, **sample_metrics(real, fake, data=cover, seed=seed)}
            run.history.append(row)
            append_jsonl(out / "metrics.jsonl", [row])
            snaps = [*snaps, (f"step {run.step}", fake.cpu())][-4:]
            scatter_png(out / "snapshots" / f"step_{run.step:07d}.png", real, [(f"step {run.step}", fake)])
            atomic_torch_save(out / CKPT, run.state_dict(rng))
    scatter_png(out / "final.png", real, snaps or [("final", _samples(run, mode, n, seed))])
    return read_jsonl(out / "metrics.jsonl")


def register(app: typer.Typer) -> None:
    @app.command("monoflow")
    @handle_errors
    def monoflow(
        data: str = typer.Option("ring", help=f"Data set (generator/particles): {', '.join(DATASETS)}."),
        h: str = typer.Option("logit", "--h", help=f"Monotone h: {', '.join(H_FUNCTIONS)}."),
        mode: str = typer.Option("generator", help=f"Mode: {', '.join(MODES)}."),
        target: str = typer.Option("gaussian-1d", help=f"Exact-mode target: {', '.join(TARGETS)}."),
        steps: int = typer.Option(2000, help="Steps (generator) or rounds (particles, exact)."),
        eval_every: int = typer.Option(500, help="Metrics, snapshot and checkpoint every K steps."),
        n: int = typer.Option(2000, "-n", help="Particles (particles, exact) and samples used for metrics."),
        n_train: int = typer.Option(20_000, help="Training samples from --data (generator, particles)."),
        lr_d: float = typer.Option(2e-4, help="Discriminator Adam learning rate."),
        lr_g: float = typer.Option(1e-4, help="Generator Adam learning rate."),
        k_gen: int = typer.Option(1, help="Generator steps per D step (k > 1: distillation loss)."),
        shift: float = typer.Option(0.0, help="Shift C of the vanilla h = softplus(d + C)."),
        dt: float = typer.Option(0.05, help="Flow time per round (particles, exact)."),
        solver_steps: int = typer.Option(1, help="Solver steps per round (particles, exact)."),
        method: str = typer.Option("euler", help="Fixed-step solver method (particles, exact)."),
        batch_size: int = typer.Option(512, help="Minibatch size."),
        out: Path = typer.Option(Path("runs/monoflow"), help="Run directory."),
        seed: int = typer.Option(0, help="Random seed."),
        device: str = typer.Option("cpu", help="auto, cpu or cuda."),
        resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    ) -> None:
        """MonoFlow: particles follow dx/dt = ∇h(d(x)), d the discriminator's log-ratio (SPEC §3)."""
        choose("mode", mode, MODES)
        choose("data set", data, DATASETS)
        choose("target", target, TARGETS)
        require(eval_every >= 1, f"eval-every must be >= 1, got {eval_every}")
        require(n >= 2 and n_train >= 2, f"-n and --n-train must be >= 2, got {n}, {n_train}")
        cfg = MonoFlowConfig(h=h, shift=shift, steps=steps, lr_d=lr_d, lr_g=lr_g, k_gen=k_gen, dt=dt,
                             solver_steps=solver_steps, method=method, batch_size=batch_size)
        spec = RunSpec(mode, data, target, n, n_train, eval_every)
        rows = run_monoflow(spec, cfg, out, seed, resolve_device(device), resume)
        if rows:
            console.print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in rows[-1].items()))
        console.print(f"run directory: {out}")
