"""Every gentool job, built from its typed config: the registry the CLI, recipes and sweeps share.

    from gentool.core.jobs import JOBS
    spec = JOBS["mad-loop"]
    job = spec.build(spec.config(generations=20), seed=0, device="cpu")
    execute(job, "runs/mad")

A `JobSpec` names the command, its config dataclass, the builder `(config, seed, device) -> Job`, and a
one-line description. Adding a command is adding a module here with a `SPEC` and listing it below.
"""

from __future__ import annotations

import importlib

from gentool.core.errors import choose
from gentool.core.run.contract import JobSpec

JOB_SPECS = ("sample:SPEC", "train:SPEC", "monoflow:SPEC", "optimize:SIMPLEX", "optimize:PARTICLES",
             "mad:SPEC")


def _load() -> dict[str, JobSpec]:
    specs = []
    for ref in JOB_SPECS:
        module, _, attr = ref.partition(":")
        specs.append(getattr(importlib.import_module(f"gentool.core.jobs.{module}"), attr))
    return {s.command: s for s in specs}


JOBS: dict[str, JobSpec] = _load()


def get_spec(command: str) -> JobSpec:
    """The spec of `command` (unknown names are bad input naming the nearest)."""
    return JOBS[choose("command", command, JOBS)]
