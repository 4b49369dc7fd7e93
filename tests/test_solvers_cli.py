"""`gentool bench solvers` / `bench samplers` with tiny sizes: tables printed, results and config written, bad
input exits 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.io import read_json
from typer.testing import CliRunner


def test_bench_solvers_tiny(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["bench", "solvers", "--batch-sizes", "8,16", "--steps", "2", "--device",
                                      "cpu", "--repeats", "1", "--fields", "mlp2", "--methods", "euler,rk4",
                                      "--adaptive", "bosh3,dopri5", "--rtol", "1e-3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Fixed-step solvers" in result.stdout and "Adaptive solvers" in result.stdout
    data = read_json(out / "solvers.json")
    assert [(r["method"], r["batch"]) for r in data["fixed"]] == [("euler", 8), ("euler", 16), ("rk4", 8),
                                                                  ("rk4", 16)]
    assert all(r["floor_ratio"] == 1.0 and r["gentool_s"] > 0 for r in data["fixed"])
    assert data["adaptive"][0]["gentool_nfe_max"] > 0 and data["adaptive"][0]["controller"] == "integral"
    assert data["adaptive"][0]["torchode"] in ("no bosh3 in torchode", "not installed")
    if importlib.util.find_spec("torchode") is not None:
        assert data["adaptive"][-1]["torchode_nfe"] > 0 and data["adaptive"][-1]["torchode_s"] > 0
    assert "gentool/hand" in result.stdout and "÷torchdiffeq" in result.stdout  # logs get the whole table
    assert read_json(out / "config.json")["config"]["steps"] == 2


def test_bench_solvers_bad_input() -> None:
    runner = CliRunner()
    bad_method = runner.invoke(app, ["bench", "solvers", "--methods", "rk5", "--device", "cpu"])
    assert bad_method.exit_code == 2 and "allowed: euler, heun, midpoint, rk4" in bad_method.output
    bad_steps = runner.invoke(app, ["bench", "solvers", "--steps", "0", "--device", "cpu"])
    assert bad_steps.exit_code == 2 and "--steps must be >= 1" in bad_steps.output
    bad_controller = runner.invoke(app, ["bench", "solvers", "--controller", "pid", "--device", "cpu"])
    assert bad_controller.exit_code == 2 and "allowed: integral, pi" in bad_controller.output


def test_bench_samplers_tiny(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["bench", "samplers", "--batch-sizes", "8", "--nfe", "3", "--samplers",
                                      "euler,ddim,heun", "--device", "cpu", "--repeats", "1", "--accuracy-n", "20",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "device:" in result.stdout and "eager/loop" in result.stdout and "RMSE gmm-ring" in result.stdout
    rows = read_json(out / "samplers.json")["samplers"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("euler", 3), ("ddim", 3), ("heun", 3)]
    assert all(r["eager_s"] > 0 and r["loop_s"] > 0 and r["floor_s"] > 0 and r["endpoint_rmse"] > 0 for r in rows)
    # the stochastic sampler's RNG is timed alone (a part of its eager time); deterministic ones have none
    assert [r["sampler"] for r in rows if "noise_s" in r] == ["ddim"] and 0 < rows[1]["noise_s"] < rows[1]["eager_s"]
    assert "noise" in result.stdout
    bad = CliRunner().invoke(app, ["bench", "samplers", "--samplers", "ode", "--device", "cpu"])
    assert bad.exit_code == 2 and "plan samplers only" in bad.output


@pytest.mark.slow
def test_bench_with_compile(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "samplers", "--batch-sizes", "8", "--nfe", "2", "--samplers", "euler",
                                      "--device", "cpu", "--repeats", "1", "--accuracy-n", "20", "--compile"])
    assert result.exit_code == 0 and "compiled/eager" in result.stdout, result.output
    result = CliRunner().invoke(app, ["bench", "solvers", "--batch-sizes", "8", "--steps", "2", "--device", "cpu",
                                      "--repeats", "1", "--fields", "mlp2", "--methods", "euler", "--adaptive",
                                      "dopri5", "--rtol", "1e-3", "--compile"])
    assert result.exit_code == 0 and "compiled ms" in result.stdout, result.output
