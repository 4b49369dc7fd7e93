"""`gentool mad-loop`: outputs, bad input (exit 2), tiny neural families, and resumption after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.io import read_json, read_jsonl
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["mad-loop", *args, "--device", "cpu", "--no-progress"])


def test_gaussian_run_writes_outputs(tmp_path: Path) -> None:
    res = _run("--generations", "5", "--seeds", "50", "--n-real", "20", "--n-synth", "20", "--metrics",
               "sliced_w2,precision,recall", "--metric-seeds", "2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == 250 and {(r["seed"], r["generation"]) for r in rows} == {(s, t) for s in range(50)
                                                                                  for t in range(1, 6)}
    assert sum("recall" in r for r in rows) == 10
    header = (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert header == "generation,metric,count,mean,std,ci95_low,ci95_high"
    assert read_json(tmp_path / "config.json")["config"]["family"] == "gaussian"
    assert (tmp_path / "metrics.png").stat().st_size > 0 and (tmp_path / "snapshots.png").stat().st_size > 0


@pytest.mark.parametrize("args", [("--family", "vae"), ("--loop", "mixed"), ("--lam", "0"), ("--lam", "1.2"),
                                  ("--n-synth", "1"), ("--data", "mnist"), ("--bandwidth", "wide")])
def test_bad_input_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    res = _run(*args, "--out", str(tmp_path))
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "error" in res.output
    assert not (tmp_path / "config.json").exists()


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    args = ("--n-test", "50", "--no-plots", "--out", str(tmp_path))
    assert _run("--generations", "2", *args).exit_code == 0
    assert _run("--generations", "2", *args).exit_code == 2
    assert _run("--generations", "2", *args, "--resume").exit_code == 0
    assert _run("--generations", "3", *args, "--resume").exit_code == 2
    assert not (tmp_path / "metrics.png").exists()


def test_diffusion_family_tiny(tmp_path: Path) -> None:
    res = _run("--family", "diffusion", "--data", "moons", "--generations", "2", "--n-real", "64",
               "--n-synth", "64", "--train-steps", "20", "--steps", "3", "--sampler", "euler",
               "--metrics", "precision,recall", "--n-test", "200", "--lam", "0.8", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["generation"] for r in rows] == [1, 2] and all(0 <= r["recall"] <= 1 for r in rows)


def test_monoflow_family_tiny(tmp_path: Path) -> None:
    res = _run("--family", "monoflow", "--data", "ring", "--loop", "accumulate", "--budget", "80",
               "--generations", "2", "--n-real", "64", "--n-synth", "64", "--train-steps", "10",
               "--metrics", "sliced_w2",
               "--n-test", "200", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert [r["n_train"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [64, 80]


def _args(out: Path) -> list[str]:
    """Vectorised Gaussian family, 2000 seeds: each generation takes a noticeable fraction of a second."""
    return ["--family", "gaussian", "--loop", "accumulate", "--budget", "30", "--generations", "10",
            "--seeds", "2000", "--n-real", "20", "--n-synth", "20", "--n-test", "100", "--no-plots",
            "--out", str(out)]


def test_sigkill_then_resume_matches_clean_run(tmp_path: Path) -> None:
    """A subprocess killed after its first committed generation, resumed (in-process), equals a clean run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "gentool.cli.main", "mad-loop", *_args(killed), "--device", "cpu",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "units" / "000001.jsonl"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (killed / "metrics.jsonl").exists(), "the run must be killed mid-way"
    assert _run(*_args(killed), "--resume").exit_code == 0
    assert _run(*_args(clean)).exit_code == 0
    got, want = (killed / "metrics.jsonl").read_text(), (clean / "metrics.jsonl").read_text()
    assert got == want
    assert len(want.splitlines()) == 10 * 2000 and json.loads(want.splitlines()[-1])["generation"] == 10
