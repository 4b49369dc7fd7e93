"""Every shipped recipe's --smoke sweep runs through `gentool sweep --executor slurm` on a real Slurm: each
point is an array task that completes (accounting says so), writes its outputs, and `gentool report` merges
them; the jobs ask for the memory a point needs, not the whole node, so points run side by side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from gentool.core.experiments.executors import job_name, parse_mem, point_mem_mb
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import DONE, expand, read_status
from harness import ROOT, Cluster, gentool, gpu_flags, output, start_gentool

RECIPES = sorted((ROOT / "recipes").glob("**/*.toml"))
SWEEP_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def smoke_sweeps(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[Path, tuple[subprocess.Popen[str], Path, Path]]:
    """Every recipe's smoke sweep, all submitted at once (Slurm queues what does not fit):
    recipe -> (the `gentool sweep` process, its output log, the sweep directory)."""
    root = tmp_path_factory.mktemp("smoke")
    sweeps = {}
    for i, recipe in enumerate(RECIPES):
        out, log = root / f"{i}-{recipe.stem}", root / f"{i}-{recipe.stem}.log"
        proc = start_gentool("sweep", recipe, "--smoke", "--executor", "slurm", "--out", out, *gpu_flags(cluster),
                             log=log)
        sweeps[recipe] = (proc, log, out)
    yield sweeps
    for proc, _, _ in sweeps.values():
        proc.kill()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_smoke_sweep_on_slurm_then_report(recipe: Path, smoke_sweeps: dict, cluster: Cluster) -> None:
    proc, log, out = smoke_sweeps[recipe]
    assert proc.wait(timeout=SWEEP_TIMEOUT_S) == 0, log.read_text()
    smoke = load_recipe(recipe, smoke=True)
    points = expand(smoke, out)
    assert f"{len(points)} points: {len(points)} completed" in log.read_text()
    status = read_status(out)
    for p in points:
        run = Path(p.run_dir)
        assert (run / DONE).is_file() and (run / "metrics.jsonl").read_text().strip(), p.point_id
        assert json.loads((run / "point.json").read_text())["params"] == p.params
        assert status[p.point_id]["state"] == "complete"
    jobs = [status[p.point_id]["job_id"] for p in points]
    records = cluster.sacct_until_final(jobs)
    mem = max(point_mem_mb(p) for p in points)
    for job in jobs:
        assert records[job]["State"] == "COMPLETED", records[job]
        assert records[job]["JobName"] == job_name(smoke)
        assert parse_mem(records[job]["ReqMem"]) == mem  # the estimate, not the node's memory
    res = gentool("report", out, "--no-plots")
    assert res.returncode == 0, output(res)
    report = json.loads((out / "report.json").read_text())
    assert {r["point"] for r in report["rows"]} == {p.point_id for p in points}
    assert report["failed"] == []


def test_points_run_side_by_side_not_one_per_node(cluster: Cluster, tmp_path: Path) -> None:
    """Without --mem a job reserves the whole node on this cluster (CR_Core_Memory, no default); with the
    per-point estimate two single-CPU points share a node of two or more CPUs at the same time."""
    if int(cluster.run("sinfo", "--noheader", "--format=%c").strip()) < 2:
        pytest.skip("the node has a single CPU")
    recipe = ROOT / "recipes" / "mad-gaussian.toml"
    res = gentool("sweep", recipe, "--smoke", "--executor", "slurm", "--out", tmp_path / "s")
    assert res.returncode == 0, output(res)
    jobs = [e["job_id"] for e in read_status(tmp_path / "s").values()]
    records = list(cluster.sacct_until_final(jobs).values())
    assert len(records) == 2
    first, second = sorted(records, key=lambda r: r["Start"])
    assert second["Start"] < first["End"], records  # the second started before the first ended


def test_setup_lines_and_extra_sbatch_parameters_reach_the_job(cluster: Cluster, tmp_path: Path) -> None:
    """The [slurm] table's `setup` lines run in the job before gentool (their output is in the job's log), and
    `sbatch` pairs are passed to sbatch unchanged (the job's comment, as Slurm reports it)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text((ROOT / "recipes" / "mad-gaussian.toml").read_text().split("[slurm]")[0] +
                      '[slurm]\ntime = 10\nsetup = ["echo setup-ran-in-$SLURM_JOB_ID"]\n'
                      'sbatch = { comment = "gentool-knobs" }\n' +
                      "[smoke]" + (ROOT / "recipes" / "mad-gaussian.toml").read_text().split("[smoke]")[1])
    out = tmp_path / "s"
    res = gentool("sweep", recipe, "--smoke", "--executor", "slurm", "--out", out)
    assert res.returncode == 0, output(res)
    logs = "".join(p.read_text() for p in (out / "submitit").glob("*_log.out"))
    assert "setup-ran-in-" in logs, logs
    array = next(iter(read_status(out).values()))["job_id"].split("_")[0]
    shown = cluster.run("scontrol", "show", "job", array)
    assert "Comment=gentool-knobs" in shown, shown
