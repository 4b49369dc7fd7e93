"""`gentool bench ...`: benchmarks that print rich tables (ratios against peers measured in the same run)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import typer
from gentool.cli._common import handle_errors, print_table, progress_bar, say
from gentool.cli._jobs import DRY_RUN_HELP, EXECUTOR_HELP, run_shards, slurm_flags
from gentool.cli.experiments import _with_resources
from gentool.core.config import config_dict
from gentool.core.diffusion import benchmark as sbench
from gentool.core.errors import BadInput, choose, require
from gentool.core.experiments.executors import EXECUTORS
from gentool.core.experiments.shards import shard_ranges, sharding
from gentool.core.io import atomic_write_json, read_json
from gentool.core.jobs import BENCH_JOBS
from gentool.core.run import open_run_dir, resolve_device
from gentool.core.solvers import CompileFallbackWarning
from gentool.core.solvers.benchmark import (
    CLOCKS,
    CPU_BATCH_SIZES,
    GPU_BATCH_SIZES,
    MAX_ROUNDS,
    MIN_TIMED_S,
    BenchConfig,
    adaptive_rows,
    check_methods,
    fixed_rows,
    machine_facts,
)
from gentool.core.solvers.controllers import CONTROLLERS
from rich.table import Table

bench_app = typer.Typer(help="Benchmarks (wall time against peers, printed as tables).", no_args_is_help=True)

REPEATS_HELP = (f"Timed rounds, at least (the best is kept), after one warm-up; fast cases run more, until "
                f"each contender's rounds add up to {MIN_TIMED_S} s (at most {MAX_ROUNDS}).")


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


@contextmanager
def compile_warnings() -> Iterator[None]:
    """Print each compile fallback (`CompileFallbackWarning`) once, as one line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileFallbackWarning)
        yield
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, CompileFallbackWarning)):
        sys.stderr.write(f"warning: {message}\n")


def header(device: torch.device) -> str:
    """One line naming the machine the numbers come from."""
    facts = machine_facts(device)
    return (f"device: {facts['device_name']} | torch {facts['torch']} | {facts['threads']} CPU thread(s) | "
            f"load {facts['load']} (1/5/15 min)")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else ""


def fixed_table(rows: list[dict], device: torch.device) -> Table:
    """Method x batch x {gentool[, compiled], torchdiffeq, hand-written, floor}: µs per step and ratio to the floor."""
    floor = "CUDA-graph floor" if device.type == "cuda" else "model-alone eager floor"
    compiled = any("compiled_s" in r for r in rows)
    table = Table(title=f"Fixed-step solvers on {device} (µs per step; ×floor = ratio to the {floor})")
    cols = ["field", "method", "batch", "gentool", "×floor", *(["compiled", "×floor"] if compiled else []),
            "torchdiffeq", "×floor", "hand loop", "×floor", "floor", "gentool/hand"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("field", "method") else "right")
    for r in rows:
        comp = [_us(r["compiled_s"]), f"{r['compiled_ratio']:.2f}"] if compiled else []
        table.add_row(r["field"], r["method"], f"{r['batch']:,}",
                      _us(r["gentool_s"]), f"{r['gentool_ratio']:.2f}", *comp,
                      _us(r["torchdiffeq_s"]), f"{r['torchdiffeq_ratio']:.2f}",
                      _us(r["hand_s"]), f"{r['hand_ratio']:.2f}", _us(r["floor_s"]),
                      f"{r['gentool_s'] / r['hand_s']:.2f}")
    return table


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:,.2f}"


