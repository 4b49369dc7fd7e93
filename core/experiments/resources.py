"""What each job of a sweep asks the cluster for: declared once, as the fields of `Resources`.

The same declaration gives the recipe's `[slurm]` table (keys checked, values validated), the `gentool sweep`
options (generated from the fields, help included) and submitit's Slurm parameters (`#SBATCH` lines, `setup`
lines, extra `sbatch` parameters passed through unchanged).

    [slurm]
    partition = "gpu"
    time = 120                     # minutes
    gpus_per_node = 1
    account = "proj"
    qos = "normal"
    constraint = "a100"
    setup = ["module load cuda/12", "source ~/venv/bin/activate"]
    sbatch = { mail-type = "END", reservation = "x" }
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gentool.core.config import check_int, config_fields, make_config, setting
from gentool.core.errors import BadInput

# Older recipe keys, still read: key -> (field, conversion)
ALIASES: dict[str, tuple[str, Any]] = {
    "gpus": ("gpus_per_node", lambda v: v),
    "array_parallelism": ("parallel", lambda v: v),
    "mem_gb": ("mem", lambda v: f"{v}G"),
}


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


def parse_setup(value: Any) -> tuple[str, ...]:
    """Setup lines: a list of strings (recipe) or one shell line (command line)."""
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list | tuple) or not all(isinstance(v, str) for v in lines):
        raise BadInput(f"setup must be a list of shell lines, got {value!r}")
    return tuple(line for line in lines if line.strip())


def parse_sbatch(value: Any) -> tuple[tuple[str, str], ...]:
    """Extra sbatch parameters: a table (recipe) or `key=value,key=value` (command line), as (key, value)
    pairs; keys that are fields of `Resources` are refused (set the field)."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if any(not sep or not k.strip() for k, sep, _ in pairs):
            raise BadInput(f"sbatch must be key=value pairs separated by commas, got {value!r}")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict):
        raise BadInput(f"sbatch must be a table of sbatch parameters, got {value!r}")
    known = {f.name for f in config_fields(Resources)} | {"array", "array_parallelism", "job_name", "output", "error",
                                                            "cpus_per_task"}
    for key, item in value.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name in known:
            raise BadInput(f"sbatch.{key} is set by gentool; use the {name} setting instead")
        if not isinstance(item, str | int | float | bool):
            raise BadInput(f"sbatch.{key} must be a string, number or boolean, got {item!r}")
    return tuple((str(k).lstrip("-"), str(v)) for k, v in value.items())


@dataclass(frozen=True)
class Resources:
    """Cluster resources of each job of a sweep (the recipe's [slurm] table; command-line flags win)."""

    parallel: int | None = setting(
        None, "Jobs running at once (slurm: array parallelism, default 16; local: default the CPU count).",
        short="array-parallelism")
    partition: str | None = setting(None, "Slurm partition (default: the cluster's).")
    time: int = setting(60, "Job time limit in minutes.")
    cpus: int = setting(1, "CPUs per job (cpus-per-task).")
    gpus_per_node: int = setting(0, "GPUs per job (slurm: per node).", short="gpus")
    mem: str | None = setting(None, "Memory per job with its unit, e.g. 4G or 500M (slurm; default: estimated "
                              "from the recipe's sample counts).")
    nodes: int = setting(1, "Nodes per job (slurm).")
    account: str | None = setting(None, "Slurm account to charge.")
    qos: str | None = setting(None, "Slurm quality of service.")
    constraint: str | None = setting(None, "Slurm node features required, e.g. a100 or 'a100|h100'.")
    exclude: str | None = setting(None, "Slurm nodes not to use, e.g. node[01-03].")
    setup: tuple[str, ...] = setting((), "Shell line(s) run in the sbatch script before the job (recipe: a list).",
                                     parse=parse_setup, metavar="LINE")
    sbatch: tuple[tuple[str, str], ...] = setting(
        (), "Further sbatch parameters, passed through: key=value,key=value (recipe: a table).",
        parse=parse_sbatch, metavar="K=V,...")

    def __post_init__(self) -> None:
        for name in ("parallel", "time", "cpus", "nodes"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), lo=1)
        check_int("gpus_per_node", self.gpus_per_node, lo=0)
        if self.mem is not None:
            parse_mem(self.mem)
        for name in ("partition", "account", "qos", "constraint", "exclude"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or any(c.isspace() for c in value)):
                raise BadInput(f"{name} must be a name without spaces, got {value!r}")


KNOBS = tuple(f.name for f in config_fields(Resources))


def slurm_keys() -> list[str]:
    """The keys a recipe's [slurm] table may hold."""
    return [*KNOBS, *ALIASES]


def from_table(table: dict[str, Any], where: str, **flags: Any) -> Resources:
    """`Resources` from a recipe's [slurm] table (aliases read, dashes allowed) overridden by `flags` that are
    not None (text from the command line or typed values)."""
    merged: dict[str, Any] = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name in ALIASES:
            name, convert = ALIASES[name]
            value = convert(value)
        merged[name] = value
    merged.update({k: v for k, v in flags.items() if v is not None})
    return make_config(Resources, merged, where)
