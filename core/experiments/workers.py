"""The processes of a local sweep: recorded, found again, stopped.

A local sweep's jobs are submitit controller processes (`python -m submitit.local._local`), each running one
task process that runs the job's points. They outlive the `gentool sweep` that started them when that is
killed with SIGKILL. So the sweep records every controller in `workers.json` of the sweep directory (pid and
the kernel's start time of that pid, so a reused pid is never mistaken for a worker), and

- a re-run of the sweep **stops** the live workers of the earlier run before it submits anything (documented
  choice: their points are submitted again and resume from their last committed unit, which is exact; waiting
  instead would leave the re-run unable to collect their results, and two workers never share a point);
- Ctrl-C (SIGINT/SIGTERM) on a local sweep stops its workers the same way.

Stopping a worker: SIGTERM to its task processes (a point stops after its current commit, see
`gentool.core.run.signals`), then SIGKILL to whatever of the tree still lives after `grace_s` (commits are
atomic, so a SIGKILL loses at most the unit in progress).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentool.core.io import atomic_write_json, read_json

WORKERS = "workers.json"
GRACE_S = 3.0


@dataclass(frozen=True)
class Worker:
    """A process (pid) identified by its start time (clock ticks after boot, /proc/PID/stat field 22)."""

    pid: int
    start: int


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onward), or None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The start time of `pid` (field 22 of /proc/PID/stat), None when it does not exist."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(worker: Worker) -> bool:
    """True while the recorded process runs (same pid, same start time, not a zombie)."""
    fields = _stat(worker.pid)
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == worker.start


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...), from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and len(fields) > 1:
                parent[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def worker_of(pid: int) -> Worker | None:
    """The `Worker` record of a running process."""
    start = start_time(pid)
    return None if start is None else Worker(pid, start)


def record(sweep_dir: Path, workers: list[Worker]) -> None:
    """Write the sweep's workers (`workers.json`, atomically)."""
    atomic_write_json(sweep_dir / WORKERS, {"workers": [{"pid": w.pid, "start": w.start} for w in workers]})


def recorded(sweep_dir: Path) -> list[Worker]:
    """The workers an earlier run of the sweep recorded (none when there is no readable record)."""
    try:
        entries: Any = read_json(sweep_dir / WORKERS).get("workers", [])
        return [Worker(int(e["pid"]), int(e["start"])) for e in entries]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return []


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # gone already
            os.kill(pid, sig)


def _live(pids: list[int]) -> list[int]:
    return [p for p in pids if (f := _stat(p)) is not None and f[0] != "Z"]


def stop(workers: list[Worker], grace_s: float = GRACE_S) -> int:
    """Stop the live `workers` and their descendants (see the module docstring); returns how many workers
    were alive. Returns once every process of their trees has ended (or cannot be signalled)."""
    live = [w for w in workers if alive(w)]
    if not live:
        return 0
    tasks = [p for w in live for p in descendants(w.pid)]
    _signal(tasks, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _live(tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [w.pid for w in live if alive(w)] + [p for w in live if alive(w) for p in descendants(w.pid)] + tasks
    _signal(_live(tree), signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while _live(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(live)
