"""Sweep points: a recipe's grid expanded into points, and the code that runs one point inside a job.

Each point gets its own run directory `SWEEP_DIR/<point id>` and a `point.json` (recipe, parameters, seed,
environment); the job itself is built from the recipe's config and `execute`d there with `resume="auto"`, so
a point that was killed mid-run resumes from its last committed unit, and a complete one is skipped.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import make_config
from gentool.core.errors import GentoolError
from gentool.core.experiments.recipe import Recipe, grid_options, split_options
from gentool.core.io import atomic_write_json, environment_info
from gentool.core.jobs import JOBS
from gentool.core.run import execute, resolve_device
from gentool.core.run.rundir import DONE, LOCK

POINT = "point.json"
# A point's directory still locked when its job starts belongs to an earlier incarnation of the same job
# being stopped (Slurm requeues a job whose node failed, then kills the stale copy): wait this long for it.
LOCK_WAIT_S = 90.0

RAN, SKIPPED, FAILED, RUNNING = "ran", "skipped", "failed", "running"


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
    """Outcome of one point: exit code (0 = success), wall seconds, the failure reason, its state (`ran`,
    `skipped` (complete already), `failed`, `running` (still queued when the sweep stopped waiting)) and the
    id of the job that ran it."""

    point_id: str
    exit_code: int
    seconds: float
    message: str = ""
    state: str = RAN
    job_id: str = ""


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


def wait_until_unlocked(run_dir: Path, seconds: float) -> None:
    """Return once no process holds the run directory's lock, or after `seconds` (then `execute` reports
    the holder)."""
    lock = run_dir / LOCK
    deadline = time.monotonic() + seconds
    while lock.exists():
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return
        finally:
            os.close(fd)  # closing releases a lock taken here
        time.sleep(1.0)


def run_point(point: Point, recipe_info: dict[str, Any], lock_wait_s: float = LOCK_WAIT_S) -> PointResult:
    """Run (or resume) one point unless complete; failures are returned with their one-line reason."""
    run_dir = Path(point.run_dir)
    wait_until_unlocked(run_dir, lock_wait_s)
    if is_complete(run_dir):
        return PointResult(point.point_id, 0, 0.0, "complete already", SKIPPED)
    start = time.perf_counter()
    try:
        spec = JOBS[point.command]
        config = make_config(spec.config, point.options)
        seed = int(point.run.get("seed", 0))
        job = spec.build(config, seed, resolve_device(point.run.get("device", "auto")))
        atomic_write_json(run_dir / POINT, {**asdict(point), "recipe": recipe_info, "env": environment_info()})
        execute(job, run_dir, resume="auto", plots=bool(point.run.get("plots", True)))
    except GentoolError as exc:
        return PointResult(point.point_id, exc.exit_code, time.perf_counter() - start, str(exc), FAILED)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure of one point must not stop the sweep
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return PointResult(point.point_id, 1, time.perf_counter() - start,
                           f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})", FAILED)
    return PointResult(point.point_id, 0, time.perf_counter() - start)


def run_points(points: list[Point], recipe_info: dict[str, Any]) -> list[PointResult]:
    """Run a chunk of points sequentially (the body of one submitit job)."""
    return [run_point(p, recipe_info) for p in points]
