"""Where a sweep's points run: submitit's `local` (processes here), `debug` (in this process) or `slurm`
(one array task per point) executor, the resources each job asks for, and submission.

Resources come from the recipe's `[slurm]` table, overridden by command-line flags; memory defaults to an
estimate of one point's needs (`point_mem_mb`), never the whole node.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import config_dict, make_config
from gentool.core.errors import BadInput, choose
from gentool.core.experiments import slurm
from gentool.core.experiments.points import Point
from gentool.core.experiments.recipe import Recipe
from gentool.core.jobs import JOBS

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
class ExecutorOptions:
    """How to run jobs: executor kind, parallel jobs (slurm: array parallelism) and cluster resources:
    time limit (minutes), GPUs, CPUs and memory (MB) per job, partition."""

    executor: str = "local"
    parallel: int | None = None
    partition: str | None = None
    time: int = DEFAULT_TIME_MIN
    gpus: int = 0
    cpus: int = 1
    mem_mb: int | None = None


def parse_mem(text: str) -> int:
    """A memory size as sbatch writes it, with its unit (`500M`, `4G`, `1.5G`, `1T`), in MB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise BadInput(f"memory must be a size with a unit such as 500M, 4G or 1.5G, got {text!r}")
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[match.group(2).upper()]
    mb = math.ceil(float(match.group(1)) * scale)
    if mb < 1:
        raise BadInput(f"memory must be at least 1M, got {text!r}")
    return mb


def point_mem_mb(point: Point, gpus: int = 0) -> int:
    """Memory one point needs: the process plus `PAIR_BYTES` per pair of the largest sample count among
    the config's `SAMPLE_COUNT_FIELDS`, rounded up to `MEM_STEP_MB`."""
    config = config_dict(make_config(JOBS[point.command].config, point.options))
    counts = [int(v) for k, v in config.items() if k in SAMPLE_COUNT_FIELDS and isinstance(v, int)]
    n = max(counts, default=0)
    mb = (GPU_PROCESS_MB if gpus else PROCESS_MB) + PAIR_BYTES * n * n / 2**20
    return MEM_STEP_MB * math.ceil(mb / MEM_STEP_MB)


def _positive(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise BadInput(f"{name} must be an integer >= 1, got {value!r}")


def executor_options(recipe: Recipe, points: list[Point], executor: str, **flags: Any) -> ExecutorOptions:
    """Merge the recipe's [slurm] table with command-line flags (flags that are not None win). `flags`:
    parallel, partition, time, gpus, cpus, mem (text such as `4G`). Memory defaults to the largest
    `point_mem_mb` of the points."""
    choose("executor", executor, EXECUTORS)
    table = dict(recipe.slurm)
    if "array_parallelism" in table:
        table["parallel"] = table.pop("array_parallelism")
    if "mem_gb" in table:
        table["mem_mb"] = math.ceil(float(table.pop("mem_gb")) * 1024)
    given = {k: v for k, v in flags.items() if v is not None}
    if "mem" in given:
        given["mem_mb"] = parse_mem(given.pop("mem"))
    merged = {**table, **given}
    for name in ("parallel", "time", "cpus", "mem_mb"):
        _positive(name, merged.get(name))
    if not isinstance(merged.get("gpus", 0), int) or merged.get("gpus", 0) < 0:
        raise BadInput(f"gpus must be an integer >= 0, got {merged['gpus']!r}")
    if "mem_mb" not in merged and points:
        merged["mem_mb"] = max(point_mem_mb(p, merged.get("gpus", 0)) for p in points)
    return ExecutorOptions(executor=executor, **merged)


def job_name(recipe: Recipe) -> str:
    """The Slurm job name of a recipe's sweep (what squeue and sacct show)."""
    return f"gentool-{recipe.name}"


def slurm_parameters(opts: ExecutorOptions, name: str) -> dict[str, Any]:
    """submitit `SlurmExecutor` parameters of `opts` (each becomes an `#SBATCH` line)."""
    params: dict[str, Any] = {"job_name": name, "time": opts.time, "cpus_per_task": opts.cpus,
                              "array_parallelism": opts.parallel or DEFAULT_ARRAY_PARALLELISM}
    if opts.mem_mb:
        params["mem"] = f"{opts.mem_mb}M"
    if opts.gpus:
        params["gpus_per_node"] = opts.gpus
    if opts.partition:
        params["partition"] = opts.partition
    return params


def sbatch_lines(opts: ExecutorOptions, name: str, folder: Path, n_jobs: int) -> list[str]:
    """The `#SBATCH` lines of the job array submitit would send for `n_jobs` points (made by the function
    that writes submitit's own sbatch scripts, so they are exactly what `submit` sends; it needs no Slurm)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(opts, name)
    text = _make_sbatch_string(command="", folder=folder.absolute(), map_count=n_jobs if n_jobs > 1 else None,
                               **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


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
