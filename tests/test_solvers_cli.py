"""`gentool bench solvers` with tiny sizes: tables printed, results and config written, bad input exits 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
