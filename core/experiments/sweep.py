"""Sweeps: run every point of a recipe's grid as a submitit job, survive faults, record what happened.

    points = expand(recipe, "runs/x")
    outcome = run_sweep(recipe, points, "runs/x", executor_options(recipe, points, "slurm"))

The sweep directory (locked while a sweep works in it) holds `config.json` (recipe and executor), one run
directory per point (see `points`), submitit's folder and `status.json`: each point's state (`complete`,
`failed` with its exit code and reason, or `running` with the id of its job). A re-run of the sweep

- skips complete points (their `DONE.json`),
- waits for points whose Slurm job, submitted by an earlier run that was killed, interrupted or stopped
  waiting (`timeout_s`), is still queued or running, instead of submitting them again,
- stops the live local workers an earlier, killed run left behind (see `workers`),
- submits the others: a half-written point resumes from its last committed unit, the rest start.

SIGINT/SIGTERM stop the waiting: Slurm jobs keep going (a re-run waits for them); local workers are stopped
within a few seconds and the debug executor's point stops after its last commit (a re-run resumes them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.core.errors import BadInput, Interrupted
from gentool.core.experiments import slurm, workers
from gentool.core.experiments.executors import (
    ExecutorOptions,
    chunks,
    executor_options,
    job_name,
    make_executor,
    sbatch_script,
    submit,
)
from gentool.core.experiments.points import (
    FAILED,
    POINT,
    RAN,
    RUNNING,
    SKIPPED,
    Point,
    PointResult,
    check_point_dirs,
    expand,
    is_complete,
    run_points,
)
from gentool.core.experiments.recipe import Recipe
from gentool.core.experiments.waiting import Submitted, still_running, wait
from gentool.core.io import atomic_write_json, read_json
from gentool.core.run.rundir import DONE, open_run_dir
from gentool.core.run.signals import StopOnSignal

__all__ = ["DONE", "POINT", "STATUS", "ExecutorOptions", "Point", "PointResult", "SweepOutcome", "executor_options",
           "expand", "failures", "is_complete", "plan", "read_status", "run_sweep"]

STATUS = "status.json"
SUBMITIT = "submitit"
COMPLETE = "complete"
TIMEOUT, INTERRUPTED = "timeout", "interrupted"


@dataclass(frozen=True)
class SweepOutcome:
    """One result per point (in grid order), and why the sweep stopped waiting early: '' (every job
    ended), `timeout` or `interrupted` (then the unfinished points are `running`)."""

    results: list[PointResult]
    stopped: str = ""
    orphans_stopped: int = 0


def recipe_info(recipe: Recipe) -> dict[str, Any]:
    """What a point records about its recipe."""
    return {"path": str(recipe.path), "command": recipe.command, "options": recipe.options, "run": recipe.run,
            "sweep": recipe.sweep, "seeds": recipe.seeds, "overrides": list(recipe.overrides),
            "effective": recipe.data}


def read_status(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Point id -> its last recorded state (`status.json`; empty when there is none)."""
    path = Path(sweep_dir) / STATUS
    try:
        points = read_json(path).get("points", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return points if isinstance(points, dict) else {}


def _status_entry(result: PointResult, executor: str) -> dict[str, Any]:
    state = {FAILED: FAILED, RUNNING: RUNNING}.get(result.state, COMPLETE)
    entry: dict[str, Any] = {"state": state, "job_id": result.job_id}
    if result.job_id:
        entry["executor"] = executor
    if state == FAILED:
        entry.update(exit_code=result.exit_code, reason=result.message)
    return entry


def write_status(sweep_dir: Path, results: list[PointResult], executor: str) -> None:
    """Record every point's state and the executor of its job (`status.json`, atomically)."""
    atomic_write_json(sweep_dir / STATUS, {"points": {r.point_id: _status_entry(r, executor) for r in results}})


def failures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The points recorded as failed that have not completed since: point, exit code, reason, job id."""
    return [{"point": pid, "exit_code": e.get("exit_code", 1), "reason": e.get("reason", ""),
             "job_id": e.get("job_id", "")}
            for pid, e in read_status(sweep_dir).items()
            if isinstance(e, dict) and e.get("state") == FAILED and not is_complete(Path(sweep_dir) / pid)]


def recorded_jobs(todo: list[Point], sweep_dir: Path) -> dict[str, str]:
    """Point id -> Slurm job id recorded as `running` by an earlier run of the sweep."""
    status = read_status(sweep_dir)
    entries = {p.point_id: status[p.point_id] for p in todo if isinstance(status.get(p.point_id), dict)}
    return {pid: str(e["job_id"]) for pid, e in entries.items()
            if e.get("job_id") and e.get("state") == RUNNING and e.get("executor") == "slurm"}


def reattach(todo: list[Point], sweep_dir: Path, opts: ExecutorOptions) -> list[Submitted]:
    """Jobs of an earlier run of this sweep still queued or running (Slurm only), one per point."""
    if opts.executor != "slurm":
        return []
    jobs = recorded_jobs(todo, sweep_dir)
    if not jobs:
        return []
    live = slurm.queued(jobs.values())
    if live is None:
        raise BadInput(f"cannot ask Slurm whether the jobs of the earlier sweep in {sweep_dir} still run "
                       f"(squeue failed); retry once the Slurm controller answers")
    return [Submitted([p], jobs[p.point_id]) for p in todo if jobs.get(p.point_id) in live]


def _submit_new(points: list[Point], info: dict[str, Any], folder: Path, opts: ExecutorOptions, name: str
                ) -> list[Submitted]:
    parts = chunks(points, opts)
    jobs = submit(make_executor(folder, opts, name), run_points, parts, info)
    subs = [Submitted(part, str(job.job_id), job) for part, job in zip(parts, jobs, strict=True)]
    if opts.executor == "local":
        workers.record(folder.parent, local_workers(subs))
    return subs


def local_workers(subs: list[Submitted]) -> list[workers.Worker]:
    """The controller processes of local jobs (submitit's `LocalJob._process`)."""
    procs = [getattr(s.job, "_process", None) for s in subs]
    found = [workers.worker_of(p.pid) for p in procs if p is not None]
    return [w for w in found if w is not None]


def run_sweep(recipe: Recipe, points: list[Point], sweep_dir: str | Path, opts: ExecutorOptions,
              progress: Callable[..., None] | None = None, timeout_s: float | None = None) -> SweepOutcome:
    """Run every incomplete point (see the module docstring) and wait for them, at most `timeout_s`
    seconds; the sweep directory is locked meanwhile (a second `gentool sweep` into it is refused)."""
    sweep_dir = Path(sweep_dir)
    check_point_dirs(points, "a point of another sweep")
    with open_run_dir(sweep_dir, "sweep") as rd:
        orphans = workers.stop(workers.recorded(sweep_dir))  # never two workers on one point
        info = recipe_info(recipe)
        rd.write_config({"recipe": info, "executor": asdict(opts), "points": [p.point_id for p in points]},
                        None, None)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        outcome = _run(points, info, sweep_dir, opts, job_name(recipe), deadline, progress)
        return SweepOutcome(outcome.results, outcome.stopped, orphans)


def _run(points: list[Point], info: dict[str, Any], sweep_dir: Path, opts: ExecutorOptions, name: str,
         deadline: float | None, progress: Callable[..., None] | None) -> SweepOutcome:
    results = [PointResult(p.point_id, 0, 0.0, "complete already", SKIPPED) for p in points if is_complete(p.run_dir)]
    todo = [p for p in points if not is_complete(p.run_dir)]
    subs = reattach(todo, sweep_dir, opts)
    attached = {p.point_id for s in subs for p in s.points}
    fresh = [p for p in todo if p.point_id not in attached]
    if fresh:
        subs += _submit_new(fresh, info, sweep_dir / SUBMITIT, opts, name)
    write_status(sweep_dir, results + [r for s in subs for r in still_running(s)], opts.executor)

    def collect(batch: list[PointResult]) -> None:
        results.extend(batch)
        if progress:
            progress(len(results), len(points))
        if opts.executor == "debug" and any(r.exit_code == Interrupted.exit_code for r in batch):
            raise Interrupted("the debug job's point was stopped by a signal")  # the signal was this process's

    collect([])
    stopped = ""
    try:
        with StopOnSignal("the sweep was interrupted"):
            _, pending = wait(subs, opts.executor, sweep_dir / SUBMITIT, deadline, on_results=collect)
        stopped = TIMEOUT if pending else ""
    except (KeyboardInterrupt, Interrupted):
        stopped = INTERRUPTED
    finished = {r.point_id for r in results}
    if stopped == INTERRUPTED and opts.executor != "slurm":
        results += _stop_local(subs, finished)
    else:
        results += [r for s in subs for r in still_running(s) if r.point_id not in finished]
    order = {p.point_id: i for i, p in enumerate(points)}
    results.sort(key=lambda r: order[r.point_id])
    write_status(sweep_dir, results, opts.executor)
    return SweepOutcome(results, stopped)


def _stop_local(subs: list[Submitted], finished: set[str]) -> list[PointResult]:
    """After an interrupt: stop the local workers still running and report their unfinished points (complete
    ones as run, the others as interrupted, resumed by a re-run)."""
    workers.stop(local_workers(subs))
    out = []
    for sub in subs:
        for p in sub.points:
            if p.point_id in finished:
                continue
            out.append(PointResult(p.point_id, 0, 0.0, "", RAN, sub.job_id) if is_complete(p.run_dir) else
                       PointResult(p.point_id, Interrupted.exit_code, 0.0, "interrupted; a re-run of the sweep "
                                   "resumes it from its last committed unit", FAILED, sub.job_id))
    return out


def _point_state(point: Point, queued: dict[str, str]) -> str:
    if is_complete(point.run_dir):
        return COMPLETE
    job = queued.get(point.point_id)
    return f"queued (job {job})" if job else "todo"


def plan(recipe: Recipe, points: list[Point], sweep_dir: str | Path, opts: ExecutorOptions) -> list[str]:
    """What `run_sweep` would do, as lines: each point's state (complete / queued in an earlier run's job /
    todo) and how the todo points would be submitted (Slurm: the complete sbatch script)."""
    sweep_dir = Path(sweep_dir)
    todo = [p for p in points if not is_complete(p.run_dir)]
    jobs = recorded_jobs(todo, sweep_dir) if opts.executor == "slurm" else {}
    live = (slurm.queued(jobs.values()) or {}) if jobs else {}
    queued = {pid: job for pid, job in jobs.items() if job in live}
    lines = [f"{_point_state(p, queued):<9s} {p.point_id}" for p in points]
    fresh = [p for p in todo if p.point_id not in queued]
    lines.append(f"{len(points)} points: {len(points) - len(todo)} complete, {len(queued)} queued, "
                 f"{len(fresh)} to submit -> {sweep_dir}")
    if not fresh:
        return lines
    n_jobs = len(chunks(fresh, opts))
    if opts.executor == "slurm":
        lines.append(f"sbatch: {'an array of ' if n_jobs > 1 else ''}{n_jobs} job(s), one per point, with this "
                     "script:")
        return lines + sbatch_script(opts, job_name(recipe), sweep_dir / SUBMITIT, n_jobs).splitlines()
    lines.append(f"{opts.executor}: {n_jobs} job(s), {opts.cpus} CPU(s) and a {opts.time} min time limit each")
    return lines
