"""Sweep plumbing that needs no cluster: Slurm output parsing, resources and their precedence, the dry-run's
#SBATCH lines, failure reasons of points and jobs, the status record and the report's failed points.
(The same code against a real Slurm: tests/cluster, `make test-cluster`.)"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.experiments import slurm
from gentool.core.experiments.executors import executor_options, parse_mem, point_mem_mb, sbatch_lines
from gentool.core.experiments.points import FAILED, Point, PointResult, point_id, wait_until_unlocked
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import expand, read_status
from gentool.core.experiments.waiting import Submitted, slurm_outcomes, stderr_tail
from gentool.core.run.rundir import LOCK
from submitit.core.utils import cloudpickle_dump
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

SIMPLEX = """
command = "optimize simplex"
[options]
objective = "softmax"
x = [1, 0.5, -1]
iters = 5
progress = false
plots = false
[sweep]
method = ["frank-wolfe", "softmax-gd"]
seeds = [0]
[slurm]
time = 10
mem_gb = 3
array_parallelism = 4
"""


def _recipe(tmp_path: Path, text: str = SIMPLEX) -> Path:
    path = tmp_path / "simplex.toml"
    path.write_text(text)
    return path


def test_parse_squeue_and_sacct_as_slurm_prints_them() -> None:
    assert slurm.parse_squeue("5_0|PENDING\n5_1|RUNNING\n7|COMPLETING\n") == {
        "5_0": "PENDING", "5_1": "RUNNING", "7": "COMPLETING"}
    states = slurm.parse_sacct("12_0|CANCELLED by 0\n12_1|COMPLETED\n12_[2-4%1]|PENDING\n12_[6,8]|PENDING\n"
                               "13|NODE_FAIL\n")
    assert states == {"12_0": "CANCELLED by 0", "12_1": "COMPLETED", "12_2": "PENDING", "12_3": "PENDING",
                      "12_4": "PENDING", "12_6": "PENDING", "12_8": "PENDING", "13": "NODE_FAIL"}
    # an array cancelled while a task was pending: the range record follows the tasks' own records
    states = slurm.parse_sacct("1_0|CANCELLED by 0\n1_1|COMPLETED\n1_[0-2%2]|CANCELLED by 0\n")
    assert states == {"1_0": "CANCELLED by 0", "1_1": "COMPLETED", "1_2": "CANCELLED by 0"}
    assert slurm.array_ids(["12_0", "12_1", "13", "12_2"]) == ["12", "13"]


def test_sbatch_refusal_is_its_reason_line() -> None:
    stderr = ("sbatch: error: invalid partition specified: gpu\n"
              "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert slurm.sbatch_refusal(stderr) == "Batch job submission failed: Invalid partition name specified"
    assert slurm.sbatch_refusal("") == "sbatch failed without a message"


def test_without_slurm_commands_queries_say_they_cannot_tell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                                             ) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm.queued(["5_0"]) is None
    assert slurm.final_states(["5_0"], wait_s=0) is None
    assert slurm.queued([]) == {}


def test_parse_mem_takes_sbatch_sizes() -> None:
    assert [parse_mem(t) for t in ("500M", "4G", "1.5g", "1T", "2048K", "3GB")] == [500, 4096, 1536, 1024**2, 2,
                                                                                      3072]
    for bad in ("100", "4X", "-1G", "0M", ""):
        with pytest.raises(BadInput, match="memory must be"):
            parse_mem(bad)


def test_memory_estimate_covers_measured_use_and_grows_with_sample_count(tmp_path: Path) -> None:
    """The sampler recipe at n = 10000 was measured at 0.64 GB RSS; the estimate covers it without asking
    for a node's worth; a hundred times fewer samples need about the process alone."""
    points = expand(load_recipe(ROOT / "recipes" / "sampler-nfe-gmm-ring.toml"), tmp_path)
    full = point_mem_mb(points[0])
    assert 636 < full <= 4096 and full % 256 == 0
    small = Point("p", "sample", {}, 0, {**points[0].options, "n": 100}, {}, str(tmp_path / "p"))
    assert point_mem_mb(small) == 1024 + 256 < full  # the process and one step for the pairs
    assert point_mem_mb(small, gpus=1) == 4096 + 256


