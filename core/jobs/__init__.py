"""Every gentool job, built from its typed config: the registry the CLI, recipes and sweeps share.

    from gentool.core.jobs import run
    result = run("mad-loop", "runs/mad", generations=20, seeds=100, seed=0)   # as the mad-loop command

    spec = JOBS["mad-loop"]                                   # or step by step:
    job = spec.make(spec.config(generations=20), 0, torch.device("cpu"))
    execute(job, "runs/mad")

A `JobSpec` names the command, its config dataclass, the builder `(config, seed, device) -> Job`, and a
one-line description. Adding a command is adding a module here with a `SPEC` and listing it below.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gentool.core.config import make_config
from gentool.core.errors import choose
from gentool.core.jobs import bench
from gentool.core.run.contract import JobSpec
from gentool.core.run.device import resolve_device
from gentool.core.run.execute import RunResult, execute

JOB_SPECS = ("sample:SPEC", "tune:SPEC", "train:SPEC", "bound:SPEC", "monoflow:SPEC", "simplex:SIMPLEX",
             "simplex:COMPARE", "optimize:PARTICLES", "topk:SPEC", "mad:SPEC")


def _load() -> dict[str, JobSpec]:
    specs = []
    for ref in JOB_SPECS:
        module, _, attr = ref.partition(":")
        specs.append(getattr(importlib.import_module(f"gentool.core.jobs.{module}"), attr))
    return {s.command: s for s in specs}


JOBS: dict[str, JobSpec] = _load()
# jobs that are no command of their own but run through the run contract when sharded (`bench ... --shards`)
BENCH_JOBS: dict[str, JobSpec] = {s.command: s for s in (bench.SAMPLERS, bench.SOLVERS)}
RUNNABLE: dict[str, JobSpec] = {**JOBS, **BENCH_JOBS}  # what a point or a shard may run


def get_spec(command: str) -> JobSpec:
    """The spec of `command` (unknown names are bad input naming the nearest)."""
    return JOBS[choose("command", command, JOBS)]


def run(command: str, out: str | Path, *, seed: int = 0, device: str = "auto", resume: str = "never",
        plots: bool = True, **settings: Any) -> RunResult:
    """Run job `command` with `settings` (its config fields) into `out`: the Python twin of the command of the
    same name (same config and seed, same numbers)."""
    spec = get_spec(command)
    job = spec.make(make_config(spec.config, settings), seed, resolve_device(device))
    return execute(job, out, resume=resume, plots=plots)
