"""Validate before the first write: seeds within the generators' range, an up-front memory estimate for
allocations scaled by user numbers (refused with the estimate and the limit), MAD schedules over every
generation, checkpoint contents against the network their config describes, and limits that used to fail
late (after writing samples) refused with nothing left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from gentool.cli.main import app
from gentool.core.config import make_config
from gentool.core.diffusion.checkpoints import denoiser_from_state, save_checkpoint
from gentool.core.diffusion.training import TrainConfig, train_denoiser
from gentool.core.errors import BadInput
from gentool.core.io import check_allocation
from gentool.core.jobs import JOBS
from gentool.core.jobs.optimize import KERNEL_METHODS, particle_bytes
from gentool.core.metrics.wasserstein import exact_w2, exact_w2_bytes
from gentool.core.probspace import PARTICLE_METHODS
from typer.testing import CliRunner

runner = CliRunner()

COMMANDS = {  # every job command, with options that make it cheap
    "sample": ["sample", "--target", "gaussian", "--steps", "2", "-n", "8"],
    "train": ["train", "--steps", "2", "--checkpoint-every", "2", "--n-train", "20"],
    "monoflow": ["monoflow", "--steps", "2", "--eval-every", "2", "-n", "16"],
    "mad-loop": ["mad-loop", "--generations", "1", "--seeds", "1"],
    "optimize simplex": ["optimize", "simplex", "--steps", "2"],
    "optimize compare": ["optimize", "compare", "--steps", "2"],
    "optimize particles": ["optimize", "particles", "-n", "8", "--time", "0.02", "--step-size", "0.01"],
    "optimize topk": ["optimize", "topk", "--x", "3,1,2", "--k", "1"],
}


def _refused(argv: list[str], out: Path, code: int = 2) -> str:
    res = runner.invoke(app, [*argv, "--out", str(out), "--no-progress", "--no-plots"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    assert not out.exists(), f"{argv} left {out} behind"
    return lines[0]


def test_every_job_command_is_listed() -> None:
    assert sorted(COMMANDS) == sorted(c for c in JOBS if c in COMMANDS) and set(COMMANDS) <= set(JOBS)


@pytest.mark.parametrize("seed", [str(2**64 + 5), str(2**63), "-1"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_seeds_out_of_range_are_refused(tmp_path: Path, command: str, seed: str) -> None:
    line = _refused([*COMMANDS[command], "--seed", seed], tmp_path / "out")
    assert f"seed must be an integer in [0, 2**63 - 1], got {seed}" in line


@pytest.mark.parametrize("option", [["--batch-size", "100000000000000"], ["--width", "1000000000"],
                                    ["--depth", "1000000", "--width", "100000"]])
def test_training_memory_is_estimated_up_front(tmp_path: Path, option: list[str]) -> None:
    line = _refused(["train", *option], tmp_path / "out")
    assert "training (n_train=" in line and "needs about" in line and "available on cpu" in line


def test_the_allocation_check_names_estimate_and_limit() -> None:
    check_allocation(1024, "a small array")
    with pytest.raises(BadInput, match=r"a huge array needs about .* of memory, more than the .* available on cpu"):
        check_allocation(2.0**63, "a huge array")


@pytest.mark.parametrize(("options", "fragment"), [
    (["--n-real", "30-10*t", "--generations", "3"], "n_real must be in [2, 100000000] at every generation, got 0 "
     "at generation 3"),
    (["--n-synth", "12-5*t", "--generations", "3"], "n_synth must be in [2, 100000000] at every generation, got -3 "
     "at generation 3"),
    (["--loop", "augment", "--real-fraction", "0.4*t", "--generations", "3"], "real_fraction (generation 3)"),
    (["--loop", "fresh", "--real-fraction", "[0.5, 0.5, 1.5]", "--generations", "3"], "real_fraction (generation 3)"),
])
def test_mad_schedules_are_checked_at_every_generation(tmp_path: Path, options: list[str], fragment: str) -> None:
    assert fragment in _refused(["mad-loop", "--seeds", "1", *options], tmp_path / "out")


@pytest.mark.parametrize("argv", [
    ["sample", "--target", "gaussian", "-n", "1", "--steps", "2"],
    ["monoflow", "-n", "2", "--steps", "2"],
    ["mad-loop", "--family", "gmm", "--n-real", "2", "--generations", "1", "--seeds", "1"],
])
def test_limits_that_failed_late_leave_nothing(tmp_path: Path, argv: list[str]) -> None:
    _refused(argv, tmp_path / "out")


@pytest.fixture(scope="module")
def checkpoint_state() -> dict[str, Any]:
    cfg = TrainConfig(width=8, depth=1, steps=1, batch=8)
    return train_denoiser(torch.randn(16, 2), cfg, generator=torch.Generator().manual_seed(0)).state


@pytest.mark.parametrize(("damage", "fragment"), [
    (lambda s: s.pop("ema"), "checkpoint lacks ema"),
    (lambda s: s.update(dim=3), "does not match the denoiser its config describes"),
    (lambda s: s["ema"].pop(next(iter(s["ema"]))), "does not match the denoiser its config describes"),
    (lambda s: s["config"].update(width=9), "does not match the denoiser its config describes"),
    (lambda s: s["config"].update(arch="transformer"), "checkpoint config is invalid"),
    (lambda s: s["config"].update(colour="red"), "does not match the denoiser its config describes"),
])
def test_checkpoint_contents_are_checked(tmp_path: Path, checkpoint_state: dict[str, Any], damage: Any,
                                         fragment: str) -> None:
    import copy

    state = copy.deepcopy(checkpoint_state)
    denoiser_from_state(state)  # the intact checkpoint loads
    damage(state)
    with pytest.raises(BadInput, match=fragment):
        denoiser_from_state(state)
    save_checkpoint(tmp_path / "ckpt.pt", state)
    assert fragment in _refused(["sample", "--model", str(tmp_path / "ckpt.pt"), "--steps", "2"], tmp_path / "out")


@pytest.mark.parametrize(("argv", "what"), [
    (["optimize", "particles", "--method", "svgd", "-n", "10000000"], "optimize particles (method svgd, n=10000000"),
    (["optimize", "particles", "--method", "mmd-flow", "--n-target", "100000000"], "n_target=100000000"),
    (["optimize", "particles", "--target", "none", "--dim", "10000", "-n", "100000000"], "method langevin"),
    (["mad-loop", "--seeds", "1000000", "--dim", "1000"], "mad-loop (seeds=1000000"),
    (["mad-loop", "--loop", "accumulate", "--n-real", "100000000", "--generations", "1000"], "loop=accumulate"),
    (["mad-loop", "--family", "kde", "--n-real", "100000", "--n-test", "100000", "--metrics", "exact_w2"],
     "mad-loop (seeds=1"),
    (["bound", "--target", "gaussian", "--perturb", "0.1", "--dim", "100000", "-n", "10000000"], "bound (n=10000000"),
    (["sample", "--target", "gaussian", "--dim", "100000", "-n", "100000000"], "sample (n=100000000, batch_size=None"),
    (["sample", "--target", "gaussian", "--dim", "1000", "-n", "10000000", "--batch-size", "1000"],
     "sample (n=10000000, batch_size=1000"),
])
def test_kernel_and_sample_memory_is_estimated_up_front(tmp_path: Path, argv: list[str], what: str) -> None:
    """n x n kernels (svgd, kde-flow, mmd-flow against n_target samples), MAD's kept data per block of seeds and
    its exact W2 matrix, bound's states, sample's kept samples and batch registers: refused before anything is
    drawn, naming the estimate and the limit."""
    line = _refused(argv, tmp_path / "out")
    assert what in line and "needs about" in line and "available on cpu" in line, line


@pytest.mark.parametrize("method", PARTICLE_METHODS)
def test_particle_estimate_covers_the_matrices_the_flow_builds(method: str) -> None:
    """A kernel flow holds an n x n Gram matrix (mmd-flow also n x n_target); every flow its (n, d) particles;
    a nonzero interaction the n x n pairwise distances. The estimate is at least those float64 bytes."""
    n, d, m = 3000, 5, 4000
    kernel = method in KERNEL_METHODS
    floor = 8 * n * d + (8 * n * (n + (m if method == "mmd-flow" else 0)) if kernel else 0)
    assert particle_bytes(method, n, d, m, 0.0) >= floor
    assert particle_bytes(method, n, d, m, 1.0) >= floor + 8 * n * n
    assert particle_bytes(method, 2 * n, d, m, 0.0) >= 2 * particle_bytes(method, n, d, m, 0.0)  # n or n^2 terms


def test_exact_w2_refuses_a_cost_matrix_beyond_memory() -> None:
    assert exact_w2_bytes(300, 400) >= 8 * 300 * 400  # the cost matrix itself
    with pytest.raises(BadInput, match=r"exact W2 between 100000000 and 100000000 points needs about"):
        exact_w2(torch.zeros(10**8, 1, dtype=torch.float32).expand(10**8, 1), torch.zeros(10**8, 1).expand(10**8, 1))


def test_default_runs_fit_the_estimates() -> None:
    """The estimates never refuse what the commands do by default."""
    for command in ("optimize particles", "mad-loop", "bound", "sample"):
        options = {"bound": {"target": "gaussian", "perturb": 0.0}, "sample": {"target": "gmm-ring"}}.get(command, {})
        JOBS[command].make(make_config(JOBS[command].config, options), 0, torch.device("cpu"))