def adaptive_table(rows: list[dict], device: torch.device) -> Table:
    """NFE and wall time at equal tolerance: gentool and torchode (per-sample steps), torchdiffeq (one step size).

    NFE: per-sample mean/max for gentool; field calls on the whole batch for torchdiffeq and torchode. On
    CUDA `gentool` replays captured chunks (`eager`: the masked loop without graphs), and dopri5 rows show
    the target of issue 11: 1.5x diffrax's per-sample time measured there on an H100.
    """
    rtol, controller = (rows[0]["rtol"], rows[0]["controller"]) if rows else (0.0, "")
    table = Table(title=f"Adaptive solvers on {device}, MLP 2→64→64→2 on [0, 1], "
                        f"rtol={rtol:g}, atol=rtol/100, gentool controller={controller} "
                        "(ratios: gentool time / peer time)")
    extra = [c for c, key in (("eager ms", "gentool_eager_s"), ("compiled ms", "gentool_compiled_s"))
             if any(key in r for r in rows)]
    target = any("diffrax_h100_ms" in r for r in rows)
    for col in ("method", "batch", "gentool NFE mean", "gentool NFE max", "gentool ms", *extra, "torchdiffeq NFE",
                "torchdiffeq ms", "÷torchdiffeq", "torchode NFE", "torchode ms", "÷torchode",
                *(["target ms (1.5× diffrax H100)", "÷target"] if target else [])):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        ode = ((str(r["torchode_nfe"]), _ms(r["torchode_s"]), _ratio(r["gentool_s"], r["torchode_s"]))
               if "torchode_s" in r else (r["torchode"], "", ""))
        goal = 1.5e-3 * r["diffrax_h100_ms"] if "diffrax_h100_ms" in r else None
        table.add_row(r["method"], f"{r['batch']:,}", f"{r['gentool_nfe_mean']:.1f}",
                      str(r["gentool_nfe_max"]), _ms(r["gentool_s"]),
                      *[_ms(r.get({"eager ms": "gentool_eager_s", "compiled ms": "gentool_compiled_s"}[c]))
                        for c in extra],
                      str(r["torchdiffeq_nfe"]), _ms(r["torchdiffeq_s"]), _ratio(r["gentool_s"], r["torchdiffeq_s"]),
                      *ode, *([_ms(goal), _ratio(r["gentool_s"], goal)] if target else []))
    return table


SHARDS_HELP = ("Split the benchmark's cases over K tasks (each case with its peers and floor timed in one task, so "
               "every ratio is a same-run ratio; each a resumable part in OUT/parts), then merge them into OUT as "
               "one table in case order; a re-run resumes the unfinished parts.")


def check_sharding(command: str, cfg: object, how: Sharded) -> None:
    """Before anything is printed: `executor` only with `shards`, `shards` within the benchmark's cases."""
    shards, executor = how.shards, how.executor
    if shards is None:
        if executor is not None:
            raise BadInput(f"executor applies to a benchmark run with shards; executors: {', '.join(EXECUTORS)}")
        return
    choose("executor", executor or "local", EXECUTORS)
    plan = sharding(command)
    shard_ranges(plan.units(cfg), shards, plan.hint)


@dataclass(frozen=True)
class Sharded:
    """How a bench runs sharded: K (None: unsharded), the executor, Slurm resources given, dry run."""

    shards: int | None = None
    executor: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


def sharded_options(shards: int | None, executor: str | None, dry_run: bool, resources: dict[str, Any]) -> Sharded:
    """The sharding options of a bench command (Slurm resources only with shards on the slurm executor)."""
    if dry_run and shards is None:
        raise BadInput("dry_run applies to a run with shards (it prints how they would be submitted)")
    return Sharded(shards, executor, slurm_flags(resources, shards, executor or "local"), dry_run)


def sharded_bench(command: str, cfg: object, how: Sharded, out: Path | None, device: str, threads: int | None,
                  progress: bool) -> dict | None:
    """With `how.shards`: run bench `command` split over its cases (`gentool.core.jobs.bench`) and merged into
    `out` (default runs/bench-<name>); return the merged result as `<name>.json` holds it (None: without shards).
    Exit 1 or 130 when some shard is not complete; a dry run prints the plan and exits 0."""
    if how.shards is None:
        return None
    spec = BENCH_JOBS[command]
    out = Path(spec.default_out) if out is None else out
    code = run_shards(spec, config_dict(cfg), how.shards, how.executor or "local", out=out, seed=None,
                      device=device, threads=threads, resume=False, progress=progress, plots=False, flags=how.slurm,
                      dry_run=how.dry_run)
    if code or how.dry_run:
        raise typer.Exit(code)
    return read_json(out / f"{command.split()[-1]}.json")


