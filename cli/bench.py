"""`gentool bench ...`: benchmarks that print rich tables (ratios against peers measured in the same run)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from gentool.cli._common import handle_errors, print_table, progress_bar
from gentool.core.errors import choose, require
from gentool.core.io import atomic_write_json
from gentool.core.run import open_run_dir, resolve_device
from gentool.core.solvers.benchmark import (
    CPU_BATCH_SIZES,
    GPU_BATCH_SIZES,
    BenchConfig,
    adaptive_rows,
    check_methods,
    fixed_rows,
)
from gentool.core.solvers.controllers import CONTROLLERS
from rich.table import Table

bench_app = typer.Typer(help="Benchmarks (wall time against peers, printed as tables).", no_args_is_help=True)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    require(bool(values) and all(v >= 1 for v in values), f"{what} must be integers >= 1, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def fixed_table(rows: list[dict], device: torch.device) -> Table:
    """Method x batch x {gentool, torchdiffeq, hand-written, floor}: µs per step and ratio to the floor."""
    floor = "CUDA-graph floor" if device.type == "cuda" else "model-alone eager floor"
    table = Table(title=f"Fixed-step solvers on {device} (µs per step; ×floor = ratio to the {floor})")
    for col in ("field", "method", "batch", "gentool", "×floor", "torchdiffeq", "×floor", "hand loop",
                "×floor", "floor", "gentool/hand"):
        table.add_column(col, justify="left" if col in ("field", "method") else "right")
    for r in rows:
        table.add_row(r["field"], r["method"], f"{r['batch']:,}",
                      _us(r["gentool_s"]), f"{r['gentool_ratio']:.2f}",
                      _us(r["torchdiffeq_s"]), f"{r['torchdiffeq_ratio']:.2f}",
                      _us(r["hand_s"]), f"{r['hand_ratio']:.2f}", _us(r["floor_s"]),
                      f"{r['gentool_s'] / r['hand_s']:.2f}")
    return table


def adaptive_table(rows: list[dict], device: torch.device) -> Table:
    """NFE and wall time at equal tolerance: gentool and torchode (per-sample steps), torchdiffeq (one step size).

    NFE: per-sample mean/max for gentool; field calls on the whole batch for torchdiffeq and torchode.
    """
    rtol, controller = (rows[0]["rtol"], rows[0]["controller"]) if rows else (0.0, "")
    table = Table(title=f"Adaptive solvers on {device}, MLP 2→64→64→2 on [0, 1], "
                        f"rtol={rtol:g}, atol=rtol/100, gentool controller={controller} "
                        "(ratios: gentool time / peer time)")
    for col in ("method", "batch", "gentool NFE mean", "gentool NFE max", "gentool ms", "torchdiffeq NFE",
                "torchdiffeq ms", "÷torchdiffeq", "torchode NFE", "torchode ms", "÷torchode"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        ode = ((str(r["torchode_nfe"]), f"{r['torchode_s'] * 1e3:,.2f}", f"{r['gentool_s'] / r['torchode_s']:.2f}")
               if "torchode_s" in r else (r["torchode"], "", ""))
        table.add_row(r["method"], f"{r['batch']:,}", f"{r['gentool_nfe_mean']:.1f}",
                      str(r["gentool_nfe_max"]), f"{r['gentool_s'] * 1e3:,.2f}", str(r["torchdiffeq_nfe"]),
                      f"{r['torchdiffeq_s'] * 1e3:,.2f}", f"{r['gentool_s'] / r['torchdiffeq_s']:.2f}", *ode)
    return table


def run_solver_bench(batch_sizes: str | None, steps: int, device_name: str, methods: str, adaptive: str,
                     fields: str, rtol: float, repeats: int, out: Path | None,
                     show_progress: bool = True, controller: str = "integral") -> dict:
    """Run the solver benchmark, print both tables; write solvers.json + config.json into `out` if given."""
    device = resolve_device(device_name)
    default = GPU_BATCH_SIZES if device.type == "cuda" else CPU_BATCH_SIZES
    sizes = _ints(batch_sizes, "--batch-sizes") if batch_sizes else default
    require(steps >= 1, f"--steps must be >= 1, got {steps}")
    require(repeats >= 1, f"--repeats must be >= 1, got {repeats}")
    require(rtol > 0, f"--rtol must be > 0, got {rtol}")
    fixed_m, adaptive_m = _names(methods), _names(adaptive)
    check_methods(fixed_m, adaptive_m)
    cfg = BenchConfig(batch_sizes=sizes, steps=steps, fixed_methods=fixed_m, adaptive_methods=adaptive_m,
                      fields=_names(fields), rtol=rtol, repeats=repeats,
                      controller=choose("--controller", controller, CONTROLLERS))
    with progress_bar("fixed-step", enabled=show_progress) as progress:
        fixed = fixed_rows(cfg, device, progress)
    with progress_bar("adaptive", enabled=show_progress) as progress:
        adapt = adaptive_rows(cfg, device, progress)
    print_table(fixed_table(fixed, device))
    if adapt:
        print_table(adaptive_table(adapt, device))
    result = {"fixed": fixed, "adaptive": adapt}
    if out is not None:
        with open_run_dir(out, "bench solvers") as rd:
            rd.write_config({"bench": "solvers", **cfg.__dict__}, cfg.seed, device)
            atomic_write_json(out / "solvers.json", result)
    return result


@bench_app.command("solvers")
@handle_errors
def solvers(
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes "
                                    "(default: 256,4096,65536 on CPU; 1024,65536,1048576 on CUDA)."),
    steps: int = typer.Option(50, "--steps", help="Steps per fixed-step solve."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    methods: str = typer.Option("euler,rk4", "--methods", help="Fixed-step methods to time."),
    adaptive: str = typer.Option("bosh3,dopri5", "--adaptive", help="Adaptive methods ('' to skip)."),
    fields: str = typer.Option("mlp2,mlp3", "--fields", help="Fields: mlp2 (2-64-64-2), mlp3 (3-256x3-2)."),
    rtol: float = typer.Option(1e-5, "--rtol", help="Adaptive tolerance (atol = rtol/100)."),
    controller: str = typer.Option("integral", "--controller", help="gentool's step controller for the "
                                   "adaptive table: integral (as torchdiffeq and torchode) or pi."),
    repeats: int = typer.Option(3, "--repeats", help="Timed repeats (best is kept) after one warm-up."),
    out: Path = typer.Option(None, "--out", help="Run directory for solvers.json and config.json."),
) -> None:
    """Time gentool's solvers against torchdiffeq, a hand-written loop and the model alone."""
    run_solver_bench(batch_sizes, steps, device, methods, adaptive, fields, rtol, repeats, out,
                     controller=controller)


def register(app: typer.Typer) -> None:
    """Add `gentool bench ...` to the main app."""
    app.add_typer(bench_app, name="bench")
