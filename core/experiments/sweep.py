"""Sweeps: expand a recipe's grid into points and run each as a submitit job.

Each point gets its own run directory `SWEEP_DIR/<point id>` (passed to the command as
`--out`), a `point.json` (recipe, parameters, seed, arguments, environment) and, once the
command has exited with status 0, an atomically written completion marker `DONE.json`.
Re-running a sweep skips every point whose marker exists, so a killed sweep resumes with
only the missing points.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.core.errors import BadInput, choose
from gentool.core.experiments.recipe import Command, Recipe, option_args, resolve_command
from gentool.core.io import atomic_write_json, environment_info, read_json, write_run_config

DONE = "DONE.json"
POINT = "point.json"
EXECUTORS = ("local", "slurm", "debug")
DEFAULT_APP = "gentool.cli.main:app"


@dataclass(frozen=True)
class Point:
    """One grid point: its id (directory name), swept parameters, seed and full argv."""

    point_id: str
    params: dict[str, Any]
    seed: int | None
    argv: list[str]
    run_dir: str


@dataclass(frozen=True)
class PointResult:
    """Outcome of running one point: exit code (0 = success) and wall seconds."""

    point_id: str
    exit_code: int
    seconds: float
    message: str = ""


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def point_id(params: dict[str, Any], seed: int | None) -> str:
    """Directory name of a point: `key-value__key-value__seed-S` (stable, filesystem-safe)."""
    parts = [f"{_slug(k)}-{_slug(v)}" for k, v in params.items()]
    if seed is not None:
        parts.append(f"seed-{seed}")
    return "__".join(parts) or "base"


def expand(recipe: Recipe, root: Command, sweep_dir: str | Path,
           extra_args: list[str] | None = None) -> list[Point]:
    """The recipe's grid (cartesian product of sweep lists × seeds) as points under `sweep_dir`."""
    cmd = resolve_command(root, recipe.command)
    keys = list(recipe.sweep)
    seeds: list[int | None] = list(recipe.seeds) or [None]
    points = []
    for values in itertools.product(*(recipe.sweep[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        for seed in seeds:
            options = {**recipe.options, **params}
            if seed is not None:
                options["seed"] = seed
            pid = point_id(params, seed)
            run_dir = str(Path(sweep_dir) / pid)
            argv = [*recipe.command, *option_args(cmd, options), *(extra_args or []), "--out", run_dir]
            points.append(Point(pid, params, seed, argv, run_dir))
    return points


def is_complete(run_dir: str | Path) -> bool:
    """True when the point's completion marker exists."""
    return (Path(run_dir) / DONE).is_file()


def load_app(app_ref: str) -> Command:
    """Import `module:attribute` (a Typer app or click command) and return its click command."""
    module, _, attr = app_ref.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    if callable(getattr(obj, "main", None)) and hasattr(obj, "params"):
        return obj
    import typer

    return typer.main.get_command(obj)


def invoke(root: Command, argv: list[str]) -> tuple[int, str]:
    """Run the CLI in-process with `argv`; return (exit code, error text)."""
    import typer

    try:
        rv = root.main(argv, prog_name="gentool", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code), ""
    except typer.Abort:
        return 1, "aborted"
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors
            return int(exc.exit_code), exc.format_message()
        raise
    except SystemExit as exc:
        return int(exc.code or 0), ""
    return (rv if isinstance(rv, int) else 0), ""


def run_point(point: Point, recipe_info: dict[str, Any], app_ref: str = DEFAULT_APP) -> PointResult:
    """Run one point unless complete; record `point.json` and, on success, the `DONE.json` marker."""
    if is_complete(point.run_dir):
        return PointResult(point.point_id, 0, 0.0, "skipped (complete)")
    run_dir = Path(point.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / POINT, {**asdict(point), "recipe": recipe_info, "env": environment_info()})
    start = time.perf_counter()
    code, message = invoke(load_app(app_ref), point.argv)
    seconds = time.perf_counter() - start
    if code == 0:
        atomic_write_json(run_dir / DONE, {"point_id": point.point_id, "params": point.params,
                                           "seed": point.seed, "seconds": seconds})
    return PointResult(point.point_id, code, seconds, message)


def run_points(points: list[Point], recipe_info: dict[str, Any], app_ref: str = DEFAULT_APP
               ) -> list[PointResult]:
    """Run a chunk of points sequentially (the body of one submitit job)."""
    return [run_point(p, recipe_info, app_ref) for p in points]


@dataclass(frozen=True)
class ExecutorOptions:
    """How to run jobs: executor kind, parallel jobs, and cluster resources (slurm)."""

    executor: str = "local"
    parallel: int | None = None
    partition: str | None = None
    time: int = 60
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None


def executor_options(recipe: Recipe, executor: str, **flags: Any) -> ExecutorOptions:
    """Merge the recipe's [slurm] table with command-line flags (flags that are not None win)."""
    choose("executor", executor, EXECUTORS)
    table = dict(recipe.slurm)
    if "array_parallelism" in table:
        table["parallel"] = table.pop("array_parallelism")
    merged = {**table, **{k: v for k, v in flags.items() if v is not None}}
    opts = ExecutorOptions(executor=executor, **merged)
    if opts.parallel is not None and opts.parallel < 1:
        raise BadInput(f"parallel must be >= 1, got {opts.parallel}")
    return opts


def _chunks(points: list[Point], opts: ExecutorOptions) -> list[list[Point]]:
    """Slurm: one array task per point. Local/debug: at most `parallel` jobs (default: CPU count)."""
    if opts.executor == "slurm":
        return [[p] for p in points]
    n = max(1, min(len(points), opts.parallel or os.cpu_count() or 1))
    return [points[i::n] for i in range(n)]


def make_executor(folder: Path, opts: ExecutorOptions) -> Any:
    """A `submitit.AutoExecutor` for `opts` (slurm_* parameters are ignored by the other clusters)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.executor)
    except RuntimeError as exc:  # e.g. no srun on this machine
        raise BadInput(f"executor {opts.executor!r} is not available here ({exc}); "
                       f"allowed here: local, debug") from None
    params: dict[str, Any] = {"timeout_min": opts.time, "cpus_per_task": opts.cpus}
    if opts.executor == "slurm":
        params.update(gpus_per_node=opts.gpus, slurm_array_parallelism=opts.parallel or 16)
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
    executor.update_parameters(**params)
    return executor


def run_sweep(recipe: Recipe, points: list[Point], sweep_dir: str | Path, opts: ExecutorOptions,
              app_ref: str = DEFAULT_APP, progress: Callable[..., None] | None = None
              ) -> list[PointResult]:
    """Submit every incomplete point through submitit, wait, and return one result per point."""
    sweep_dir = Path(sweep_dir)
    info = {"path": str(recipe.path), "command": " ".join(recipe.command), "options": recipe.options,
            "sweep": recipe.sweep, "seeds": recipe.seeds}
    write_run_config(sweep_dir, {"recipe": info, "executor": asdict(opts),
                                 "points": [p.point_id for p in points]}, seed=None)
    todo = [p for p in points if not is_complete(p.run_dir)]
    results = [PointResult(p.point_id, 0, 0.0, "skipped (complete)") for p in points if p not in todo]
    if progress:
        progress(len(results), len(points))
    if todo:
        chunks = _chunks(todo, opts)
        executor = make_executor(sweep_dir / "submitit", opts)
        jobs = executor.map_array(run_points, chunks, [info] * len(chunks), [app_ref] * len(chunks))
        for job, chunk in zip(jobs, chunks, strict=True):
            results += _job_results(job, chunk)
            if progress:
                progress(len(results), len(points))
    order = {p.point_id: i for i, p in enumerate(points)}
    return sorted(results, key=lambda r: order[r.point_id])


def _job_results(job: Any, chunk: list[Point]) -> list[PointResult]:
    """The job's results, or one failure per point when the job itself died (killed, timeout)."""
    try:
        return list(job.result())
    except Exception as exc:  # noqa: BLE001 - submitit raises its own failure types
        first = str(exc).strip().splitlines()
        msg = f"job {job.job_id} failed: {first[-1] if first else type(exc).__name__}"
        return [PointResult(p.point_id, 1, 0.0, msg) for p in chunk]


def sweep_status(points: list[Point]) -> dict[str, bool]:
    """Point id -> complete?"""
    return {p.point_id: is_complete(p.run_dir) for p in points}


def read_point(run_dir: str | Path) -> dict[str, Any]:
    """The `point.json` of a run directory."""
    return read_json(Path(run_dir) / POINT)