def run_solver_bench(batch_sizes: str | None, steps: int, device_name: str, methods: str, adaptive: str,
                     fields: str, rtol: float, repeats: int, out: Path | None,
                     show_progress: bool = True, controller: str = "integral", compile: bool = False,
                     sharded: Sharded = Sharded()) -> dict:
    """Run the solver benchmark, print both tables; write solvers.json + config.json into `out` if given
    (`sharded`: split over its cases, see `sharded_bench`)."""
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
                      controller=choose("--controller", controller, CONTROLLERS), compile=compile)
    check_sharding("bench solvers", cfg, sharded)
    say(header(device))
    result = sharded_bench("bench solvers", cfg, sharded, out, device_name, None, show_progress)
    if result is None:
        with compile_warnings():
            with progress_bar("fixed-step", enabled=show_progress) as progress:
                fixed = fixed_rows(cfg, device, progress)
            with progress_bar("adaptive", enabled=show_progress) as progress:
                adapt = adaptive_rows(cfg, device, progress)
        result = {"machine": machine_facts(device), "fixed": fixed, "adaptive": adapt}
        _write(out, "solvers", cfg, device, result)
    print_table(fixed_table(result["fixed"], device))
    if result["adaptive"]:
        print_table(adaptive_table(result["adaptive"], device))
    return result


def _write(out: Path | None, name: str, cfg: object, device: torch.device, result: dict) -> None:
    """`config.json` and `<name>.json` into the locked run directory `out` (nothing when `out` is None)."""
    if out is not None:
        with open_run_dir(out, f"bench {name}") as rd:
            rd.write_config({"bench": name, **cfg.__dict__}, cfg.seed, device)
            atomic_write_json(out / f"{name}.json", result)


@bench_app.command("solvers")
@_with_resources
@handle_errors
def solvers(
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes "
                                    "(default: 256,4096,65536 on CPU; 1024,65536,1048576 on CUDA)."),
    steps: int = typer.Option(50, "--steps", help="Steps per fixed-step solve."),
    device: str = typer.Option("auto", "--device", help="One of: auto, cpu, cuda, cuda:K."),
    methods: str = typer.Option("euler,rk4", "--methods", help="Fixed-step methods to time."),
    adaptive: str = typer.Option("bosh3,dopri5", "--adaptive", help="Adaptive methods ('' to skip)."),
    fields: str = typer.Option("mlp2,mlp3", "--fields", help="Fields: mlp2 (2-64-64-2), mlp3 (3-256x3-2)."),
    rtol: float = typer.Option(1e-5, "--rtol", help="Adaptive tolerance (atol = rtol/100)."),
    controller: str = typer.Option("integral", "--controller", help="gentool's step controller for the "
                                   "adaptive table: integral (as torchdiffeq and torchode) or pi."),
    repeats: int = typer.Option(3, "--repeats", help=REPEATS_HELP),
    compile: bool = typer.Option(False, "--compile", help="Also time gentool with torch.compile (inductor)."),
    out: Path = typer.Option(None, "--out", help="Run directory for solvers.json and config.json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    shards: int = typer.Option(None, "--shards", help=SHARDS_HELP),
    executor: str = typer.Option(None, "--executor", help=f"{EXECUTOR_HELP} \\[default: local]"),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **resources: Any,
) -> None:
    """Time gentool's solvers against torchdiffeq, a hand-written loop and the model alone."""
    run_solver_bench(batch_sizes, steps, device, methods, adaptive, fields, rtol, repeats, out,
                     show_progress=progress, controller=controller, compile=compile,
                     sharded=sharded_options(shards, executor, dry_run, resources))


