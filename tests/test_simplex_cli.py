"""`gentool optimize simplex|compare` from the command line: inputs from files, objectives with data, the
unconverged warning, the comparison table and plot, and resumable state."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.config import parse_matrix
from gentool.core.errors import BadInput
from gentool.core.jobs import JOBS
from gentool.core.jobs.simplex import CompareConfig, CompareJob, SimplexConfig, SimplexJob
from gentool.core.run import execute
from scipy.special import softmax
from simplex_problems import planted_portfolio, planted_quadratic
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["optimize", *args, "--no-progress"])


def _p(out: Path) -> np.ndarray:
    return np.load(out / "final.npz")["p"]


@pytest.mark.parametrize("form", ["npy", "npz", "npz:key", "csv", "txt"])
def test_vectors_and_matrices_from_files(tmp_path: Path, form: str) -> None:
    """A planted quadratic (n = 30) read from each file kind gives the planted minimiser."""
    a, b, p_star = planted_quadratic(np.random.default_rng(4), 30)
    if form == "npy":
        np.save(tmp_path / "a.npy", a), np.save(tmp_path / "b.npy", b)
        x, m = tmp_path / "b.npy", tmp_path / "a.npy"
    elif form == "npz":
        np.savez(tmp_path / "a.npz", a), np.savez(tmp_path / "b.npz", b=b)
        x, m = tmp_path / "b.npz", tmp_path / "a.npz"
    elif form == "npz:key":
        np.savez(tmp_path / "problem.npz", A=a, b=b)
        x, m = f"{tmp_path / 'problem.npz'}:b", f"{tmp_path / 'problem.npz'}:A"
    else:
        sep = "," if form == "csv" else " "
        np.savetxt(tmp_path / f"a.{form}", a, delimiter=sep), np.savetxt(tmp_path / f"b.{form}", b, delimiter=sep)
        x, m = tmp_path / f"b.{form}", tmp_path / f"a.{form}"
    out = tmp_path / "run"
    res = _run("simplex", "--objective", "quadratic", "--x", str(x), "--matrix", str(m), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "converged=True" in res.output and " p=" not in res.output  # n = 30: p is not printed
    np.testing.assert_allclose(_p(out), p_star, atol=1e-6)


OBJECTIVE = """
import torch
def portfolio(p, data):
    return -torch.log(data["R"] @ p).mean()
def portfolio_tensor(p, R):
    return -torch.log(R @ p).mean()
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "simplex_cli_objectives.py").write_text(OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "simplex_cli_objectives"


@pytest.mark.parametrize(("fn", "kind"), [("portfolio", "npz"), ("portfolio_tensor", "npy"),
                                          ("portfolio_tensor", "csv")])
def test_user_objective_with_a_data_file(tmp_path: Path, user_module: str, fn: str, kind: str) -> None:
    """The log-optimal portfolio written by the user, its returns from a data file (a dict from .npz, a tensor
    otherwise), reaches the planted minimiser, as the built-in does."""
    r, p_star = planted_portfolio(np.random.default_rng(8), 40)
    data = tmp_path / f"returns.{kind}"
    np.savez(data, R=r) if kind == "npz" else np.save(data, r) if kind == "npy" else np.savetxt(data, r, delimiter=",")
    out = tmp_path / "user"
    res = _run("simplex", "--objective", f"{user_module}:{fn}", "--data", str(data), "--dim", "40",
               "--out", str(out))
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_p(out), p_star, atol=1e-6)
    assert json.loads((out / "config.json").read_text())["config"]["data"] == str(data)


def test_a_changed_data_file_is_refused_on_resume(tmp_path: Path, user_module: str) -> None:
    r, _ = planted_portfolio(np.random.default_rng(8), 10)
    data = tmp_path / "returns.npy"
    np.save(data, r)
    config = SimplexConfig(objective=f"{user_module}:portfolio_tensor", data=data, dim=10, steps=5)
    state = SimplexJob(config).state_dict()
    np.save(data, 2 * r)
    with pytest.raises(BadInput, match="changed since the run started"):
        SimplexJob(config).load_state_dict(state)


