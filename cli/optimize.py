"""`gentool optimize`: optimisation over the probability simplex; Wasserstein gradient flows of particles."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from gentool.cli._common import console, handle_errors, progress_bar, resolve_device
from gentool.core.errors import BadInput, choose, require
from gentool.core.io import atomic_save_npz, atomic_savefig, atomic_write_jsonl, write_run_config
from gentool.core.nn import make_generator
from gentool.core.probspace import (
    FW_STEPS,
    METHODS,
    PARTICLE_METHODS,
    TARGETS,
    FreeEnergy,
    check_simplex,
    kl_energy,
    make_objective,
    make_target,
    run_particles,
    solve_simplex,
)

optimize_app = typer.Typer(help="Optimise over probability distributions: the simplex, or particles "
                                "following a Wasserstein gradient flow.", no_args_is_help=True)


def parse_vector(text: str | None, name: str) -> torch.Tensor | None:
    """`"1,0.5,-1"` -> float64 tensor; None stays None."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{name} must be comma-separated numbers, got {text!r}") from None
    require(len(vals) >= 1, f"{name} must have at least one entry, got {text!r}")
    return torch.tensor(vals, dtype=torch.float64)


def parse_matrix(text: str | None) -> torch.Tensor | None:
    """A matrix as rows `"a,b;c,d"`, or a path to a `.npy` / text file."""
    if text is None:
        return None
    if Path(text).suffix in (".npy", ".txt", ".csv") or Path(text).exists():
        delim = "," if text.endswith(".csv") else None
        arr = np.load(text) if text.endswith(".npy") else np.loadtxt(text, delimiter=delim)
        return torch.as_tensor(np.atleast_2d(arr), dtype=torch.float64)
    rows = [parse_vector(r, "--matrix row") for r in text.split(";")]
    require(len({len(r) for r in rows}) == 1, f"--matrix rows must have equal length, got {text!r}")
    return torch.stack(rows)


def _plot_objective(trace: list[dict[str, Any]], xkey: str, keys: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        rows = [r for r in trace if key in r and math.isfinite(r[key])]
        ys = [r[key] for r in rows]
        ax.plot([r[xkey] for r in rows], ys)
        if key == "gap" and ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.set_xlabel(xkey)
        ax.set_ylabel(key)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def _plot_snapshots(snaps: dict[int, torch.Tensor], ref: torch.Tensor | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(snaps), figsize=(3.2 * len(snaps), 3.2), squeeze=False)
    for ax, (step, x) in zip(axes[0], sorted(snaps.items()), strict=True):
        x = x.cpu().numpy()
        if x.shape[1] == 1:
            ax.hist(x[:, 0], bins=50, density=True)
        else:
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=2, c="lightgray")
            ax.scatter(x[:, 0], x[:, 1], s=2)
        ax.set_title(f"step {step}")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


