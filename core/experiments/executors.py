"""Where a sweep's points run: submitit's `local` (processes here), `debug` (in this process) or `slurm`
(one array task per point) executor, the resources each job asks for, and submission.

Resources (`resources.Resources`) come from the recipe's `[slurm]` table, overridden by command-line flags;
memory defaults to an estimate of one point's needs (`point_mem_mb`), never the whole node.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gentool.core.config import config_dict, make_config
from gentool.core.errors import BadInput, choose
from gentool.core.experiments import resources, slurm
from gentool.core.experiments.points import Point
from gentool.core.experiments.recipe import Recipe
from gentool.core.experiments.resources import Resources, parse_mem
from gentool.core.jobs import RUNNABLE

EXECUTORS = ("local", "slurm", "debug")
DEFAULT_ARRAY_PARALLELISM = 16
DEFAULT_TIME_MIN = 60

# Memory of one point (see point_mem_mb): the process itself (Python, torch, submitit; measured ~0.3 GB RSS
# on CPU, more with CUDA's libraries and context), plus pairwise n×n matrices (k-NN metrics, kernels of the
# particle methods) over the largest sample count: measured ~3.5 bytes per pair (0.64 GB RSS for the
# sampler recipe at n = 10000), budgeted at 16.
PROCESS_MB = 1024
GPU_PROCESS_MB = 4096
PAIR_BYTES = 16
SAMPLE_COUNT_FIELDS = ("n", "n_real", "n_synth", "n_test")
MEM_STEP_MB = 256
ASKED = ("partition", "time", "cpus_per_task", "gpus_per_node", "mem")  # named when sbatch refuses a job


@dataclass(frozen=True)
class ExecutorOptions(Resources):
    """How to run jobs: the executor kind, the `Resources` each job asks for, and the memory per job in MB
    (`mem`, else the estimate of the points' needs)."""

    executor: str = "local"
    mem_mb: int | None = None


def point_mem_mb(point: Point, gpus: int = 0) -> int:
    """Memory one point needs: the process plus `PAIR_BYTES` per pair of the largest sample count among
    the config's `SAMPLE_COUNT_FIELDS`, rounded up to `MEM_STEP_MB`."""
    config = config_dict(make_config(RUNNABLE[point.command].config, point.options))
    counts = [int(v) for k, v in config.items() if k in SAMPLE_COUNT_FIELDS and isinstance(v, int)]
    n = max(counts, default=0)
    mb = (GPU_PROCESS_MB if gpus else PROCESS_MB) + PAIR_BYTES * n * n / 2**20
    return MEM_STEP_MB * math.ceil(mb / MEM_STEP_MB)


def executor_options(recipe: Recipe, points: list[Point], executor: str, **flags: Any) -> ExecutorOptions:
    """Merge the recipe's [slurm] table with command-line `flags` (fields of `Resources`; those that are not
    None win). Memory defaults to the largest `point_mem_mb` of the points."""
    choose("executor", executor, EXECUTORS)
    res = resources.from_table(recipe.slurm, "slurm", **flags)
    mem_mb = parse_mem(res.mem) if res.mem is not None else (
        max(point_mem_mb(p, res.gpus_per_node) for p in points) if points else None)
    return ExecutorOptions(**{f.name: getattr(res, f.name) for f in fields(Resources)}, executor=executor,
                           mem_mb=mem_mb)


def job_name(recipe: Recipe) -> str:
    """The Slurm job name of a recipe's sweep (what squeue and sacct show)."""
    return f"gentool-{recipe.name}"


def slurm_parameters(opts: ExecutorOptions, name: str) -> dict[str, Any]:
    """submitit `SlurmExecutor` parameters of `opts` (each becomes an `#SBATCH` line; `setup` lines go
    before the job's command, `sbatch` pairs are passed through as `additional_parameters`)."""
    params: dict[str, Any] = {"job_name": name, "time": opts.time, "cpus_per_task": opts.cpus, "nodes": opts.nodes,
                              "array_parallelism": opts.parallel or DEFAULT_ARRAY_PARALLELISM}
    if opts.mem_mb:
        params["mem"] = f"{opts.mem_mb}M"
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if getattr(opts, key):
            params[key] = getattr(opts, key)
    if opts.setup:
        params["setup"] = list(opts.setup)
    if opts.sbatch:
        params["additional_parameters"] = dict(opts.sbatch)
    return params


def submit_command(folder: Path) -> str:
    """The command submitit's sbatch script runs (`SlurmExecutor._submitit_command_str`)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def sbatch_script(opts: ExecutorOptions, name: str, folder: Path, n_jobs: int) -> str:
    """The sbatch script submitit would submit for `n_jobs` points (a job array when more than one), made by
    the function that writes submitit's own sbatch scripts, so it is exactly what `submit` sends (it needs
    no Slurm)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = folder.absolute()
    return _make_sbatch_string(command=submit_command(folder), folder=folder,
                               map_count=n_jobs if n_jobs > 1 else None, **slurm_parameters(opts, name))


def sbatch_lines(opts: ExecutorOptions, name: str, folder: Path, n_jobs: int) -> list[str]:
    """The `#SBATCH` lines of `sbatch_script`."""
    return [line for line in sbatch_script(opts, name, folder, n_jobs).splitlines() if line.startswith("#SBATCH")]


def chunks(points: list[Point], opts: ExecutorOptions) -> list[list[Point]]:
    """Slurm: one array task per point. Local/debug: at most `parallel` jobs (default: CPU count)."""
    if opts.executor == "slurm":
        return [[p] for p in points]
    n = max(1, min(len(points), opts.parallel or os.cpu_count() or 1))
    return [points[i::n] for i in range(n)]


def make_executor(folder: Path, opts: ExecutorOptions, name: str) -> Any:
    """A submitit executor for `opts`: `SlurmExecutor` with `slurm_parameters`, else the local/debug one."""
    import submitit

    try:
        if opts.executor == "slurm":
            executor = submitit.SlurmExecutor(folder=folder)
            executor.update_parameters(**slurm_parameters(opts, name))
            return executor
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.executor)
    except RuntimeError as exc:  # e.g. no srun on this machine
        raise BadInput(f"executor {opts.executor!r} is not available here ({exc}); "
                       f"allowed here: local, debug") from None
    executor.update_parameters(timeout_min=opts.time, cpus_per_task=opts.cpus)
    return executor


def submit(executor: Any, fn: Callable[..., Any], chunks_: list[list[Point]], info: dict[str, Any]) -> list[Any]:
    """Submit one job per chunk (`fn(chunk, info)`); an sbatch refusal is `BadInput` with sbatch's reason
    (submitit echoes sbatch's stderr itself: it is captured, not shown)."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return executor.map_array(fn, chunks_, [info] * len(chunks_))
    except (FailedJobError, FailedSubmissionError) as exc:
        asked = ", ".join(f"{k}={v}" for k, v in executor.parameters.items() if k in ASKED)
        raise BadInput(f"sbatch refused the sweep's jobs ({asked}): {slurm.sbatch_refusal(str(exc))}") from None
