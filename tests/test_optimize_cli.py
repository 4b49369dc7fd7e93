"""`gentool optimize simplex|particles` via Typer's CliRunner: output files, exit codes, one-line errors (more bad
input in test_bad_input.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gentool.cli.main import app
from gentool.core.io import read_jsonl
from gentool.core.probspace.particles import DEFAULTS
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
    """Linear + entropy: every method returns softmax(x), from any initial step lr."""
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
    extra = ["--n-target", "300"] if method == "mmd-flow" else []
    res = _run("particles", "--target", "gmm-ring", "--method", method, "--n", "100", "--time", "0.1",
               "--step-size", "0.005", "--log-every", "5", *extra, "--out", str(out), "--seed", "3", "--no-progress")
    assert res.exit_code == 0, res.output
    data = np.load(out / "final.npz")
    assert data["x"].shape == (100, 2) and np.isfinite(data["x"]).all()
    assert list(data["snapshot_times"])[0] == 0 and data["snapshots"].shape[1:] == (100, 2)
    assert data["reference"].shape == (100, 2) and len(data["mmd2_bandwidths"]) == 5
    trace = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in trace] == [0, 5, 10, 15, 20] and all("mmd2" in r for r in trace)
    assert trace[-1]["t"] == pytest.approx(0.1)
    samples = np.load(out / "samples.npz")
    np.testing.assert_array_equal(samples["x"], data["x"])
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    for png in ("objective.png", "snapshots.png", "moments.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert ("kde-flow's score is that of the particles' density smoothed" in res.output) == (method == "kde-flow")


def test_particles_defaults_are_recorded(tmp_path) -> None:
    """time, step_size and log_every default per method and are written into config.json (so --resume can
    extend time)."""
    out = tmp_path / "d"
    assert _run("particles", "--target", "gaussian", "--method", "svgd", "-n", "20", "--time", "2", "--out",
                str(out), "--no-progress", "--no-plots").exit_code == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["time"], config["step_size"], config["log_every"]) == (2.0, DEFAULTS["svgd"].step, 1)


def test_particles_exact_fokker_planck_in_the_summary(tmp_path) -> None:
    """Heat flow (no target) in 1-D by Langevin: the exact N(m₀, s₀² + 2t) moments are compared every row."""
    out = tmp_path / "heat"
    res = _run("particles", "--target", "none", "--dim", "1", "--method", "langevin", "-n", "4000", "--time", "1",
               "--step-size", "0.05", "--log-every", "10", "--out", str(out), "--no-progress", "--no-plots")
    assert res.exit_code == 0, res.output
    rows = read_jsonl(out / "metrics.jsonl")
    assert all("fp_cov_err" in r and "cov_err" not in r for r in rows)  # the heat flow has no limit
    assert rows[-1]["fp_cov_err"] < 4 * 3 * (2 / 4000) ** 0.5  # 4 standard errors of the variance (3 = 1 + 2t)


def test_particles_same_seed_same_result(tmp_path) -> None:
    args = ["particles", "--target", "none", "--dim", "1", "--method", "langevin", "--n", "50",
            "--time", "0.1",
            "--step-size", "0.01", "--no-progress", "--no-plots", "--seed", "7"]
    xs = []
    for name in ("a", "b"):
        assert _run(*args, "--out", str(tmp_path / name)).exit_code == 0
        xs.append(np.load(tmp_path / name / "final.npz")["x"])
    np.testing.assert_array_equal(*xs)
