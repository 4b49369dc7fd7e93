"""Sweeps survive faults on a real Slurm, and a re-run ends with every point identical to an uninterrupted
sweep (the `reference` fixture): a cancelled array task, a node whose slurmd stops answering for longer than
SlurmdTimeout, a `gentool sweep` killed with SIGKILL, a sweep that stops waiting (--timeout) on a cluster
without accounting."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from gentool.core.experiments.points import point_id
from gentool.core.experiments.sweep import read_status
from harness import (
    Cluster,
    alive,
    assert_same_as_reference,
    gentool,
    lock_held,
    output,
    start_gentool,
    wait_until,
)

FRESH, ACCUMULATE, SYNTHETIC = (point_id({"loop": loop}, 0) for loop in ("fresh", "accumulate", "fully-synthetic"))


def committed_units(run_dir: Path) -> int:
    """Units committed so far (the rows of unit k are written before the state that commits it)."""
    units = run_dir / "units"
    return len(list(units.glob("*.jsonl"))) - 1 if units.is_dir() else 0


def unit_mtimes(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "units").glob("*.jsonl")}


def holder_pid(run_dir: Path) -> int:
    """The process that holds a run directory's lock (its lock file names it: `gentool CMD (pid N)`)."""
    text = (run_dir / ".gentool.lock").read_text()
    return int(text.rsplit("pid ", 1)[1].rstrip(")"))


def sweep_args(recipe: Path, out: Path, *extra: object) -> list[object]:
    return ["sweep", recipe, "--executor", "slurm", "--out", out, *extra]


def job_of(out: Path, point: str) -> str:
    return read_status(out)[point]["job_id"]


def test_scancel_mid_run_reports_reason_and_rerun_resumes(cluster: Cluster, fault_recipe: Path, reference: Path,
                                                           tmp_path: Path) -> None:
    """One point cancelled mid-run and one before it started: both reported with their reason (also by
    `gentool report`); a re-run resumes the first from its last committed unit and runs the other."""
    out, log = tmp_path / "s", tmp_path / "sweep.log"
    args = sweep_args(fault_recipe, out, "--array-parallelism", "2")
    proc = start_gentool(*args, log=log)
    wait_until(lambda: committed_units(out / FRESH) >= 3, 120, "three committed units of the first point")
    array = job_of(out, FRESH).split("_")[0]
    cluster.run("scancel", f"{array}_0", f"{array}_2")  # a running task and the pending one
    assert proc.wait(timeout=180) == 1, log.read_text()
    text = log.read_text()
    assert "3 points: 1 completed, 0 skipped (complete already), 2 failed" in text
    assert f"failed {FRESH} (job {array}_0): exit 130: CANCELLED by 0: SIGTERM: stopped in " in text
    never = next(line for line in text.splitlines() if line.startswith(f"failed {SYNTHETIC} "))
    # accounting names the state of a pending array task cancelled, or keeps no record of it at all
    assert never in (f"failed {SYNTHETIC} (job {array}_2): exit 1: job {array}_2 CANCELLED by 0 before it started",
                     f"failed {SYNTHETIC} (job {array}_2): exit 1: job {array}_2 left the queue before it started "
                     "(accounting has no record of it)"), never
    report = gentool("report", out, "--no-plots")
    assert report.returncode == 0 and f"failed {FRESH} (job {array}_0): exit 130: CANCELLED" in report.stdout
    committed = unit_mtimes(out / FRESH)

    res = gentool(*args)
    assert res.returncode == 0, output(res)
    assert "3 points: 2 completed, 1 skipped" in res.stdout
    assert {k: v for k, v in unit_mtimes(out / FRESH).items() if k in committed} == committed  # resumed
    assert_same_as_reference(out, reference)


def test_slurmd_stopped_longer_than_slurmd_timeout_sweep_completes(cluster: Cluster, fault_recipe: Path,
                                                                   reference: Path, tmp_path: Path) -> None:
    """The node hangs (slurmd and the running points stopped) until Slurm declares it down and requeues its
    jobs; once slurmd answers again the requeued jobs resume their points and the sweep completes."""
    out, log = tmp_path / "s", tmp_path / "sweep.log"
    proc = start_gentool(*sweep_args(fault_recipe, out), log=log)
    wait_until(lambda: committed_units(out / FRESH) >= 2 and committed_units(out / ACCUMULATE) >= 2, 120,
               "two running points")
    slurmd, workers = cluster.pid("slurmd"), [holder_pid(out / FRESH), holder_pid(out / ACCUMULATE)]
    try:
        for pid in (slurmd, *workers):
            os.kill(pid, signal.SIGSTOP)
        written = unit_mtimes(out / FRESH)  # the last one's rows may precede the state that commits them
        committed = {k: v for k, v in written.items() if k != max(written)}
        wait_until(lambda: cluster.node_state().startswith("down"), 90, "Slurm to declare the node down", poll=1)
    finally:
        os.kill(slurmd, signal.SIGCONT)
        try:
            wait_until(lambda: not any(map(alive, workers)), 60, "slurmd to end the stale job processes")
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
    assert proc.wait(timeout=240) == 0, log.read_text()
    jobs = [job_of(out, p) for p in (FRESH, ACCUMULATE)]
    states = [(r["JobID"], r["State"]) for r in cluster.sacct(jobs, duplicates=True)]
    for job in jobs:
        assert [s for j, s in states if j == job] == ["NODE_FAIL", "COMPLETED"], states  # requeued once
    assert {k: v for k, v in unit_mtimes(out / FRESH).items() if k in committed} == committed  # resumed
    assert_same_as_reference(out, reference)