def sampler_table(rows: list[dict], device: torch.device) -> Table:
    """Sampler x batch x NFE: µs per step of each contender, the ratios the targets are about, and the
    gmm-ring endpoint RMSE at that NFE."""
    graph = any("graph_s" in r for r in rows)
    compiled = any("compiled_s" in r for r in rows)
    floor = "CUDA-graph floor" if device.type == "cuda" else "model-alone eager floor"
    clock = "CPU-time" if rows and rows[0].get("clock") == "cpu" else "wall-time"
    table = Table(title=f"Samplers on {device}: {clock} µs per step of D(x, σ) = MLP(\\[x, log σ]) 3→64→64→2, "
                        f"float32 (floor: the {floor}); endpoint RMSE on the gmm-ring, float64, vs the dopri5 "
                        "reference")
    cols: list[tuple[str, Callable[[dict], Any]]] = [
        ("sampler", lambda r: r["sampler"]), ("batch", lambda r: f"{r['batch']:,}"),
        ("NFE", lambda r: str(r["nfe"])), ("steps", lambda r: str(r["steps"])),
        ("eager", lambda r: _us(r["eager_s"]))]
    if graph:
        cols.append(("graph", lambda r: _us(r["graph_s"])))
    if compiled:
        cols.append(("compiled", lambda r: _us(r["compiled_s"])))
    cols += [("floor", lambda r: _us(r["floor_s"])), ("noise", lambda r: _us(r["noise_s"]) if "noise_s" in r else "—"),
             ("definition loop", lambda r: _us(r["loop_s"])),
             ("eager/loop", lambda r: _ratio(r["eager_s"], r["loop_s"])),
             ("eager/floor", lambda r: _ratio(r["eager_s"], r["floor_s"]))]
    if graph:
        cols.append(("graph/floor", lambda r: _ratio(r["graph_s"], r["floor_s"])))
    if compiled:
        cols += [("compiled/floor", lambda r: _ratio(r["compiled_s"], r["floor_s"])),
                 ("compiled/eager", lambda r: _ratio(r["compiled_s"], r["eager_s"]))]
    cols.append(("RMSE gmm-ring", lambda r: f"{r['endpoint_rmse']:.3g}"))
    for name, _ in cols:
        table.add_column(name, justify="left" if name == "sampler" else "right")
    for r in rows:
        table.add_row(*(fmt(r) for _, fmt in cols))
    return table