@optimize_app.command("simplex")
@handle_errors
def simplex_cmd(
    objective: str = typer.Option("sparsemax", help="Built-in (sparsemax, softmax, kl, quadratic, portfolio) "
                                  "or module:function returning F, grad or (F, grad)."),
    x: str = typer.Option(None, "--x", help="Vector x (sparsemax/softmax), target q (kl) or b (quadratic)."),
    matrix: str = typer.Option(None, help="Matrix A (quadratic) or returns R: 'a,b;c,d' or path."),
    tau: float = typer.Option(1.0, help="Entropy temperature of the softmax objective."),
    p0: str = typer.Option(None, "--p0", help="Initial point on the simplex (default uniform)."),
    method: str = typer.Option("frank-wolfe", help=f"One of {', '.join(METHODS)}."),
    step: str = typer.Option("open-loop", help=f"Frank-Wolfe step rule: {', '.join(FW_STEPS)}."),
    lr: float = typer.Option(0.5, help="Step size of the gradient methods."),
    iters: int = typer.Option(1000, help="Maximum iterations."),
    tol: float = typer.Option(1e-8, help="Stop once the gap p.grad - min grad <= tol."),
    log_every: int = typer.Option(1, help="Trace every this many iterations."),
    out: Path = typer.Option(..., help="Run directory."),
    seed: int = typer.Option(0, help="Recorded seed (the simplex methods are deterministic)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Minimise a convex objective over the probability simplex."""
    choose("method", method, METHODS)
    vec, start = parse_vector(x, "--x"), parse_vector(p0, "--p0")
    if start is not None:
        check_simplex(start, "initial point --p0")
    obj = make_objective(objective, vec if vec is not None or start is None else start, tau=tau,
                         matrix=parse_matrix(matrix))
    if start is not None:
        require(start.numel() == obj.dim, f"--p0 has {start.numel()} entries, the objective has {obj.dim}")
    with progress_bar(f"simplex {method}", enabled=progress) as bar:
        res = solve_simplex(obj, method, p0=start, iters=iters, tol=tol, lr=lr, step=step,
                            log_every=log_every, progress=bar)
    out.mkdir(parents=True, exist_ok=True)
    config = {"command": "optimize simplex", "objective": objective, "x": x, "matrix": matrix, "tau": tau,
              "p0": p0, "method": method, "step": step, "lr": lr, "iters": iters, "tol": tol}
    write_run_config(out, config, seed, "cpu")
    atomic_write_jsonl(out / "trace.jsonl", res.trace)
    atomic_save_npz(out / "final.npz", p=res.p.numpy(), gap=res.trace[-1]["gap"], iters=res.iters,
                    converged=res.converged)
    _plot_objective(res.trace, "iter", ("objective", "gap"), out / "objective.png")
    _plot_bar(res.p, out / "distribution.png")
    p_text = ", ".join(f"{v:.6g}" for v in res.p.tolist())
    console.print(f"p = ({p_text})  gap={res.trace[-1]['gap']:.3g}  iters={res.iters}  "
                  f"converged={res.converged}", highlight=False)


def _plot_bar(p: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(range(p.numel()), p.numpy())
    ax.set_xlabel("i")
    ax.set_ylabel("p_i")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def _energy(target: str, entropy: float, interaction: float) -> tuple[FreeEnergy, Any]:
    """Free energy for `--target` (`none` = no potential, e.g. the heat flow), its Target (or None)."""
    if target == "none":
        require(entropy > 0 or interaction != 0, "--target none needs --entropy > 0 or an --interaction")
        return FreeEnergy(entropy=entropy, interaction=interaction), None
    tg = make_target(target)
    base = kl_energy(tg)
    return FreeEnergy(base.potential, interaction, entropy, tg), tg


@optimize_app.command("particles")
@handle_errors
def particles_cmd(
    target: str = typer.Option("gmm-ring", help=f"Target density: {', '.join(TARGETS)} or none."),
    method: str = typer.Option("langevin", help=f"One of {', '.join(PARTICLE_METHODS)}."),
    n: int = typer.Option(1000, help="Number of particles."),
    steps: int = typer.Option(500, help="Number of steps."),
    step_size: float = typer.Option(0.01, help="Step size (flow time per step)."),
    entropy: float = typer.Option(1.0, help="Entropy weight eps (1 = KL to the target)."),
    interaction: float = typer.Option(0.0, help="Quadratic interaction W(z) = a|z|^2/2 weight a."),
    init_mean: str = typer.Option(None, help="Mean of the Gaussian initial particles (default 0)."),
    init_std: float = typer.Option(1.0, help="Std of the Gaussian initial particles."),
    dim: int = typer.Option(2, help="Dimension when --target none."),
    bandwidth: float = typer.Option(None, help="Kernel bandwidth (default: per-method heuristic)."),
    solver: str = typer.Option("euler", help="Solver-core method for kde-flow (euler, heun, rk4, ...)."),
    log_every: int = typer.Option(10, help="Trace every this many steps."),
    out: Path = typer.Option(..., help="Run directory."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("cpu", help="auto, cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Move particles along a Wasserstein gradient flow (KL to a target, potential/interaction/entropy)."""
    choose("particle method", method, PARTICLE_METHODS)
    choose("target", target, [*TARGETS, "none"])
    require(n >= 2, f"--n must be >= 2, got {n}")
    require(init_std > 0, f"--init-std must be > 0, got {init_std}")
    dev = resolve_device(device)
    energy, tg = _energy(target, entropy, interaction)
    d = tg.dim if tg is not None else dim
    mean = parse_vector(init_mean, "--init-mean")
    mean = torch.zeros(d, dtype=torch.float64) if mean is None else mean
    require(mean.numel() == d, f"--init-mean has {mean.numel()} entries, the target has dimension {d}")
    g = make_generator(seed)
    x0 = (mean + init_std * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dev)
    ref = tg.sample(n, g).to(dev) if tg is not None and tg.sampler is not None else None
    with progress_bar(f"particles {method}", enabled=progress) as bar:
        res = run_particles(energy, x0, method, steps=steps, step_size=step_size, generator=g,
                            bandwidth=bandwidth, target_samples=ref, solver=solver, log_every=log_every,
                            progress=bar)
    out.mkdir(parents=True, exist_ok=True)
    config = {"command": "optimize particles", "target": target, "method": method, "n": n, "steps": steps,
              "step_size": step_size, "entropy": entropy, "interaction": interaction, "init_mean": init_mean,
              "init_std": init_std, "dim": d, "bandwidth": bandwidth, "solver": solver,
              "log_every": log_every}
    write_run_config(out, config, seed, dev)
    atomic_write_jsonl(out / "trace.jsonl", res.trace)
    steps_saved = sorted(res.snapshots)
    atomic_save_npz(out / "final.npz", x=res.x.cpu().numpy(), x0=x0.cpu().numpy(),
                    snapshot_steps=np.array(steps_saved),
                    snapshots=np.stack([res.snapshots[s].cpu().numpy() for s in steps_saved]))
    keys = ("objective", "mmd2") if ref is not None else ("objective",)
    _plot_objective(res.trace, "step", keys, out / "objective.png")
    _plot_snapshots(res.snapshots, ref.cpu().numpy() if ref is not None else None, out / "snapshots.png")
    last = res.trace[-1]
    extra = f"  mmd2={last['mmd2']:.3g}" if "mmd2" in last else ""
    console.print(f"{method}: {n} particles, {steps} steps, objective={last['objective']:.4g}{extra}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    """Add `gentool optimize simplex|particles`."""
    app.add_typer(optimize_app, name="optimize")
