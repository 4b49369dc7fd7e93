"""The run contract (`gentool.core.run.execute`) as users meet it: locks, owners, resume checks, divergence,
signals, SIGKILL + resume for every long job, seed independence, file-system errors."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from gentool.cli.main import app
from gentool.core.errors import BadInput, NumericalFailure, StorageError
from gentool.core.io import read_json, read_jsonl
from gentool.core.jobs.mad import MadJob
from gentool.core.mad import MadConfig
from gentool.core.run import execute, open_run_dir
from typer.testing import CliRunner

runner = CliRunner()
MAD_SMALL = ["mad-loop", "--generations", "3", "--seeds", "10", "--n-real", "20", "--n-synth", "20", "--n-test",
             "50", "--no-plots", "--no-progress"]


def _cli(*args: str):
    return runner.invoke(app, [*args])


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# ---- the directory belongs to one run of one command ---------------------------------------------------

def test_a_locked_directory_is_refused_until_released(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with open_run_dir(out, "mad-loop"):
        res = _cli(*MAD_SMALL, "--out", str(out))
        assert res.exit_code == 2
        assert f"is in use by gentool mad-loop (pid {os.getpid()})" in _one_error_line(res)
        assert not (out / "config.json").exists()
    assert _cli(*MAD_SMALL, "--out", str(out)).exit_code == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".gentool.lock").write_text("gentool mad-loop (pid 999999)")
    res = _cli(*MAD_SMALL, "--out", str(out))
    assert res.exit_code == 0, res.output


def test_two_processes_into_one_directory(tmp_path: Path) -> None:
    """A second real process is refused while the first runs; the first finishes unharmed."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gentool.cli.main", "mad-loop", "--generations", "40", "--seeds", "300",
            "--n-real", "20", "--n-synth", "20", "--n-test", "50", "--no-plots", "--no-progress", "--device", "cpu",
            "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = _cli(*MAD_SMALL, "--out", str(out))
    assert first.wait(timeout=300) == 0
    assert second.exit_code == 2 and "is in use by gentool mad-loop" in _one_error_line(second)
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 40 * 300 and read_json(out / "config.json")["config"]["generations"] == 40


def test_another_commands_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cli(*MAD_SMALL, "--out", str(out)).exit_code == 0
    before = (out / "config.json").read_bytes()
    res = _cli("sample", "--target", "gmm-ring", "-n", "10", "--out", str(out), "--no-progress")
    assert res.exit_code == 2 and "already holds a `mad-loop` run" in _one_error_line(res)
    assert (out / "config.json").read_bytes() == before


def test_resume_compares_every_setting_by_name(tmp_path: Path) -> None:
    out = tmp_path / "train"
    base = ["train", "--steps", "20", "--checkpoint-every", "10", "--width", "8", "--depth", "1", "--batch", "16",
            "--n-train", "100", "--no-progress", "--out", str(out)]
    assert _cli(*base).exit_code == 0
    res = _cli(*base, "--resume", "--data", "ring", "--lr", "0.5")
    line = _one_error_line(res)
    assert res.exit_code == 2 and "data ('moons' -> 'ring')" in line and "lr (0.01 -> 0.5)" in line
    res = _cli(*base, "--resume", "--seed", "3")
    assert res.exit_code == 2 and "seed (0 -> 3)" in _one_error_line(res)
    assert _cli(*base[:-2], "--out", str(out), "--resume", "--steps", "30").exit_code == 0  # steps may grow
    assert read_json(out / "DONE.json")["summary"]["steps"] == 30


def test_monoflow_twice_into_one_directory_is_refused(tmp_path: Path) -> None:
    args = ["monoflow", "--steps", "4", "--eval-every", "2", "-n", "50", "--batch-size", "16", "--hidden", "8",
            "--no-progress", "--no-plots", "--out", str(tmp_path)]
    assert _cli(*args).exit_code == 0
    assert _cli(*args).exit_code == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [2, 4]
    res = _cli(*args, "--resume", "--h", "ns")
    assert res.exit_code == 2 and "h ('logit' -> 'ns')" in _one_error_line(res)


# ---- divergence: exit 3, the unit and the knob named, the last good state kept ------------------------

DIVERGING = [
    (["train", "--lr", "1e6", "--steps", "40", "--checkpoint-every", "10", "--width", "16"], "lower lr"),
    (["optimize", "particles", "--step-size", "1e6", "--time", "2e7", "--log-every", "5", "-n", "50"],
     "reduce step_size"),
    (["monoflow", "--mode", "particles", "--dt", "1e8", "--steps", "6", "--eval-every", "2", "-n", "100",
      "--batch-size", "32", "--hidden", "16"], "dt"),
    (["mad-loop", "--family", "kde", "--bandwidth", "1e-300", "--generations", "3", "--n-test", "50"], "bandwidth"),
    (["optimize", "particles", "--method", "kde-flow", "--target", "double-well", "-n", "1000", "--step-size", "0.02"],
     "covariance stopped being positive definite"),  # inside a unit's steps, in the field (kde-flow whitens)
]