def run_sampler_bench(batch_sizes: str | None, nfe: str, samplers: str, device_name: str, compile: bool,
                      repeats: int, accuracy_n: int, out: Path | None, show_progress: bool = True,
                      clock: str = "wall", threads: int | None = None, sharded: Sharded = Sharded()) -> dict:
    """Run the sampler benchmark and print its table; write samplers.json + config.json into `out` if given
    (`sharded`: split over its cases, see `sharded_bench`)."""
    device = resolve_device(device_name)
    choose("--clock", clock, CLOCKS)
    require(clock == "wall" or device.type == "cpu", "--clock cpu is for CPU runs; allowed on CUDA: wall")
    if threads is not None:
        require(threads >= 1, f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    default = sbench.GPU_BATCH_SIZES if device.type == "cuda" else sbench.CPU_BATCH_SIZES
    names = _names(samplers) if samplers else sbench.PLAN_SAMPLERS
    sbench.check_samplers(names)
    require(repeats >= 1, f"--repeats must be >= 1, got {repeats}")
    require(accuracy_n >= 1, f"--accuracy-n must be >= 1, got {accuracy_n}")
    cfg = sbench.SamplerBenchConfig(batch_sizes=_ints(batch_sizes, "--batch-sizes") if batch_sizes else default,
                                    nfes=_ints(nfe, "--nfe"), samplers=names, compile=compile, repeats=repeats,
                                    accuracy_n=accuracy_n, clock=clock)
    check_sharding("bench samplers", cfg, sharded)
    say(header(device))
    result = sharded_bench("bench samplers", cfg, sharded, out, device_name, threads, show_progress)
    if result is None:
        with compile_warnings():
            with progress_bar("accuracy (gmm-ring)", enabled=show_progress) as progress:
                errors = sbench.ring_errors(cfg, progress)
            with progress_bar("timing", enabled=show_progress) as progress:
                rows = sbench.sampler_rows(cfg, device, errors, progress)
        result = {"machine": machine_facts(device), "samplers": rows}
        _write(out, "samplers", cfg, device, result)
    print_table(sampler_table(result["samplers"], device))
    return result


@bench_app.command("samplers")
@_with_resources
@handle_errors
def samplers(
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes "
                                    "(default: 1024,16384 on CPU; 1024,65536,1048576 on CUDA)."),
    nfe: str = typer.Option("10,50", "--nfe", help="Comma-separated NFE budgets (2-evaluation samplers take "
                            "(NFE + 1) // 2 steps)."),
    samplers: str = typer.Option(None, "--samplers", help="Comma-separated plan samplers (default: all)."),
    device: str = typer.Option("auto", "--device", help="One of: auto, cpu, cuda, cuda:K."),
    compile: bool = typer.Option(False, "--compile", help="Also time gentool with torch.compile (inductor)."),
    repeats: int = typer.Option(3, "--repeats", help=REPEATS_HELP),
    accuracy_n: int = typer.Option(2000, "--accuracy-n", help="Samples for the gmm-ring endpoint RMSE."),
    clock: str = typer.Option("wall", "--clock", help="wall, or cpu: process CPU time (CPU runs; with "
                              "--threads 1 on a shared machine, time-slicing by other processes does not count)."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    out: Path = typer.Option(None, "--out", help="Run directory for samplers.json and config.json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    model: str = typer.Option(None, "--model", help="Instead: a diffusers model or pipeline directory; time "
                              "`sample --compat diffusers` against the diffusers scheduler's own loop on it."),
    steps: int = typer.Option(20, "--steps", help="With --model: sampler steps."),
    cfg: float = typer.Option(7.5, "--cfg", help="With --model, text pipelines: guidance scale."),
    shards: int = typer.Option(None, "--shards", help=SHARDS_HELP),
    executor: str = typer.Option(None, "--executor", help=f"{EXECUTOR_HELP} \\[default: local]"),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **resources: Any,
) -> None:
    """Time every plan sampler (gentool eager, graph, compiled; model alone; plain loop) next to its accuracy; with
    --model, gentool against diffusers' own loop on that model."""
    if model is not None:
        require(shards is None and executor is None and not dry_run, "shards applies to the plan-sampler benchmark, "
                "not to a --model benchmark")
        run_model_bench(model, steps, _ints(batch_sizes, "--batch-sizes") if batch_sizes else (1,), cfg, device,
                        repeats, clock, threads)
        return
    run_sampler_bench(batch_sizes, nfe, samplers, device, compile, repeats, accuracy_n, out, show_progress=progress,
                      clock=clock, threads=threads, sharded=sharded_options(shards, executor, dry_run, resources))


def run_model_bench(model: str, steps: int, batches: tuple[int, ...], cfg: float, device_name: str, repeats: int,
                    clock: str, threads: int | None) -> list[dict]:
    """µs per step of gentool and of the diffusers loop on `model`, one row per batch size, printed."""
    from gentool.core.jobs.sample_bench import pipeline_bench

    device = resolve_device(device_name)
    choose("--clock", clock, CLOCKS)
    require(steps >= 1 and repeats >= 1, f"--steps and --repeats must be >= 1, got {steps}, {repeats}")
    if threads is not None:
        torch.set_num_threads(threads)
    say(header(device))
    rows = [pipeline_bench(model, steps, b, cfg, device, repeats, clock) for b in batches]
    table = Table(title=f"gentool vs diffusers on {model} ({device}; µs per step, best of ≥ {repeats} rounds)")
    for name in ("sampler", "steps", "batch", "gentool", "diffusers", "gentool/diffusers"):
        table.add_column(name, justify="left" if name == "sampler" else "right")
    for r in rows:
        table.add_row(r["sampler"], str(r["steps"]), str(r["batch"]), _us(r["gentool_us"] / 1e6),
                      _us(r["diffusers_us"] / 1e6), _ratio(r["gentool_us"], r["diffusers_us"]))
    print_table(table)
    return rows


def register(app: typer.Typer) -> None:
    """Add `gentool bench ...` to the main app."""
    app.add_typer(bench_app, name="bench")