def test_resources_recipe_table_then_flags_win(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    points = expand(recipe, tmp_path / "s")
    opts = executor_options(recipe, points, "slurm")
    assert (opts.time, opts.mem_mb, opts.parallel, opts.gpus_per_node, opts.cpus, opts.partition) == (
        10, 3072, 4, 0, 1, None)
    opts = executor_options(recipe, points, "slurm", time="5", mem="500M", parallel=2, gpus_per_node=1,
                            cpus=3, partition="short", account="proj", setup="module load x", sbatch="a=1,b-c=x")
    assert (opts.time, opts.mem_mb, opts.parallel, opts.gpus_per_node, opts.cpus, opts.partition) == (
        5, 500, 2, 1, 3, "short")
    assert opts.account == "proj" and opts.setup == ("module load x",) and opts.sbatch == (("a", "1"), ("b-c", "x"))
    bare = load_recipe(_recipe(tmp_path, SIMPLEX.split("[slurm]")[0]))
    opts = executor_options(bare, expand(bare, tmp_path / "s"), "slurm")
    assert opts.mem_mb == 1024 and opts.time == 60 and opts.parallel is None
    for flags, needle in (({"parallel": 0}, "parallel must be"), ({"cpus": 0}, "cpus must be"),
                          ({"gpus_per_node": -1}, "gpus_per_node must be"), ({"mem": "4"}, "memory must be"),
                          ({"nodes": "0"}, "nodes must be"), ({"account": "a b"}, "account must be a name"),
                          ({"sbatch": "account=x"}, "sbatch.account is set by gentool; use the account setting"),
                          ({"sbatch": "novalue"}, "sbatch must be key=value pairs")):
        with pytest.raises(BadInput, match=needle):
            executor_options(recipe, points, "slurm", **flags)


def test_slurm_table_knobs_reach_the_sbatch_script_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    table = ('[slurm]\naccount = "proj"\nqos = "high"\nconstraint = "a100|h100"\nnodes = 2\ngpus_per_node = 4\n'
             'exclude = "n[1-2]"\nsetup = ["module load cuda/12", "source ~/env/bin/activate"]\n'
             'sbatch = { mail-type = "END", reservation = "r1" }\n')
    path = _recipe(tmp_path, SIMPLEX.split("[slurm]")[0] + table)
    res = runner.invoke(app, ["sweep", str(path), "--executor", "slurm", "--dry-run", "--out", str(tmp_path / "s"),
                              "--qos", "low"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for flag in ("--account=proj", "--qos=low", "--constraint='a100|h100'", "--nodes=2", "--gpus-per-node=4",
                 "--exclude='n[1-2]'", "--mail-type=END", "--reservation=r1"):
        assert f"#SBATCH {flag}" in lines, flag
    setup = lines.index("# setup")
    assert lines[setup + 1:setup + 3] == ["module load cuda/12", "source ~/env/bin/activate"]
    assert any(ln.startswith("srun ") and "submitit.core._submit" in ln for ln in lines[setup:])
    bad = _recipe(tmp_path, SIMPLEX.replace("time = 10", "acount = 'x'"))
    res = runner.invoke(app, ["sweep", str(bad), "--dry-run", "--executor", "slurm"])
    assert res.exit_code == 2 and "unknown slurm key 'acount' (did you mean 'account'?); allowed: " in res.output
    assert "constraint" in res.output and "setup" in res.output and "sbatch" in res.output


def test_must_show_dry_run_of_the_sampler_recipe_with_account_qos_constraint(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(ROOT / "recipes" / "sampler-nfe-gmm-ring.toml"), "--executor", "slurm",
                              "--dry-run", "--account", "a", "--qos", "q", "--constraint", "c", "--out",
                              str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert {"#SBATCH --account=a", "#SBATCH --qos=q", "#SBATCH --constraint=c"} <= set(lines)
    setup = load_recipe(ROOT / "recipes" / "sampler-nfe-gmm-ring.toml").slurm["setup"]
    assert setup and all(line in lines for line in setup)


def test_dry_run_prints_points_and_sbatch_lines_and_submits_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "slurm", "--dry-run", "--out", str(out),
                              "--mem", "2G", "--partition", "short", "--parallel", "1", "--time", "7"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    fw0, sgd0 = point_id({"method": "frank-wolfe"}, 0), point_id({"method": "softmax-gd"}, 0)
    assert lines[:3] == [f"todo      {fw0}", f"todo      {sgd0}",
                         f"2 points: 0 complete, 0 queued, 2 to submit -> {out}"]
    for flag in ("--array=0-1%1", "--mem=2048M", "--partition=short", "--time=7", "--cpus-per-task=1",
                 "--job-name=gentool-simplex", f"--output={out.absolute()}/submitit/%A_%a_0_log.out"):
        assert f"#SBATCH {flag}" in lines, flag
    assert not any("gpus" in line for line in lines)
    assert not out.exists()


def test_sbatch_lines_of_a_single_job_have_no_array(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    opts = executor_options(recipe, expand(recipe, tmp_path), "slurm", gpus_per_node=2)
    lines = sbatch_lines(opts, "x", tmp_path, 1)
    assert "#SBATCH --gpus-per-node=2" in lines and not any(ln.startswith("#SBATCH --array") for ln in lines)


def test_failed_point_reason_printed_recorded_and_reported(tmp_path: Path) -> None:
    """A point that cannot run (its directory holds another command's run) fails with its reason, through
    the local executor's job; the others complete; status.json and `gentool report` keep the reason."""
    out = tmp_path / "s"
    fw0, sgd0 = point_id({"method": "frank-wolfe"}, 0), point_id({"method": "softmax-gd"}, 0)
    (out / fw0).mkdir(parents=True)
    (out / fw0 / "config.json").write_text(json.dumps({"command": "train", "config": {}}))
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "local", "--parallel", "1",
                              "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "2 points: 1 completed, 0 skipped (complete already), 1 failed" in res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("failed "))
    assert line.startswith(f"failed {fw0} (job ") and "): exit 2: " in line
    assert "already holds a `train` run" in line
    entry = read_status(out)[fw0]
    assert entry["state"] == "failed" and entry["exit_code"] == 2 and "already holds a `train` run" in entry["reason"]
    assert read_status(out)[sgd0]["state"] == "complete"
    res = runner.invoke(app, ["report", str(out), "--no-plots"])
    assert res.exit_code == 0 and f"failed {fw0} (job " in res.output
    failed = json.loads((out / "report.json").read_text())["failed"]
    assert [f["point"] for f in failed] == [fw0] and "`train`" in failed[0]["reason"]


def _job(tmp_path: Path, job_id: str) -> Submitted:
    return Submitted([Point("p", "sample", {}, 0, {}, {}, str(tmp_path / "p"))], job_id)


def test_slurm_job_reasons_from_results_and_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs that left the queue: a result file gives the point's own outcome; without one the reason is
    the job's end state (unknown here: no sacct) and its stderr's last lines, or that it never started."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct
    cloudpickle_dump(("success", [PointResult("p", 3, 1.0, "non-finite w2 at unit 4", FAILED)]),
                     tmp_path / "41_0_result.pkl")
    (tmp_path / "42_0_log.err").write_text(
        "submitit INFO (2026-01-01 10:00:00,000) - Starting with JobEnvironment(job_id=42)\n"
        "slurmstepd-vm: error: Detected 1 oom_kill event in StepId=42.0.\n"
        "slurmstepd-vm: error: *** JOB 42 ON vm CANCELLED AT 2026-01-01T10:00:09 ***\n")
    results = slurm_outcomes([_job(tmp_path, "41"), _job(tmp_path, "42"), _job(tmp_path, "43")], tmp_path)
    assert [(r.exit_code, r.state, r.job_id) for r in results] == [(3, FAILED, "41"), (1, FAILED, "42"),
                                                                   (1, FAILED, "43")]
    assert results[0].message == "non-finite w2 at unit 4"
    assert results[1].message == (
        "job 42 left the queue without a result (end state unknown: sacct is not available); stderr: "
        "slurmstepd-vm: error: Detected 1 oom_kill event in StepId=42.0. | "
        "slurmstepd-vm: error: *** JOB 42 ON vm CANCELLED AT 2026-01-01T10:00:09 ***")
    assert results[2].message == "job 43 left the queue before it started (end state unknown: sacct is not available)"
    assert stderr_tail(tmp_path / "missing.err") == ""


def test_point_waits_for_its_directory_lock_to_be_released(tmp_path: Path) -> None:
    """A requeued job may start while the killed copy still holds the point's lock: it waits for it."""
    tmp_path.joinpath(LOCK).touch()
    fd = os.open(tmp_path / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    start = time.monotonic()
    wait_until_unlocked(tmp_path, 0.3)  # still held: gives up after the wait
    assert time.monotonic() - start >= 0.3
    threading.Timer(0.5, os.close, [fd]).start()
    start = time.monotonic()
    wait_until_unlocked(tmp_path, 30.0)
    assert 0.4 < time.monotonic() - start < 10
