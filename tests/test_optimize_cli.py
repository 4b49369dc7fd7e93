"""`gentool optimize simplex|particles` via Typer's CliRunner: output files, exit codes, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gentool.cli.main import app
from gentool.core.io import read_jsonl
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["optimize", *args])


def test_simplex_sparsemax_frank_wolfe(tmp_path) -> None:
    out = tmp_path / "fw"
    res = _run("simplex", "--objective", "sparsemax", "--x", "1,0.5,-1", "--method", "frank-wolfe",
               "--iters", "2000", "--tol", "1e-5", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    p = np.load(out / "final.npz")["p"]
    np.testing.assert_allclose(p, [0.75, 0.25, 0.0], atol=1e-8)
    trace = read_jsonl(out / "metrics.jsonl")
    assert trace[0]["iter"] == 0 and trace[-1]["gap"] <= 1e-5 and len(trace) == trace[-1]["iter"] + 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["method"] == "frank-wolfe" and cfg["seed"] == 0 and "torch" in cfg["env"]
    for png in ("objective.png", "distribution.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("method", "lr"), [("exponentiated-gradient", "0.5"), ("projected-gradient", "0.05"),
                                             ("softmax-gd", "2.0")])
def test_simplex_methods_cli(tmp_path, method: str, lr: str) -> None:
    """Linear + entropy: every method returns softmax(x) (projected gradient needs a step < 1/L ~ min p)."""
    res = _run("simplex", "--objective", "softmax", "--x", "1,0.5,-1", "--method", method, "--iters", "3000",
               "--tol", "1e-10", "--lr", lr, "--log-every", "100", "--out", str(tmp_path), "--no-progress")
    assert res.exit_code == 0, res.output
    x = np.array([1, 0.5, -1])
    np.testing.assert_allclose(np.load(tmp_path / "final.npz")["p"], np.exp(x) / np.exp(x).sum(), atol=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--objective", "kl", "--x", "0.5,0.6"], "not on the probability simplex"),
    (["--x", "1,0.5,-1", "--p0", "0.5,0.5,0.5"], "initial point p0"),
    (["--objective", "sparsmax", "--x", "1,2"], "unknown objective"),
    (["--x", "1,2", "--method", "newton"], "unknown method"),
    (["--x", "1,nan,2"], "must be finite"),
    (["--x", "1,a"], "comma-separated numbers"),
    (["--objective", "no_such_module_xyz:f", "--x", "1,2"], "cannot import objective"),
])
def test_simplex_bad_input(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    res = _run("simplex", *args, "--out", str(out), "--no-progress")
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.strip()]) == 1
    assert not out.exists()


def test_simplex_nan_gradient(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nan_objective_mod.py").write_text(
        "import torch\ndef f(p):\n    return torch.full_like(p, float('nan'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = _run("simplex", "--objective", "nan_objective_mod:f", "--x", "1,2", "--out", str(tmp_path / "o"),
               "--no-progress")
    assert res.exit_code == 2 and "not finite at iteration 0" in res.output


@pytest.mark.parametrize("method", ["langevin", "svgd", "kde-flow", "mmd-flow"])
def test_particles_outputs(tmp_path, method: str) -> None:
    out = tmp_path / method
    res = _run("particles", "--target", "gmm-ring", "--method", method, "--n", "100", "--steps", "20",
               "--step-size", "0.005", "--log-every", "5", "--out", str(out), "--seed", "3", "--no-progress")
    assert res.exit_code == 0, res.output
    data = np.load(out / "final.npz")
    assert data["x"].shape == (100, 2) and np.isfinite(data["x"]).all()
    assert list(data["snapshot_steps"])[0] == 0 and data["snapshots"].shape[1:] == (100, 2)
    trace = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in trace] == [0, 5, 10, 15, 20] and all("mmd2" in r for r in trace)
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    for png in ("objective.png", "snapshots.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_particles_same_seed_same_result(tmp_path) -> None:
    args = ["particles", "--target", "none", "--dim", "1", "--method", "langevin", "--n", "50",
            "--steps", "10",
            "--step-size", "0.01", "--no-progress", "--seed", "7"]
    xs = []
    for name in ("a", "b"):
        assert _run(*args, "--out", str(tmp_path / name)).exit_code == 0
        xs.append(np.load(tmp_path / name / "final.npz")["x"])
    np.testing.assert_array_equal(*xs)


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "moon"], "unknown target"),
    (["--method", "hmc"], "unknown method"),
    (["--n", "1"], "n must be an integer in [2, "),
    (["--step-size", "-1"], "step_size must be a finite number > 0"),
    (["--method", "mmd-flow", "--target", "double-well"], "needs a target with an exact sampler"),
    (["--target", "gmm-ring", "--init-mean", "1,2,3"], "init_mean has 3 entries"),
])
def test_particles_bad_input(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    res = _run("particles", *args, "--n", "20", "--steps", "2", "--out", str(out), "--no-progress") \
        if "--n" not in args else _run("particles", *args, "--steps", "2", "--out", str(out), "--no-progress")
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()