@pytest.mark.parametrize(("args", "knob"), DIVERGING, ids=[" ".join(a[:3]) for a, _ in DIVERGING])
def test_divergence_stops_with_exit_3(tmp_path: Path, args: list[str], knob: str) -> None:
    out = tmp_path / "run"
    res = _cli(*args, "--out", str(out), "--no-progress", "--device", "cpu")
    assert res.exit_code == 3, res.output
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")][-1]
    assert "unit " in line and knob in line and "keeps its last good state" in line, line
    assert "with other settings, run in a new output directory" in line, line  # resuming keeps the settings
    assert not (out / "metrics.jsonl").exists() and not (out / "DONE.json").exists()
    state = out / "state.pt"
    if state.exists():  # the committed state is finite and resumable
        units = torch.load(state, weights_only=False)["units_done"]
        assert units >= 1 and len(list((out / "units").glob("*.jsonl"))) == units


# ---- SIGINT: finish the write, say how to resume, exit 130 ---------------------------------------------

def _popen(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gentool.cli.main", *args, "--device", "cpu",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigint_commits_says_how_to_resume_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["mad-loop", "--generations", "40", "--seeds", "300", "--n-real", "20", "--n-synth", "20",
            "--n-test", "50", "--no-plots", "--out", str(out)]
    proc = _popen(args)
    _wait_for(out / "units" / "000001.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT" in err and "continue with --resume" in err
    units = torch.load(out / "state.pt", weights_only=False)["units_done"]
    assert 1 <= units < 40 and not list(out.rglob(".*.tmp"))
    assert _cli(*args, "--resume", "--no-progress").exit_code == 0
    assert _cli(*[a if a != str(out) else str(tmp_path / "clean") for a in args], "--no-progress").exit_code == 0
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "clean" / "metrics.jsonl").read_text()


# ---- SIGKILL + resume equals an uninterrupted run, for every long job ----------------------------------

KILLED = {
    "mad-loop": ["mad-loop", "--family", "gaussian", "--loop", "accumulate-subsample", "--budget", "30",
                 "--generations", "20", "--seeds", "500", "--n-real", "20", "--n-synth", "20", "--n-test", "100"],
    "train": ["train", "--steps", "800", "--checkpoint-every", "50", "--width", "32", "--depth", "2",
              "--batch", "64", "--n-train", "500"],
    "monoflow": ["monoflow", "--steps", "200", "--eval-every", "20", "-n", "200", "--batch-size", "64",
                 "--hidden", "32", "--n-train", "1000"],
    "particles": ["optimize", "particles", "--method", "langevin", "-n", "300", "--time", "3",
                  "--log-every", "25", "--step-size", "0.005"],
}


@pytest.mark.parametrize("name", list(KILLED))
def test_sigkill_then_resume_equals_a_clean_run(tmp_path: Path, name: str) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = [*KILLED[name], "--no-plots"]
    proc = _popen([*args, "--out", str(killed)])
    _wait_for(killed / "units" / "000001.jsonl", proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "DONE.json").exists(), "the run must be killed mid-way"
    for run in ((*args, "--out", str(killed), "--resume"), (*args, "--out", str(clean))):
        res = _cli(*run, "--no-progress", "--device", "cpu")
        assert res.exit_code == 0, res.output
    assert (killed / "metrics.jsonl").read_text() == (clean / "metrics.jsonl").read_text()
    assert not list(killed.rglob(".*.tmp"))


# ---- seeds: seed k's numbers do not depend on how many seeds run beside it ---------------------------

@pytest.mark.parametrize("family", ["gaussian", "kde"])
def test_seed_numbers_do_not_depend_on_the_number_of_seeds(tmp_path: Path, family: str) -> None:
    def rows(seed: int, seeds: int) -> dict[int, list[dict]]:
        cfg = MadConfig(family=family, generations=4, seeds=seeds, n_real=20, n_synth=20, n_test=50)
        out = execute(MadJob(cfg, seed=seed), tmp_path / f"{seed}-{seeds}", plots=False).rows
        by_seed: dict[int, list[dict]] = {}
        for r in out:
            by_seed.setdefault(r["seed"], []).append(r)
        return by_seed

    alone, batch, split = rows(0, 1), rows(0, 5), rows(3, 1)
    assert alone[0] == batch[0]
    assert split[3] == batch[3]


# ---- file-system errors: one line, exit 4 --------------------------------------------------------------

def test_a_full_disk_is_one_line_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gentool.core.io.os.replace", full)
    res = _cli(*MAD_SMALL, "--out", str(tmp_path / "run"))
    assert res.exit_code == 4
    assert "No space left on device" in _one_error_line(res)
    assert not list((tmp_path / "run").rglob(".*.tmp"))


def test_execute_errors_from_python() -> None:
    cfg = MadConfig(generations=2, seeds=2, n_real=10, n_synth=10, n_test=20)
    with pytest.raises(BadInput, match="unknown resume mode"):
        execute(MadJob(cfg), "/nonexistent", resume="sometimes")
    with pytest.raises(StorageError):
        execute(MadJob(cfg), "/proc/gentool-test-run")
    assert issubclass(NumericalFailure, ArithmeticError) and NumericalFailure.exit_code == 3


def test_leftover_temporaries_are_removed_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cli(*MAD_SMALL, "--out", str(out)).exit_code == 0
    (out / ".state.pt.abc.tmp").write_bytes(b"torn")
    (out / "units" / ".000002.jsonl.x.tmp").write_text("{")
    assert _cli(*MAD_SMALL, "--out", str(out), "--resume").exit_code == 0
    assert not list(out.rglob(".*.tmp"))
    done = json.loads((out / "DONE.json").read_text())
    assert done["command"] == "mad-loop" and done["units"] == 3
