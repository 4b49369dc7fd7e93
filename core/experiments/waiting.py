"""Waiting for a sweep's jobs and reading how each ended.

A Slurm job is finished once it left the queue (`slurm.queued`, which needs no accounting); its points'
results are then read from submitit's result file. A job that died without one (cancelled, out of time or
memory, node failure) fails each of its points with the job's end state (sacct, when accounting is
available) and the last lines of its stderr. A job still queued when the sweep stops waiting is reported
`running` with its id, so a re-run of the sweep waits for it instead of submitting it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gentool.core.experiments import slurm
from gentool.core.experiments.points import FAILED, RUNNING, Point, PointResult

STDERR_LINES = 3
LOCAL_POLL_S = 0.2
SLURM_POLL_S = (1.0, 30.0)  # first and longest pause between two squeue calls
NOISE = ("submitit INFO", "submitit DEBUG", "submitit WARNING")  # submitit's own log lines are no reason


@dataclass(eq=False)
class Submitted:
    """One job: the points it runs (in order), its id, and the submitit job object (None for a Slurm job
    submitted by an earlier run of the sweep, found again by its id)."""

    points: list[Point]
    job_id: str
    job: Any = None


def stderr_tail(path: Path, lines: int = STDERR_LINES) -> str:
    """The last `lines` meaningful lines of a job's stderr, joined by ` | ` ('' when there are none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(NOISE)]
    return " | ".join(kept[-lines:])


def last_line(text: str) -> str:
    """The last non-empty line of a message or traceback."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def failed(sub: Submitted, reason: str, exit_code: int = 1) -> list[PointResult]:
    """Every point of `sub` failed for `reason`."""
    return [PointResult(p.point_id, exit_code, 0.0, reason, FAILED, sub.job_id) for p in sub.points]


def still_running(sub: Submitted) -> list[PointResult]:
    return [PointResult(p.point_id, 0, 0.0, "still queued or running", RUNNING, sub.job_id) for p in sub.points]


def _paths(sub: Submitted, folder: Path) -> Any:
    from submitit.core.utils import JobPaths

    return sub.job.paths if sub.job is not None else JobPaths(folder, job_id=sub.job_id, task_id=0)


def _with_state(results: list[PointResult], sub: Submitted, state: str | None) -> list[PointResult]:
    """Results read from a job's result file, with its id, and a killed job's end state before a reason."""
    out = []
    for r in results:
        message = f"{state}: {r.message}" if state and r.exit_code and not r.message.startswith(state) else r.message
        out.append(replace(r, job_id=sub.job_id, message=message))
    return out


def slurm_outcomes(subs: list[Submitted], folder: Path) -> list[PointResult]:
    """Results of Slurm jobs that left the queue (see the module docstring); accounting is asked only
    about jobs whose points did not all succeed."""
    from submitit.core.utils import pickle_load

    outcomes = {}
    for sub in subs:
        path = _paths(sub, folder).result_pickle
        outcomes[sub.job_id] = pickle_load(path) if path.exists() else None
    unhappy = [s.job_id for s in subs if not _succeeded(outcomes[s.job_id])]
    states = slurm.final_states(unhappy) if unhappy else {}
    results: list[PointResult] = []
    for sub in subs:
        outcome = outcomes[sub.job_id]
        state = None if states is None else states.get(sub.job_id, "")
        if outcome is None:
            results += failed(sub, _died(sub, state, _paths(sub, folder).stderr))
        elif outcome[0] == "success":
            results += _with_state(list(outcome[1]), sub, state if state != "COMPLETED" else None)
        else:
            results += failed(sub, f"job {sub.job_id} raised: {last_line(outcome[1])}")
    return results


def _succeeded(outcome: tuple[str, Any] | None) -> bool:
    """A job's result file says every point of it succeeded."""
    return outcome is not None and outcome[0] == "success" and all(r.exit_code == 0 for r in outcome[1])


def _died(sub: Submitted, state: str | None, stderr: Path) -> str:
    """Why a Slurm job ended without a result: its end state (None: sacct not available, '': no record of
    the job in accounting) and the last lines of its stderr."""
    unknown = {None: " (end state unknown: sacct is not available)", "": " (accounting has no record of it)"}
    what = f"{state} " if state else "left the queue "
    when = "before it started" if not stderr.exists() else "without a result"
    tail = stderr_tail(stderr)
    return (f"job {sub.job_id} {what}{when}{unknown.get(state, '')}" + (f"; stderr: {tail}" if tail else ""))


def local_outcome(sub: Submitted) -> list[PointResult]:
    """Results of a finished local or debug job (its exception's last line when it failed)."""
    try:
        return [replace(r, job_id=sub.job_id) for r in sub.job.result()]
    except Exception as exc:  # noqa: BLE001 - submitit raises the job's own failure types
        return failed(sub, f"job {sub.job_id} failed: {last_line(str(exc)) or type(exc).__name__}")


def finished(subs: list[Submitted], executor: str) -> list[Submitted]:
    """The jobs among `subs` that have ended (a debug job runs when its result is asked for: one at a
    time). Slurm: none while squeue cannot be asked (the controller restarting, say)."""
    if executor == "debug":
        return subs[:1]
    if executor == "local":
        return [s for s in subs if s.job.done()]
    live = slurm.queued([s.job_id for s in subs])
    return [] if live is None else [s for s in subs if s.job_id not in live]


def _pause(executor: str, waited: float) -> float:
    if executor != "slurm":
        return LOCAL_POLL_S
    first, longest = SLURM_POLL_S
    return min(longest, first + waited / 20)


def wait(subs: list[Submitted], executor: str, folder: Path, deadline: float | None = None,
         on_results: Callable[[list[PointResult]], None] | None = None) -> tuple[list[PointResult], list[Submitted]]:
    """Wait until every job has ended or the monotonic `deadline` passed; return (results of the ended
    jobs, jobs still queued or running). `on_results` sees each batch of results as it comes, and an empty batch
    after every poll without one (a heartbeat: the caller's progress shows the time waited)."""
    pending, results = list(subs), []
    start = time.monotonic()
    while pending:
        done = finished(pending, executor)
        batch: list[PointResult] = []
        if done:
            batch = slurm_outcomes(done, folder) if executor == "slurm" else [
                r for s in done for r in local_outcome(s)]
            results += batch
            pending = [s for s in pending if s not in done]
        if on_results:
            on_results(batch)
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(_pause(executor, time.monotonic() - start))
    return results, pending
