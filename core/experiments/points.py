"""Sweep points: a recipe's grid expanded into points, and the code that runs one point inside a job.

Each point gets its own run directory `SWEEP_DIR/<point id>` and a `point.json` (recipe, parameters, seed,
environment). A point id is a readable slug of its swept values and seed plus a short hash of their exact
values (`tol-0.001__seed-0__3f2a9c1d`), so two different points never share a directory. The job itself is
built from the recipe's config and `execute`d there with `resume="auto"`, so a point that was killed mid-run
resumes from its last committed unit, and a complete one is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import config_dict, make_config
from gentool.core.errors import BadInput, GentoolError, Interrupted
from gentool.core.experiments.recipe import Recipe, grid_options, split_options
from gentool.core.io import atomic_write_json, environment_info, read_json
from gentool.core.jobs import JOBS, RUNNABLE
from gentool.core.run import execute, resolve_device
from gentool.core.run.contract import UnitRange
from gentool.core.run.device import use_threads
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


SLUG_CHARS = 120  # the readable part of a point id; the hash keeps longer ones distinct


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def legacy_point_id(params: dict[str, Any], seed: int | None) -> str:
    """The slug alone (`key-value__key-value__seed-S`): the directory name of sweeps written before ids had a
    hash; not injective (`0.001` and `-0.001` share it), so it is only reused when that directory's
    `point.json` records exactly this point."""
    parts = [f"{_slug(k)}-{_slug(v)}" for k, v in params.items()]
    if seed is not None:
        parts.append(f"seed-{seed}")
    return "__".join(parts) or "base"


def values_hash(params: dict[str, Any], seed: int | None) -> str:
    """First 8 hex digits of SHA-256 over the canonical JSON of {params, seed}: exact values and types
    (`0.001` vs `-0.001`, `1` vs `1.0` vs `"1"`, list order) give different hashes."""
    text = json.dumps({"params": params, "seed": seed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def point_id(params: dict[str, Any], seed: int | None) -> str:
    """Directory name of a point: `slug__hash`, where slug = `legacy_point_id` cut to `SLUG_CHARS` and hash
    = `values_hash` (injective in the exact values, stable, filesystem-safe)."""
    return f"{legacy_point_id(params, seed)[:SLUG_CHARS].rstrip('-_')}__{values_hash(params, seed)}"


def _recorded(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / POINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def existing_id(sweep_dir: Path, params: dict[str, Any], seed: int | None) -> str:
    """The point's id: `point_id`, unless only a directory of an older sweep (`legacy_point_id`) exists whose
    `point.json` records exactly these params and seed (then it is reused, so old sweeps resume)."""
    pid, old = point_id(params, seed), legacy_point_id(params, seed)
    if (sweep_dir / pid).exists() or not (sweep_dir / old).is_dir():
        return pid
    rec = _recorded(sweep_dir / old)
    same = rec is not None and rec.get("params") == params and rec.get("seed") == seed
    return old if same else pid


def check_overrides(recipe: Recipe, config: dict[str, Any], run: dict[str, Any]) -> None:
    """A command-line override of a swept setting (or of the seed of a sweep over seeds) is refused: every
    point would run the override while its directory keeps the swept label."""
    dotted = [o.partition("=")[0].removeprefix("options.").replace("-", "_") for o in recipe.overrides
              if o.startswith("options.")]
    given = [*config, *run, *dotted]
    swept = [k for k in dict.fromkeys(given) if k in recipe.sweep or (k == "seed" and recipe.seeds)]
    if swept:
        names = ", ".join(k.replace("_", "-") for k in swept)
        axis = "seeds" if swept[0] == "seed" else swept[0].replace("_", "-")
        raise BadInput(f"cannot override {names}: the recipe sweeps over it (sweep.{axis}); override the sweep "
                       f"list instead (sweep.{axis}=[...])")


def _check_distinct(points: list[Point], configs: list[str]) -> None:
    """Two points with the same config and seed would be one run: refuse (naming both)."""
    seen: dict[tuple[str, int | None], Point] = {}
    for point, config in zip(points, configs, strict=True):
        key = (config, point.seed)
        if key in seen:
            raise BadInput(f"duplicate sweep points: {seen[key].params} and {point.params} (seed {point.seed}) "
                           "are the same run; remove the repeated value from the sweep")
        seen[key] = point


def expand(recipe: Recipe, sweep_dir: str | Path, overrides: dict[str, Any] | None = None) -> list[Point]:
    """The recipe's grid (cartesian product of sweep lists × seeds) as points under `sweep_dir`;
    `overrides` (setting -> value) apply to every point and may not name a swept setting. Points that are
    the same run (equal config and seed) are refused."""
    spec = JOBS[recipe.command]
    extra_config, extra_run = split_options(spec, overrides or {}, "overrides")
    check_overrides(recipe, extra_config, extra_run)
    seeds: list[int | None] = list(recipe.seeds) or [None]
    points, configs = [], []
    for options in grid_options(recipe):
        params = {k: options[k] for k in recipe.sweep}
        config = {k: v for k, v in {**options, **extra_config}.items() if k != "device"}
        run = {**recipe.run, **({"device": options["device"]} if "device" in options else {}), **extra_run}
        built = make_config(spec.config, config, "overrides")  # a bad override fails before anything runs
        canonical = json.dumps([config_dict(built), run.get("device")], sort_keys=True, default=str)
        for seed in seeds:
            pid = existing_id(Path(sweep_dir), params, seed)
            points.append(Point(pid, recipe.command, params, seed, config,
                                {**run, **({"seed": seed} if seed is not None else {})},
                                str(Path(sweep_dir) / pid)))
            configs.append(canonical)
    _check_distinct(points, configs)
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


def check_point_dirs(points: list[Point], held: str) -> None:
    """Refuse point directories whose `point.json` records other settings, seed or unit range than their point
    (a complete one would otherwise be skipped as done and its results reported under the new settings);
    `held` says what such a directory holds ("a shard of another run", "a point of another sweep")."""
    for p in points:
        try:
            rec = read_json(Path(p.run_dir) / POINT)
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and "params" in rec and "options" not in rec:
            continue  # a legacy record (swept values only): `expand` matched it by those
        want = json.loads(json.dumps([p.options, p.seed, p.run.get("units")]))
        got = [rec.get("options"), rec.get("seed"), rec.get("run", {}).get("units")] if isinstance(rec, dict) else []
        if got != want:
            old = got[0] if got and isinstance(got[0], dict) else {}
            changed = sorted(k for k in {**old, **want[0]} if old.get(k) != want[0].get(k))
            if got and got[1] != want[1]:
                changed.append("seed")
            named = f": {', '.join(changed)}" if changed else ""
            raise BadInput(f"{p.run_dir} holds {held} (other settings, seed or unit range{named}); delete "
                           f"{Path(p.run_dir).parent} or choose another output directory")


def run_point(point: Point, recipe_info: dict[str, Any], lock_wait_s: float = LOCK_WAIT_S) -> PointResult:
    """Run (or resume) one point unless complete; failures are returned with their one-line reason."""
    run_dir = Path(point.run_dir)
    wait_until_unlocked(run_dir, lock_wait_s)
    if is_complete(run_dir):
        return PointResult(point.point_id, 0, 0.0, "complete already", SKIPPED)
    start = time.perf_counter()
    try:
        spec = RUNNABLE[point.command]
        config = make_config(spec.config, point.options)
        use_threads(point.run.get("threads"))
        seed = int(point.run.get("seed", 0))
        job = spec.make(config, seed, resolve_device(point.run.get("device", "auto")))
        if point.run.get("units") is not None:  # a shard: units [a, b) of the job (`shards`)
            job = UnitRange(job, *point.run["units"])
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
    """Run a chunk of points sequentially (the body of one submitit job). A point stopped by a signal stops
    the job: the points after it are reported interrupted, not started."""
    results: list[PointResult] = []
    for point in points:
        if results and results[-1].exit_code == Interrupted.exit_code:
            results.append(PointResult(point.point_id, Interrupted.exit_code, 0.0,
                                       "not started: the job was stopped by a signal", FAILED))
        else:
            results.append(run_point(point, recipe_info))
    return results
