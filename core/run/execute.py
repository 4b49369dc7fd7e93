"""`execute`: run a `Job` into its run directory — the only code that writes a run directory's state.

    result = execute(job, "runs/x", resume="never" | "require" | "auto", progress=callback)

1. Lock the directory for `job.command` (a second process, or another command's directory: refused).
2. Fresh directory: write `config.json`. Existing run: `resume="never"` refuses; otherwise the stored config
   and seed must equal the job's (settings marked extendable may grow), then the last committed state and
   rows are loaded (`resume="auto"` starts fresh in an empty directory, as sweeps need).
3. Loop: `job.advance()` one unit; its rows must be finite (else `NumericalFailure` naming the unit and the
   job's hint, the last good state stays committed); every `checkpoint_every` units (and at the end) the rows,
   samples and `state_dict()` are committed atomically, the state with a manifest (size, sha256) of the unit
   files that a resumed run verifies. SIGINT/SIGTERM stop the loop (never mid-commit) with `Interrupted`.
A refusal never damages the directory: a resumed run is checked completely (settings, state, units) before
anything is written, and a new run refused by bad input (at any unit) removes what it wrote.
4. `job.finish(...)` writes summaries and figures; `metrics.jsonl` and `DONE.json` mark completion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import check_path, config_dict, current_names, extendable_fields
from gentool.core.errors import BadInput, NumericalFailure, StorageError, choose
from gentool.core.progress import position
from gentool.core.run.contract import Job, Row, check_seed
from gentool.core.run.rundir import CONFIG, DONE, RESUME_MODES, RunDirectory, config_differences, open_run_dir
from gentool.core.run.signals import StopOnSignal

ProgressFn = Callable[..., None]


@dataclass
class RunResult:
    """What `execute` returns: the directory, all rows, the job's headline numbers, and how it went."""

    out: Path
    rows: list[Row]
    summary: Row
    units_done: int
    resumed: bool
    seconds: float


def non_finite_keys(rows: list[Row]) -> list[str]:
    """Names of row fields holding NaN or ±inf."""
    bad: list[str] = []
    for row in rows:
        bad += [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v) and k not in bad]
    return bad


def _prepare(rd: RunDirectory, job: Job, resume: str) -> tuple[list[Row], bool]:
    """Write config.json for a fresh run, or check and load a stored one; returns (rows, resumed)."""
    new = {"config": config_dict(job.config), "seed": job.seed}
    if rd.stored is None:
        if resume == "require":
            raise BadInput(f"nothing to resume in {rd.path}: it holds no run")
        rd.write_config(new["config"], job.seed, getattr(job, "device", None))
        return [], False
    if resume == "never":
        raise BadInput(f"{rd.path} already holds a `{job.command}` run; resume it or choose another output "
                       "directory")
    old = {"config": current_names(type(job.config), rd.stored["config"]), "seed": rd.stored.get("seed")}
    diffs = config_differences({**old["config"], "seed": old["seed"]}, {**new["config"], "seed": job.seed},
                               extendable_fields(type(job.config)))
    if diffs:
        raise BadInput(f"cannot resume {rd.path}: settings differ from the stored run: {', '.join(diffs)}; a "
                       "resumed run keeps its settings (a run length may grow): run these in a new output directory "
                       "(or delete this one)")
    units, state = rd.load_state()  # everything is checked before the directory is touched
    if state is not None:
        _restore(rd, job, state)
    if job.units_done != units:
        raise BadInput(f"state of {rd.path} is inconsistent ({units} units committed, the job restored "
                       f"{job.units_done}); delete the directory to start over")
    rows = rd.rows(units)
    if old["config"] != new["config"]:  # an extendable setting grew: record it, the run is no longer complete
        rd.write_config(new["config"], job.seed, getattr(job, "device", None))
        (rd.path / DONE).unlink(missing_ok=True)
    return rows, True


