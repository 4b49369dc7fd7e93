"""Device names of every command: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:K`; CPU threads."""

from __future__ import annotations

import os

import torch
from gentool.core.errors import BadInput, choose

DEVICES = ("auto", "cpu", "cuda", "cuda:K")


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` → cuda if available else cpu; a CUDA device without CUDA is bad input."""
    if isinstance(name, torch.device):
        return name
    text = str(name).strip()
    kind, _, index = text.partition(":")
    choose("device", kind, ("auto", "cpu", "cuda"))
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if index and (kind != "cuda" or not index.isdigit()):
        raise BadInput(f"unknown device {text!r}; allowed: {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {text!r} requested but CUDA is not available; allowed here: auto, cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise BadInput(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(text)


def resolve_threads(threads: int | None) -> int:
    """CPU threads of a run: `threads` when given (>= 1), else Slurm's cpus-per-task inside a Slurm job
    (`SLURM_CPUS_PER_TASK`), else torch's current default."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BadInput(f"threads must be an integer >= 1, got {threads!r}")
        return threads
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if os.environ.get("SLURM_JOB_ID") and slurm.isdigit() and int(slurm) >= 1:
        return int(slurm)
    return torch.get_num_threads()


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count to `resolve_threads(threads)` and return it (recorded with the run's
    environment in config.json)."""
    n = resolve_threads(threads)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n
