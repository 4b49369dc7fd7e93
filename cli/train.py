"""`gentool train`: train a small EDM denoiser on a bundled data set (checkpoints, EMA, resume)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from gentool.cli._common import console, handle_errors, progress_bar, resolve_device
from gentool.core.data import DATASETS, sample_data
from gentool.core.diffusion import TrainConfig, load_checkpoint, save_checkpoint, train_denoiser
from gentool.core.errors import choose, require
from gentool.core.io import atomic_savefig, atomic_write_json, write_run_config
from gentool.core.nn import make_generator


def _loss_plot(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(losses, lw=0.5, alpha=0.5, label="loss")
    k = max(1, len(losses) // 50)
    smooth = [sum(losses[i : i + k]) / len(losses[i : i + k]) for i in range(0, len(losses), k)]
    ax.semilogy(range(0, len(losses), k), smooth, lw=1.5, label=f"mean over {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss")
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def train_command(
    data: str = typer.Option("moons", "--data", help=f"Data set: {', '.join(DATASETS)}."),
    out: Path = typer.Option(Path("run"), "--out", help="Run directory (ckpt.pt, loss.png, metrics.json)."),
    steps: int = typer.Option(3000, "--steps", help="Total optimisation steps."),
    batch: int = typer.Option(512, "--batch"),
    lr: float = typer.Option(1e-3, "--lr"),
    width: int = typer.Option(128, "--width"),
    depth: int = typer.Option(3, "--depth"),
    ema: float = typer.Option(0.999, "--ema"),
    arch: str = typer.Option("auto", "--arch", help="mlp, conv, or auto (conv for digits, else mlp)."),
    n_train: int = typer.Option(
        20000, "--n-train", help="Training points drawn (digits: the 1437-image split)."
    ),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/ckpt.pt (its config; --steps may grow)."
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train an EDM-preconditioned denoiser (MLP for 2-D toys, small conv net for digits)."""
    choose("data set", data, DATASETS)
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    dev = resolve_device(device)
    ckpt_path = out / "ckpt.pt"
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        cfg = TrainConfig(**state["config"])
        cfg.steps = steps
        data, seed, n_train = state["data"], state["seed"], state["n_train"]
    else:
        auto = "conv" if data == "digits" else "mlp"
        cfg = TrainConfig(
            arch=auto if arch == "auto" else arch,
            width=width,
            depth=depth,
            steps=steps,
            batch=batch,
            lr=lr,
            ema=ema,
        )
    cfg.validate()
    x = sample_data(data, n_train, make_generator(seed))
    extra = {"data": data, "seed": seed, "n_train": n_train}
    write_run_config(out, {**asdict(cfg), **extra, "checkpoint_every": checkpoint_every}, seed, dev)

    def save(s: dict) -> None:
        save_checkpoint(ckpt_path, {**s, **extra})

    with progress_bar(f"train {data}", enabled=progress) as bar:
        res = train_denoiser(
            x,
            cfg,
            generator=make_generator(seed + 1, dev),
            device=dev,
            progress=bar,
            resume=state,
            checkpoint=save,
            checkpoint_every=checkpoint_every,
        )
    save(res.state)
    _loss_plot(res.losses, out / "loss.png")
    tail = res.losses[-min(100, len(res.losses)) :]
    atomic_write_json(
        out / "metrics.json",
        {
            "steps": len(res.losses),
            "final_loss_mean100": sum(tail) / len(tail),
            "sigma_data": res.denoiser.sigma_data,
        },
    )
    console.print(f"trained {len(res.losses)} steps, loss {sum(tail) / len(tail):.4g} -> {ckpt_path}")


def register(app: typer.Typer) -> None:
    app.command("train")(handle_errors(train_command))