def _restore(rd: RunDirectory, job: Job, state: Any) -> None:
    """`job.load_state_dict(state)`; a state that does not fit the job (keys, shapes) is one `BadInput` line."""
    try:
        job.load_state_dict(state)
    except BadInput as exc:
        raise BadInput(f"cannot resume {rd.path}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = " ".join((str(exc).strip() or type(exc).__name__).split())[:300]
        raise BadInput(f"cannot resume {rd.path}: its state file does not match this {job.command} run "
                       f"({type(exc).__name__}: {reason}); delete the directory to start over") from None


def _headline(rows: list[Row], keep: int = 3) -> dict[str, float]:
    """Means over a unit's rows of its first few float fields (shown next to the progress bar)."""
    keys = [k for k, v in (rows[0] if rows else {}).items() if isinstance(v, float)][:keep]
    return {k: sum(r[k] for r in rows if isinstance(r.get(k), float)) / len(rows) for k in keys}


def _advance(job: Job, out: Path) -> list[Row]:
    unit = job.units_done + 1
    try:
        rows = job.advance()
    except NumericalFailure as exc:
        raise type(exc)(f"{job.command} unit {unit}: {exc}; {_kept(out, unit)}") from None
    bad = non_finite_keys(rows)
    if bad:
        hint = getattr(job, "hint", "")
        raise NumericalFailure(f"{job.command} unit {unit}: non-finite {', '.join(bad)}{_first_bad(rows)}"
                               f"{'; ' + hint if hint else ''}; {_kept(out, unit)}")
    return rows


def _kept(out: Path, unit: int) -> str:
    """What a numerical failure at `unit` leaves behind, and where a run with other settings goes."""
    return (f"the run in {out} keeps its last good state (unit {unit - 1}); with other settings, run in a new "
            "output directory (a resumed run keeps its settings; a run length may grow)")


def _first_bad(rows: list[Row]) -> str:
    """" at <counter> <value>" of the first row holding a non-finite number, by its first integer entry (its
    step, iteration or generation), or "" when it has none."""
    row = next(r for r in rows if non_finite_keys([r]))
    counter = next(((k, v) for k, v in row.items() if isinstance(v, int) and not isinstance(v, bool)), None)
    return "" if counter is None else f" at {counter[0]} {counter[1]}"


def execute(job: Job, out: str | Path, *, resume: str = "never", progress: ProgressFn | None = None,
            checkpoint_every: int = 1, plots: bool = True) -> RunResult:
    """Run `job` to completion in `out` (see the module docstring). Returns the `RunResult`."""
    choose("resume mode", resume, RESUME_MODES)
    check_seed(job.seed)
    check_path("out", out, "the run directory")
    if checkpoint_every < 1:
        raise BadInput(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    out = Path(out)
    if resume == "require" and not (out / CONFIG).is_file():
        raise BadInput(f"nothing to resume in {out}: it holds no run")
    start = time.perf_counter()
    created = not out.exists()
    with open_run_dir(out, job.command) as rd:
        fresh = rd.stored is None
        try:
            rows, resumed = _prepare(rd, job, resume)
            return _loop(rd, job, rows, resumed, progress, checkpoint_every, plots, start)
        except (BadInput, StorageError) as exc:
            if fresh and (isinstance(exc, BadInput) or job.units_done == 0):
                rd.discard(remove_dir=created)  # a refused new run leaves nothing behind: a plain re-run works
            raise


def _loop(rd: RunDirectory, job: Job, rows: list[Row], resumed: bool, progress: ProgressFn | None,
          checkpoint_every: int, plots: bool, start: float) -> RunResult:
    """Advance, commit every `checkpoint_every` units, finish (see the module docstring)."""
    out, pending = rd.path, []
    with StopOnSignal("") as stop:
        while not job.done:
            if not pending:  # the count of the last commit, also when a signal ends that commit
                stop.message = (f"stopped in {out} with {job.units_done} of {job.units_total} units committed; "
                                "resume the run to continue")
            new = _advance(job, out)
            rows += new
            pending.append((job.units_done, new))
            if len(pending) >= checkpoint_every or job.done:
                every = getattr(job, "snapshot_every", 0)
                with stop.committing():
                    rd.commit(job.units_done, pending, job.state_dict(), job.samples(),
                              snapshot=bool(every) and job.units_done % every == 0)
                    stop.message = (f"stopped in {out} with {job.units_done} of {job.units_total} units "
                                    "committed; resume the run to continue")
                pending = []
            if progress is not None:
                info = job.progress_info(new) if hasattr(job, "progress_info") else _headline(new)
                progress(*position(job), **info)
        with stop.committing():
            summary = job.finish(out, rows, plots)
            rd.finish(rows, job.units_done, summary, time.perf_counter() - start)
    return RunResult(out, rows, summary, job.units_done, resumed, time.perf_counter() - start)


def run_summary(out: str | Path) -> dict[str, Any] | None:
    """The completion record (`DONE.json`) of a run directory, or None while it is incomplete."""
    from gentool.core.io import read_json

    path = Path(out) / DONE
    return read_json(path) if path.is_file() else None
