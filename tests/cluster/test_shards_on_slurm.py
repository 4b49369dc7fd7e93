"""`gentool sample --shards 4 --executor slurm` on a real Slurm: one array task per batch range; a shard whose
process is SIGKILLed mid-run fails alone, a re-run resumes it alone, and the merged `samples.npz` is byte for
byte the unsharded local run's (and the one-shard run's)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
from gentool.core.experiments.sweep import read_status
from harness import Cluster, gentool, output, start_gentool, wait_until

ARGS = ["sample", "--target", "gmm-ring", "--sampler", "euler-ancestral", "--steps", "30", "-n", "4000",
        "--batch-size", "25", "--device", "cpu", "--no-progress", "--no-plots", "--seed", "7"]
# 40 batches per shard: the kill that follows the victim's second committed batch (polled, on a busy 2-core
# machine) lands long before the shard could finish; with 10 it once came after the last one.
PARTS = ["0000-units-1-40", "0001-units-41-80", "0002-units-81-120", "0003-units-121-160"]


def samples(run: Path) -> dict[str, bytes]:
    with np.load(run / "samples.npz") as z:
        return {k: z[k].dtype.str.encode() + z[k].tobytes() for k in z.files}


def scores(run: Path) -> dict[str, float]:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in ("seconds", "samples_per_s")}


def committed(run: Path) -> int:
    units = run / "units"
    return len(list(units.glob("*.jsonl"))) - 1 if units.is_dir() else 0


def test_sample_shards_on_slurm_survive_a_killed_shard_and_merge_to_the_unsharded_run(cluster: Cluster,
                                                                                        tmp_path: Path) -> None:
    plain = gentool(*ARGS, "--out", tmp_path / "plain")
    assert plain.returncode == 0, output(plain)
    out, log = tmp_path / "sharded", tmp_path / "shards.log"
    args = [*ARGS, "--shards", "4", "--executor", "slurm", "--out", out]
    proc = start_gentool(*args, log=log)
    victim = out / "parts" / PARTS[2]
    wait_until(lambda: committed(victim) >= 2, 240, "two committed batches of the third shard")
    holder = int((victim / ".gentool.lock").read_text().rsplit("pid ", 1)[1].rstrip(")"))
    os.kill(holder, signal.SIGKILL)
    assert proc.wait(timeout=300) == 1, log.read_text()
    assert f"shard {PARTS[2]} failed" in log.read_text(), log.read_text()
    assert not (out / "DONE.json").exists() and not (victim / "DONE.json").exists()
    done = {p: (out / "parts" / p / "DONE.json").stat().st_mtime_ns for p in PARTS if p != PARTS[2]}
    early = {p.name: p.stat().st_mtime_ns for p in (victim / "units").glob("*.jsonl")}
    first_job = read_status(out / "parts")[PARTS[2]]["job_id"]

    res = gentool(*args)
    assert res.returncode == 0 and "4 shards merged, 160 units" in res.stdout, output(res)
    assert {p: (out / "parts" / p / "DONE.json").stat().st_mtime_ns for p in done} == done  # not re-run
    kept = {n: (victim / "units" / n).stat().st_mtime_ns for n in sorted(early)[:2]}
    assert kept == {n: early[n] for n in kept}  # the killed shard resumed from its committed batches
    assert read_status(out / "parts")[PARTS[2]]["job_id"] != first_job  # in a new Slurm job
    assert samples(out) == samples(tmp_path / "plain") and scores(out) == scores(tmp_path / "plain")

    one = gentool(*ARGS, "--shards", "1", "--executor", "slurm", "--out", tmp_path / "one")
    assert one.returncode == 0, output(one)
    assert samples(tmp_path / "one") == samples(tmp_path / "plain")
