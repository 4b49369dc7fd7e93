"""Helpers of the cluster tests: the private cluster's handle (`Cluster`), `gentool` run as a real process
against it, polling, and comparing a sweep's numbers with a reference sweep's."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gentool.core.run.rundir import LOCK

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GENTOOL = str(Path(sys.executable).parent / "gentool")


@dataclass
class Cluster:
    """The running private cluster: its state directory (configs, logs, PID files)."""

    state_dir: Path

    def pid(self, daemon: str) -> int:
        return int((self.state_dir / "run" / f"{daemon}.pid").read_text())

    def run(self, *args: str) -> str:
        """A Slurm client command's stdout (it must succeed)."""
        return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout

    def config(self, key: str) -> str:
        """A value of `scontrol show config`."""
        for line in self.run("scontrol", "show", "config").splitlines():
            name, _, value = line.partition("=")
            if name.strip() == key:
                return value.strip()
        raise KeyError(key)

    def node_state(self) -> str:
        return self.run("sinfo", "--noheader", "--format=%T").strip()

    @contextmanager
    def drained(self) -> Iterator[None]:
        """The node drained (new jobs stay pending) for the duration of the block, then resumed."""
        node = self.run("sinfo", "--noheader", "--format=%N").strip()
        self.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=gentool-test")
        try:
            yield
        finally:
            self.run("scontrol", "update", f"nodename={node}", "state=resume")

    @contextmanager
    def suspended(self, job_ids: list[str]) -> Iterator[None]:
        """Running jobs suspended (stopped in place, holding their resources) for the duration of the block."""
        for job in job_ids:
            self.run("scontrol", "suspend", job)
        try:
            yield
        finally:
            for job in job_ids:
                self.run("scontrol", "resume", job)

    def has_gpus(self) -> bool:
        return "gpu" in self.run("sinfo", "--noheader", "--format=%G")

    def sacct(self, job_ids: list[str], duplicates: bool = False) -> list[dict[str, str]]:
        """Accounting records (JobID, JobName, State, ReqMem, Start, End) of the jobs, every incarnation of
        a requeued job with `duplicates`."""
        fields = ["JobID", "JobName", "State", "ReqMem", "Start", "End"]
        out = self.run("sacct", "--allocations", "--parsable2", "--noheader", f"--format={','.join(fields)}",
                       "--jobs", ",".join(sorted({j.split('_')[0] for j in job_ids})),
                       *(["--duplicates"] if duplicates else []))
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
        return [r for r in rows if r["JobID"] in job_ids]

    def sacct_until_final(self, job_ids: list[str], timeout: float = 30.0) -> dict[str, dict[str, str]]:
        """The record of each job once accounting shows every one ended (it lags the queue a little)."""
        deadline = time.monotonic() + timeout
        while True:
            ended = {r["JobID"]: r for r in self.sacct(job_ids) if r["State"] not in ("PENDING", "RUNNING")}
            if len(ended) == len(set(job_ids)):
                return ended
            if time.monotonic() > deadline:
                pytest.fail(f"accounting shows only {sorted(ended)} of {sorted(set(job_ids))} ended")
            time.sleep(0.5)


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def gentool(*args: object, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run `gentool ARGS...` to completion."""
    return subprocess.run([GENTOOL, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def start_gentool(*args: object, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `gentool ARGS...` in the background, its output in `log`."""
    out = log.open("w")
    return subprocess.Popen([GENTOOL, *map(str, args)], stdout=out, stderr=subprocess.STDOUT, text=True, env=env)


def lock_held(run_dir: Path) -> bool:
    """True while a process holds the run directory's lock."""
    if not (run_dir / LOCK).exists():
        return False
    fd = os.open(run_dir / LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def output(res: subprocess.CompletedProcess[str]) -> str:
    return res.stdout + res.stderr


def gpu_flags(cluster: Cluster) -> list[str]:
    """`--gpus 0` on a cluster without GPUs (recipes ask for a GPU where their full size wants one)."""
    return [] if cluster.has_gpus() else ["--gpus", "0"]


# The fault tests' sweep: three MAD Gaussian loops, each point a few seconds of 100 one-generation units.
FAULT_RECIPE = """
command = "mad-loop"
[options]
family = "gaussian"
data = "gaussian"
generations = 100
seeds = 4
n-test = 200
n-real = 100
n-synth = 100
device = "cpu"
progress = false
plots = false
[sweep]
loop = ["fresh", "accumulate", "fully-synthetic"]
seeds = [0]
"""


def run_outputs(run_dir: Path) -> dict[str, object]:
    """What a point computed: its rows, the final summary and samples (timings left out)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with np.load(run_dir / "samples.npz") as npz:
        samples = {k: npz[k].tolist() for k in npz.files}
    summary = json.loads((run_dir / "DONE.json").read_text())["summary"]
    return {"rows": rows, "summary": summary, "samples": samples, "csv": (run_dir / "summary.csv").read_text()}


def assert_same_as_reference(sweep_dir: Path, reference: Path) -> None:
    """Every point of `sweep_dir` computed exactly what the uninterrupted reference sweep did."""
    points = sorted(p.name for p in reference.iterdir() if (p / "DONE.json").is_file())
    assert points and sorted(p.name for p in sweep_dir.iterdir() if (p / "DONE.json").is_file()) == points
    for name in points:
        assert run_outputs(sweep_dir / name) == run_outputs(reference / name), name
