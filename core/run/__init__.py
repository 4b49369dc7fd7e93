"""The run contract: a job built from a typed config and a seed, advanced unit by unit, executed into a run
directory that one function owns.

    from gentool.core.run import execute
    result = execute(job, "runs/x")           # lock, config.json, units, checkpoints, resume, summary

Pieces: `contract` (the `Job` protocol and `JobSpec`), `rundir` (lock, owner marker, stored config, atomic
commits), `signals` (SIGINT/SIGTERM never interrupt a commit), `execute` (the loop), `device`.
Typed configs themselves are declared with `gentool.core.config`.
"""

from gentool.core.run.contract import Job, JobSpec, Row
from gentool.core.run.device import resolve_device
from gentool.core.run.execute import RunResult, execute
from gentool.core.run.rundir import RunDirectory, open_run_dir

__all__ = ["Job", "JobSpec", "Row", "RunDirectory", "RunResult", "execute", "open_run_dir", "resolve_device"]
