"""`gentool mad-loop`: simulate a self-consuming loop (generations × seeds); write metrics, summary, plots."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import typer
from gentool.cli._common import console, handle_errors, progress_bar, resolve_device
from gentool.core.errors import BadInput, require
from gentool.core.io import read_json, write_run_config
from gentool.core.mad import (
    LoopConfig,
    config_dict,
    expected_cov_scale,
    gaussian_truth,
    make_reference,
    plot_metric_curves,
    plot_snapshots,
    run_loop,
    summarize,
)


def parse_bandwidth(value: str) -> str | float:
    """`scott`, `silverman` or a positive number."""
    if value in ("scott", "silverman"):
        return value
    try:
        return float(value)
    except ValueError:
        raise BadInput(f"unknown bandwidth {value!r}; allowed: scott, silverman, a positive number") from None


def parse_metrics(value: str | None) -> tuple[str, ...] | None:
    """Comma-separated metric names; `none` for no sample metrics; unset → the family's default."""
    if value is None:
        return None
    return () if value.strip() == "none" else tuple(v.strip() for v in value.split(",") if v.strip())


def _check_resume(out: Path, cfg: LoopConfig, resume: bool) -> None:
    """A resumed run must have the same config; a fresh run must not overwrite a committed one."""
    if resume:
        path = out / "config.json"
        require(path.exists(), f"--resume: no run at {out} (config.json missing)")
        old = read_json(path)["config"]
        new = config_dict(cfg)
        diff = sorted(k for k in new if k != "device" and old.get(k) != new[k])
        require(not diff, f"--resume: settings differ from the run in {out}: {', '.join(diff)}")
    else:
        require(not (out / "state.pt").exists(), f"{out} already holds a run; pass --resume or another --out")


def _closed_form(cfg: LoopConfig) -> dict[str, list[float]] | None:
    """Closed-form `E[tr Σ_t]` for the Gaussian family on Gaussian data in a fully-synthetic loop."""
    gaussian = cfg.family == "gaussian" and cfg.data == "gaussian"
    if not gaussian or cfg.loop != "fully-synthetic" or cfg.n_real != cfg.n_synth:
        return None
    tr0 = float(torch.trace(gaussian_truth(cfg.dim)[1]))
    return {"trace_cov": [tr0 * expected_cov_scale(t, cfg.lam, cfg.n_synth, cfg.cov)
                          for t in range(1, cfg.generations + 1)]}


def _plots(cfg: LoopConfig, rows: list[dict], out: Path) -> None:
    plot_metric_curves(summarize(rows), out / "metrics.png", _closed_form(cfg))
    picks = sorted({1, (cfg.generations + 1) // 2, cfg.generations})
    snaps = {t: np.load(out / "snapshots" / f"gen_{t:05d}.npz")["x"] for t in picks}
    if cfg.data == "digits":
        plot_snapshots(snaps, out / "snapshots.png")
    elif cfg.d == 2:
        plot_snapshots(snaps, out / "snapshots.png", reference=make_reference(cfg).test.numpy())


def register(app: typer.Typer) -> None:
    @app.command("mad-loop")
    @handle_errors
    def mad_loop(
        family: str = typer.Option("gaussian", help="gaussian | gmm | kde | diffusion | monoflow."),
        loop: str = typer.Option("fully-synthetic", help="fully-synthetic | augment | fresh | accumulate."),
        data: str = typer.Option("gaussian", help="gaussian | moons | swissroll | ring | grid"
                                    " | checkerboard | digits."),
        dim: int = typer.Option(2, help="Dimension of the gaussian data."),
        generations: int = typer.Option(10, help="Number of generations."),
        seeds: int = typer.Option(1, help="Number of independent seeds."),
        seed: int = typer.Option(0, help="Base seed."),
        n_real: int = typer.Option(100, help="Real points (generation 1; fixed/fresh real set)."),
        n_synth: int = typer.Option(100, help="Synthetic points drawn per generation."),
        real_fraction: float = typer.Option(None, help="Augment/fresh: real share of n_synth."),
        lam: float = typer.Option(1.0, help="Sampling bias λ in (0, 1]."),
        budget: int = typer.Option(None, help="Accumulate: subsample the pool to this many points."),
        cov: str = typer.Option("unbiased", help="Gaussian covariance estimator: unbiased | mle."),
        bandwidth: str = typer.Option("scott", help="KDE bandwidth: scott | silverman | FLOAT."),
        components: int = typer.Option(8, help="GMM components."),
        sampler: str = typer.Option("dpmpp-2m", help="Diffusion sampler."),
        steps: int = typer.Option(20, help="Diffusion sampler steps."),
        train_steps: int = typer.Option(2000, help="Training steps per generation (diffusion, monoflow)."),
        metrics: str = typer.Option(None, help="Sample metrics, comma-separated (sliced_w2, mmd2, precision, "
                                    "recall, density, coverage, frechet, exact_w2, energy) or 'none'."),
        metric_seeds: int = typer.Option(3, help="Gaussian family: seeds given --metrics."),
        n_test: int = typer.Option(1000, help="Held-out real points for the metrics."),
        out: Path = typer.Option(Path("runs/mad"), help="Run directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run."),
        device: str = typer.Option("auto", help="auto | cpu | cuda."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write metrics.png and snapshots.png."),
    ) -> None:
        """Self-consuming loop: retrain a model family on its own samples and track the drift (SPEC §5)."""
        dev = resolve_device(device)
        cfg = LoopConfig(family=family, loop=loop, data=data, dim=dim, generations=generations, seeds=seeds,
                         seed=seed, n_real=n_real, n_synth=n_synth, real_fraction=real_fraction, lam=lam,
                         budget=budget, cov=cov, bandwidth=parse_bandwidth(bandwidth), components=components,
                         sampler=sampler, steps=steps, train_steps=train_steps,
                         metrics=parse_metrics(metrics), metric_seeds=metric_seeds, n_test=n_test,
                         device=str(dev))
        cfg.validate()
        require(n_test >= 2, f"--n-test must be >= 2, got {n_test}")
        _check_resume(out, cfg, resume)
        write_run_config(out, config_dict(cfg), seed, dev)
        start = time.perf_counter()
        with progress_bar(f"mad-loop {family} {loop}", enabled=progress) as prog:
            rows = run_loop(cfg, out, resume=resume, progress=prog)
        elapsed = time.perf_counter() - start
        if plots:
            _plots(cfg, rows, out)
        last = [r for r in rows if r["generation"] == generations]
        keys = [k for k in ("w2_gauss", "recall", "trace_cov") if any(k in r for r in last)]
        shown = {k: float(np.mean([r[k] for r in last if k in r])) for k in keys}
        console.print(f"{generations} generations x {seeds} seeds in {elapsed:.2f} s; last generation: "
                      + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) + f"; wrote {out}")