def test_an_unconverged_run_says_so(tmp_path: Path) -> None:
    """Exit 0, converged=False in the summary line, and one warning line on stderr."""
    out = tmp_path / "short"
    res = _run("simplex", "--objective", "softmax", "--x", "1,0.5,-1", "--step", "open-loop", "--iters", "50",
               "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "converged=False" in res.stdout
    warnings = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: not converged: gap ")
    assert "after 50 iterations" in warnings[0]
    done = json.loads((out / "DONE.json").read_text())
    assert done["summary"]["converged"] is False and "warning" in done["summary"]


def test_compare_table_and_plot(tmp_path: Path) -> None:
    """Every method that can solve a planted quadratic, FW with two step rules: one row each, F* the best found
    (no closed form), and the converged rows within 1e-6 of the planted F*."""
    a, b, p_star = planted_quadratic(np.random.default_rng(1), 40)
    np.savez(tmp_path / "q.npz", A=a, b=b)
    out = tmp_path / "cmp"
    res = _run("compare", "--objective", "quadratic", "--x", f"{tmp_path / 'q.npz'}:b", "--matrix",
               f"{tmp_path / 'q.npz'}:A", "--fw-steps", "away,open-loop", "--steps", "3000", "--log-every", "10",
               "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["frank-wolfe (away)", "frank-wolfe (open-loop)",
                                           "exponentiated-gradient", "projected-gradient"]
    assert list(rows[0]) == ["method", "gap", "F - F*", "iterations", "seconds", "converged"]
    f_star = 0.5 * p_star @ a @ p_star + b @ p_star
    final = np.load(out / "final.npz")
    assert final["p"].shape == (4, 40) and abs(float(final["fstar"]) - f_star) < 1e-6
    for row, p in zip(rows, final["p"], strict=True):
        assert float(row["F - F*"]) >= 0 and float(row["seconds"]) > 0
        if row["converged"] == "True":
            assert 0.5 * p @ a @ p + b @ p - f_star <= 1e-6 and float(row["gap"]) <= 1e-8
    assert rows[1]["converged"] == "False" and "frank-wolfe (open-loop)" in res.stderr  # the warning names it
    assert "fstar_from=best found" in res.stdout and "projected-gradient" in res.stdout  # the table
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    trace = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["method"] for r in trace} == {r["method"] for r in rows}
    assert all({"iter", "seconds", "gap", "objective"} <= set(r) for r in trace)


def test_compare_defaults_to_the_methods_that_can_solve(tmp_path: Path) -> None:
    """sparsemax: softmax-gd is left out; softmax: all four, F* in closed form."""
    table = JOBS["optimize compare"]
    for objective, expected in (("sparsemax", 3), ("softmax", 4)):
        result = execute(table.build(CompareConfig(objective=objective), 0, torch.device("cpu")),
                         tmp_path / objective, plots=False)
        assert len(result.summary["table"]) == expected and "warning" not in result.summary
        assert result.summary["fstar_from"] == "closed form"
        assert max(r["F - F*"] for r in result.summary["table"]) <= 1e-8
    p = np.load(tmp_path / "softmax" / "final.npz")["p"]
    np.testing.assert_allclose(p, np.tile(softmax([1.0, 0.5, -1.0]), (4, 1)), atol=1e-6)


def _resumed(job_a, job_b, units: int) -> None:
    for _ in range(units):
        job_a.advance()
    job_b.load_state_dict(job_a.state_dict())
    while not job_b.done:
        job_b.advance()


def test_compare_and_simplex_state_round_trip() -> None:
    """A job restored from the state after some units ends where an uninterrupted job ends (the backtracking
    step sizes are part of the state)."""
    matrix = parse_matrix(planted_portfolio(np.random.default_rng(3), 30)[0].tolist())
    cfg = CompareConfig(objective="portfolio", matrix=matrix, steps=2500, fw_steps=("away", "open-loop"))
    clean, resumed = CompareJob(cfg), CompareJob(cfg)
    while not clean.done:
        clean.advance()
    _resumed(CompareJob(cfg), resumed, 2)
    for a, b in zip(clean.results, resumed.results, strict=True):
        assert a["method"] == b["method"] and a["iters"] == b["iters"] and torch.equal(a["p"], b["p"])
    scfg = SimplexConfig(objective="portfolio", matrix=matrix, method="exponentiated-gradient", steps=2500)
    clean_s, resumed_s = SimplexJob(scfg), SimplexJob(scfg)
    while not clean_s.done:
        clean_s.advance()
    _resumed(SimplexJob(scfg), resumed_s, 1)
    assert torch.equal(clean_s.run.p, resumed_s.run.p) and clean_s.run.t == resumed_s.run.t
