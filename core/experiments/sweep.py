"""Sweeps: expand a recipe's grid into points and run each as a submitit job.

Each point gets its own run directory `SWEEP_DIR/<point id>` and a `point.json` (recipe, parameters, seed,
environment); the job itself is built from the recipe's config and `execute`d there with `resume="auto"`, so
a re-run sweep skips complete points (their `DONE.json`), resumes points that were killed mid-run from their
last committed unit, and starts the ones that never ran. No point goes through the command line.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import make_config
from gentool.core.errors import BadInput, GentoolError, choose
from gentool.core.experiments.recipe import Recipe, grid_options, split_options
from gentool.core.io import atomic_write_json, environment_info, read_json
from gentool.core.jobs import JOBS
from gentool.core.run import execute, open_run_dir, resolve_device
from gentool.core.run.rundir import DONE

POINT = "point.json"
EXECUTORS = ("local", "slurm", "debug")


@dataclass(frozen=True)
class Point:
    """One grid point: its id (directory name), swept parameters, seed, full config options and run settings."""

    point_id: str
    command: str
    params: dict[str, Any]
    seed: int | None
    options: dict[str, Any]
    run: dict[str, Any]
    run_dir: str


@dataclass(frozen=True)
class PointResult:
    """Outcome of running one point: exit code (0 = success), wall seconds and, on failure, the reason."""

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


def expand(recipe: Recipe, sweep_dir: str | Path, overrides: dict[str, Any] | None = None) -> list[Point]:
    """The recipe's grid (cartesian product of sweep lists × seeds) as points under `sweep_dir`;
    `overrides` (setting -> value) apply to every point."""
    spec = JOBS[recipe.command]
    extra_config, extra_run = split_options(spec, overrides or {}, "overrides")
    seeds: list[int | None] = list(recipe.seeds) or [None]
    points = []
    for options in grid_options(recipe):
        params = {k: options[k] for k in recipe.sweep}
        config = {k: v for k, v in {**options, **extra_config}.items() if k != "device"}
        run = {**recipe.run, **({"device": options["device"]} if "device" in options else {}), **extra_run}
        make_config(spec.config, config, "overrides")  # a bad override fails before anything runs
        for seed in seeds:
            pid = point_id(params, seed)
            points.append(Point(pid, recipe.command, params, seed, config,
                                {**run, **({"seed": seed} if seed is not None else {})},
                                str(Path(sweep_dir) / pid)))
    return points


def is_complete(run_dir: str | Path) -> bool:
    """True when the point's run has finished (`DONE.json`)."""
    return (Path(run_dir) / DONE).is_file()


def run_point(point: Point, recipe_info: dict[str, Any]) -> PointResult:
    """Run (or resume) one point unless complete; failures are returned with their one-line reason."""
    if is_complete(point.run_dir):
        return PointResult(point.point_id, 0, 0.0, "skipped (complete)")
    start = time.perf_counter()
    try:
        spec = JOBS[point.command]
        config = make_config(spec.config, point.options)
        seed = int(point.run.get("seed", 0))
        job = spec.build(config, seed, resolve_device(point.run.get("device", "auto")))
        run_dir = Path(point.run_dir)
        atomic_write_json(run_dir / POINT, {**asdict(point), "recipe": recipe_info, "env": environment_info()})
        execute(job, run_dir, resume="auto", plots=bool(point.run.get("plots", True)))
    except GentoolError as exc:
        return PointResult(point.point_id, exc.exit_code, time.perf_counter() - start, str(exc))
    except Exception as exc:  # noqa: BLE001 - an unexpected failure of one point must not stop the sweep
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return PointResult(point.point_id, 1, time.perf_counter() - start,
                           f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")
    return PointResult(point.point_id, 0, time.perf_counter() - start)


def run_points(points: list[Point], recipe_info: dict[str, Any]) -> list[PointResult]:
    """Run a chunk of points sequentially (the body of one submitit job)."""
    return [run_point(p, recipe_info) for p in points]


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
              progress: Callable[..., None] | None = None) -> list[PointResult]:
    """Submit every incomplete point through submitit, wait, and return one result per point.

    The sweep directory is locked while the sweep waits (a second `gentool sweep` into it is refused)."""
    with open_run_dir(sweep_dir, "sweep") as rd:
        info = {"path": str(recipe.path), "command": recipe.command, "options": recipe.options,
                "run": recipe.run, "sweep": recipe.sweep, "seeds": recipe.seeds}
        rd.write_config({"recipe": info, "executor": asdict(opts), "points": [p.point_id for p in points]},
                        None, None)
        return _submit(points, info, Path(sweep_dir), opts, progress)


def _submit(points: list[Point], info: dict[str, Any], sweep_dir: Path, opts: ExecutorOptions,
            progress: Callable[..., None] | None) -> list[PointResult]:
    todo = [p for p in points if not is_complete(p.run_dir)]
    results = [PointResult(p.point_id, 0, 0.0, "skipped (complete)") for p in points if p not in todo]
    if progress:
        progress(len(results), len(points))
    if todo:
        chunks = _chunks(todo, opts)
        executor = make_executor(sweep_dir / "submitit", opts)
        jobs = executor.map_array(run_points, chunks, [info] * len(chunks))
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
