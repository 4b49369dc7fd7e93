"""`gentool sample --shards K`: batch ranges run as parts, merged into the unsharded run byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.jobs import JOBS
from gentool.core.run import execute
from gentool.core.run.contract import UnitRange
from gentool.core.run.rundir import DONE
from typer.testing import CliRunner

runner = CliRunner()
GENTOOL = Path(sys.executable).with_name("gentool")
TIMINGS = ("seconds", "samples_per_s")
RING = ["sample", "--target", "gmm-ring", "--sampler", "euler-ancestral", "--steps", "6", "--device", "cpu",
        "--no-progress", "--no-plots", "--seed", "3"]


def _arrays(run: Path) -> dict[str, bytes]:
    with np.load(run / "samples.npz") as z:
        return {k: z[k].dtype.str.encode() + z[k].tobytes() for k in z.files}


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def _same_samples(a: Path, b: Path, *differ: str) -> None:
    """Two sample run directories hold the same samples (byte for byte), rows and metrics (timings aside) and
    the same config (but for the settings `differ`)."""
    assert _arrays(a) == _arrays(b)
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    assert _without_timings(rows[0]) == _without_timings(rows[1])
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
    assert _without_timings(metrics[:1]) == _without_timings(metrics[1:])
    configs = [json.loads((d / "config.json").read_text()) for d in (a, b)]
    assert configs[0]["seed"] == configs[1]["seed"]
    kept = [{k: v for k, v in c["config"].items() if k not in differ} for c in configs]
    assert kept[0] == kept[1]


def test_sample_n_4000_over_4_shards_equals_one_shard_and_the_unsharded_run(tmp_path: Path) -> None:
    """A stochastic sampler (hashed per-sample noise) and the seed's initial-noise stream, each shard starting
    mid-stream: merged x, x0, rows and metrics equal the plain run's; `gentool merge` redoes the merge. (The
    float64 reference solve is left to the slow test: 4000 points take it ~5 s.)"""
    args = [*RING, "--n", "4000", "--batch-size", "500", "--no-reference"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    for k in (4, 1):
        out = tmp_path / f"shards{k}"
        res = runner.invoke(app, [*args, "--shards", str(k), "--executor", "debug", "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert f"{k} shards merged, 8 units" in res.output
        _same_samples(tmp_path / "plain", out)
    parts = sorted(p.name for p in (tmp_path / "shards4" / "parts").glob("000?-*"))
    assert parts == ["0000-units-1-2", "0001-units-3-4", "0002-units-5-6", "0003-units-7-8"]
    assert np.load(tmp_path / "shards4" / "parts" / parts[1] / "samples.npz")["x"].shape == (1000, 2)
    res = runner.invoke(app, ["merge", str(tmp_path / "shards4")])
    assert res.exit_code == 0, res.output
    _same_samples(tmp_path / "plain", tmp_path / "shards4")
    other = [a if a != "4000" else "3900" for a in args]  # the same part names (8 batches), another run
    res = runner.invoke(app, [*other, "--shards", "4", "--executor", "debug", "--out", str(tmp_path / "shards4")])
    assert res.exit_code == 2 and "0000-units-1-2 holds a shard of another run" in res.output, res.output


def test_sample_shards_need_batches(tmp_path: Path) -> None:
    res = runner.invoke(app, [*RING, "--n", "100", "--shards", "2", "--executor", "debug", "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 2, res.output
    assert "shards must be an integer in [1, 1]" in res.output and "set batch_size" in res.output
    assert "--shards" in runner.invoke(app, ["sample", "--help"]).output


def test_a_part_directory_of_another_unit_range_is_refused(tmp_path: Path) -> None:
    spec = JOBS["sample"]
    config = spec.config(target="gmm-ring", n=40, batch_size=10, steps=3, sampler="euler")
    execute(UnitRange(spec.make(config, 0, "cpu"), 0, 2), tmp_path / "part", plots=False)
    with pytest.raises(BadInput, match=r"holds units 0..2 of the run, not 1..3"):
        execute(UnitRange(spec.make(config, 0, "cpu"), 1, 3), tmp_path / "part", resume="auto", plots=False)
    with pytest.raises(BadInput, match=r"unit range 2..5 is not inside the job's units 0..4"):
        UnitRange(spec.make(config, 0, "cpu"), 2, 5)


def test_diffusers_model_shards_number_pngs_globally_and_score_once(tmp_path: Path) -> None:
    """A tiny random class-conditional UNet "trained on digits" (classes 0-2, null class 3): PNGs
    000000..000011 and the Fréchet/feature metrics over all 12 samples equal the plain run's; the parts write
    neither."""
    pytest.importorskip("diffusers")
    from test_diffusers_cli import tiny_model

    model = tiny_model(tmp_path / "unet", num_classes=4, meta={"data": "digits", "null_class": 3})
    args = ["sample", "--model", str(model), "--sampler", "dpmpp-2m-sde", "--steps", "3", "-n", "12",
            "--batch-size", "4", "--cfg", "1.5", "--device", "cpu", "--no-progress"]
    res = runner.invoke(app, [*args, "--save-png", str(tmp_path / "png-plain"), "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sharded"
    res = runner.invoke(app, [*args, "--save-png", str(tmp_path / "png-sharded"), "--shards", "3", "--executor",
                              "debug", "--out", str(out)])
    assert res.exit_code == 0, res.output
    _same_samples(tmp_path / "plain", out, "save_png")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "frechet_distance" in metrics and np.load(out / "samples.npz")["labels"].tolist() == [0, 1, 2] * 4
    pngs = {name: sorted((tmp_path / name).glob("*.png")) for name in ("png-plain", "png-sharded")}
    assert [p.name for p in pngs["png-sharded"]] == [f"{i:06d}.png" for i in range(12)]
    assert [p.read_bytes() for p in pngs["png-plain"]] == [p.read_bytes() for p in pngs["png-sharded"]]
    assert (out / "grid.png").is_file() and not list((out / "parts").glob("*/metrics.json"))


def _units(run_dir: Path) -> int:
    return len(list((run_dir / "units").glob("*.jsonl"))) if (run_dir / "units").is_dir() else 0


@pytest.mark.slow
def test_a_sample_shard_killed_mid_run_is_resumed_alone_and_the_merge_equals_the_unsharded_run(tmp_path: Path
                                                                                                ) -> None:
    args = [*RING, "--n", "3000", "--batch-size", "50", "--steps", "40", "--threads", "1"]
    plain = subprocess.run([str(GENTOOL), *args, "--out", str(tmp_path / "plain")], capture_output=True, text=True,
                           timeout=600)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    out = tmp_path / "sharded"
    cmd = [str(GENTOOL), *args, "--shards", "2", "--executor", "local", "--out", str(out)]
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = out / "parts" / "0001-units-31-60"
    try:
        deadline = time.monotonic() + 400
        while _units(second) < 3:
            assert time.monotonic() < deadline, "timed out waiting for three committed units of the second shard"
            assert proc.poll() is None, proc.communicate()[0]  # the sharded run ended before it was killed
            time.sleep(0.1)
        holder = int((second / ".gentool.lock").read_text().rsplit("pid ", 1)[1].rstrip(")"))
        os.kill(holder, signal.SIGKILL)
        text, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 1, text
    assert "shard 0001-units-31-60 failed" in text and not (second / DONE).exists()
    first = out / "parts" / "0000-units-1-30" / DONE
    first_done = first.stat().st_mtime_ns if first.exists() else None
    early = {n: (second / "units" / n).stat().st_mtime_ns for n in ("000001.jsonl", "000002.jsonl")}
    done = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    if first_done is not None:
        assert first.stat().st_mtime_ns == first_done  # the complete shard was not re-run
    assert {n: (second / "units" / n).stat().st_mtime_ns for n in early} == early  # resumed, not restarted
    _same_samples(tmp_path / "plain", out)


RECIPE = """
command = "sample"
[options]
target = "gmm-ring"
sampler = "euler-ancestral"
steps = 4
n = 400
batch-size = 50
reference = false
device = "cpu"
plots = false
progress = false
"""


def test_a_recipe_with_shards_runs_sharded_and_merges_to_the_unsharded_run(tmp_path: Path) -> None:
    """`shards = K` in a recipe and the override `shards=K` of `gentool run` (debug executor) give the plain
    run's samples; the effective recipe records the shards; shards where they cannot apply are refused."""
    plain, with_shards = tmp_path / "plain.toml", tmp_path / "sharded.toml"
    plain.write_text(RECIPE)
    with_shards.write_text("shards = 2\n" + RECIPE)
    res = runner.invoke(app, ["run", str(plain), "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", str(with_shards), "--executor", "debug", "--out", str(tmp_path / "two")])
    assert res.exit_code == 0 and "2 shards merged, 8 units" in res.output, res.output
    _same_samples(tmp_path / "plain", tmp_path / "two")
    res = runner.invoke(app, ["run", str(plain), "shards=4", "--executor", "debug", "--out", str(tmp_path / "four")])
    assert res.exit_code == 0 and "4 shards merged, 8 units" in res.output, res.output
    _same_samples(tmp_path / "plain", tmp_path / "four")
    assert json.loads((tmp_path / "four" / "recipe.json").read_text())["effective"]["shards"] == 4
    assert len(list((tmp_path / "four" / "parts").glob("000?-units-*"))) == 4
    for args, message in [
        ([str(plain), "shards=0"], "shards must be an integer >= 1, got 0"),
        ([str(plain), "shards=9"], "shards must be an integer in [1, 8]"),
        ([str(plain), "--executor", "debug"], "executor applies to a recipe with shards"),
    ]:
        res = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "bad")])
        assert res.exit_code == 2 and message in res.output, res.output
    res = runner.invoke(app, ["sweep", str(with_shards), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "shards = 2 splits one run: run it with gentool run" in res.output, res.output
    swept = tmp_path / "swept.toml"
    swept.write_text("shards = 2\n" + RECIPE + "[sweep]\nsteps = [3, 4]\n")
    res = runner.invoke(app, ["run", str(swept), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "a recipe with a sweep runs each point whole" in res.output, res.output
    simplex = tmp_path / "simplex.toml"
    simplex.write_text('shards = 2\ncommand = "optimize simplex"\n[options]\nobjective = "softmax"\nx = [1, 0.5]\n')
    res = runner.invoke(app, ["run", str(simplex), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "optimize simplex cannot be sharded; shardable:" in res.output, res.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("dim", [2, 16])
def test_the_batch_size_does_not_change_the_samples(dim: int) -> None:
    """Each sample takes its own whole blocks of the seed's randn stream (and its global index keys the sampler
    noise), so the initial draws and the samples are the same for any batch size; for a sample size that is a
    multiple of 16 the initial draws are one `randn((n, dim), generator)` (a pipeline's latents)."""
    from gentool.core.nn import make_generator

    spec, runs = JOBS["sample"], {}
    for batch in (None, 3, 4):
        config = spec.config(target="gaussian", dim=dim, n=10, batch_size=batch, steps=3, sampler="euler-ancestral")
        job = spec.make(config, 5, "cpu")
        while not job.done:
            job.advance()
        runs[batch] = job.samples()
    for batch in (3, 4):
        assert all(torch.equal(runs[None][k], runs[batch][k]) for k in ("x", "x0")), batch
    if dim == 16:
        z = torch.randn(10, dim, generator=make_generator(5), dtype=torch.float64)
        assert torch.equal(runs[None]["x0"], z * runs[None]["sigmas"][0])