def test_sweep_killed_then_rerun_waits_for_its_jobs(cluster: Cluster, fault_recipe: Path, reference: Path,
                                                    tmp_path: Path) -> None:
    """SIGKILL of `gentool sweep` while its jobs run: the re-run finds them still queued or running and
    waits for them instead of submitting them again; nothing is lost, nothing runs twice."""
    out, log = tmp_path / "s", tmp_path / "sweep.log"
    args = sweep_args(fault_recipe, out, "--array-parallelism", "2")
    proc = start_gentool(*args, log=log)
    wait_until(lambda: committed_units(out / FRESH) >= 1, 120, "the first point running")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    array = job_of(out, FRESH).split("_")[0]

    with cluster.suspended([f"{array}_0", f"{array}_1"]):  # still running when the re-run looks for them
        plan = gentool(*args, "--dry-run")
        assert plan.returncode == 0 and "0 to submit" in plan.stdout, output(plan)
        assert f"queued (job {array}_0) {FRESH}" in plan.stdout
        proc = start_gentool(*args, log=log)
        wait_until(lambda: lock_held(out), 60, "the re-run holding the sweep directory")
    assert proc.wait(timeout=180) == 0, log.read_text()
    assert "3 points: 3 completed" in log.read_text()
    assert len(list((out / "submitit").glob("*_submission.sh"))) == 1  # one sbatch, by the killed sweep
    records = cluster.sacct([f"{array}_{i}" for i in range(3)], duplicates=True)
    assert sorted((r["JobID"], r["State"]) for r in records) == [(f"{array}_{i}", "COMPLETED") for i in range(3)]
    assert_same_as_reference(out, reference)


def _without_accounting(tmp_path: Path) -> dict[str, str]:
    """An environment whose `sacct` fails as on a cluster without accounting storage."""
    shim = tmp_path / "bin"
    shim.mkdir()
    sacct = shim / "sacct"
    sacct.write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    sacct.chmod(sacct.stat().st_mode | stat.S_IXUSR)
    assert subprocess.run([str(sacct)], capture_output=True).returncode == 1
    return {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}


def test_without_accounting_and_with_timeout(cluster: Cluster, fault_recipe: Path, reference: Path,
                                             tmp_path: Path) -> None:
    """Without sacct a job cancelled while pending is reported (its state unknown) instead of hanging the
    sweep; --timeout stops waiting and leaves the job running for the next run of the sweep to collect."""
    env = _without_accounting(tmp_path)
    out, log = tmp_path / "s", tmp_path / "sweep.log"
    args = sweep_args(fault_recipe, out, "--array-parallelism", "2")
    proc = start_gentool(*args, log=log, env=env)
    wait_until(lambda: committed_units(out / FRESH) >= 1, 120, "the first point running")
    first = job_of(out, FRESH).split("_")[0]
    cluster.run("scancel", f"{first}_2")
    assert proc.wait(timeout=180) == 1, log.read_text()
    assert (f"failed {SYNTHETIC} (job {first}_2): exit 1: job {first}_2 left the queue before it started "
            "(end state unknown: sacct is not available)") in log.read_text()

    with cluster.drained():  # the resubmitted point stays pending, so the 2 s wait surely gives up
        res = gentool(*args, "--timeout", "2", env=env)  # resubmits the cancelled point, gives up after 2 s
    assert res.returncode == 1, output(res)
    second = job_of(out, SYNTHETIC)
    assert f"running {SYNTHETIC} (job {second})" in res.stdout and "gave up waiting after 2 s" in res.stdout
    with cluster.drained():  # still pending while the next run starts and finds it in the queue
        proc = start_gentool(*args, log=log, env=env)
        wait_until(lambda: lock_held(out), 60, "the sweep holding its directory")
    assert proc.wait(timeout=180) == 0, log.read_text()
    assert job_of(out, SYNTHETIC) == second  # waited for, not submitted again
    assert len(list((out / "submitit").glob("*_submission.sh"))) == 2
    assert_same_as_reference(out, reference)


@pytest.mark.parametrize(("flags", "reason"), [
    (["--partition", "gpu"], "Invalid partition name specified"),
    (["--gpus", "1"], "Invalid generic resource (gres) specification"),
])
def test_sbatch_refusal_is_one_line_exit_2(flags: list[str], reason: str, cluster: Cluster, fault_recipe: Path,
                                           tmp_path: Path) -> None:
    if flags[0] == "--gpus" and cluster.has_gpus():
        pytest.skip("this cluster has GPUs")
    res = gentool(*sweep_args(fault_recipe, tmp_path / "s", *flags))
    assert res.returncode == 2 and res.stdout == "", output(res)
    assert res.stderr.startswith("error: sbatch refused the sweep's jobs (") and res.stderr.count("\n") == 1
    assert reason in res.stderr
    assert not list((tmp_path / "s").glob("loop-*")) and not (tmp_path / "s" / "status.json").exists()
