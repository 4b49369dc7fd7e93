"""Recipes, sweeps (submitit local/debug executors) and reports, driven through the real CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from gentool.cli.experiments import parse_overrides
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import DONE, expand
from typer.testing import CliRunner

runner = CliRunner()

SIMPLEX = """
command = "optimize simplex"
[options]
objective = "sparsemax"
x = [1, 0.5, -1]
iters = 20
progress = false
[sweep]
method = ["frank-wolfe", "exponentiated-gradient", "projected-gradient", "softmax-gd"]
seeds = [0, 1]
[smoke]
iters = 5
"""


def _recipe(tmp_path: Path, text: str = SIMPLEX, name: str = "simplex.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _done(sweep_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob(f"*/{DONE}")}


def test_sweep_4x2_local_executor_then_report_merges_8_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "local", "--parallel", "2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "8 points: 8 run, 0 skipped" in res.output
    assert len(_done(out)) == 8
    assert list((out / "submitit").glob("*_result.pkl")), "jobs did not go through submitit's local executor"
    point = json.loads((out / "method-softmax-gd__seed-1" / "point.json").read_text())
    assert point["params"] == {"method": "softmax-gd"} and point["seed"] == 1
    assert point["recipe"]["command"] == "optimize simplex"
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len({r["point"] for r in rows}) == 8
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in
                                                        ("frank-wolfe", "exponentiated-gradient",
                                                         "projected-gradient", "softmax-gd") for s in "01"}
    assert {"gap", "objective", "iter", "source"} <= set(rows[0])
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"] == ["method"] and len(report["rows"]) == len(rows)
    assert (out / "objective_vs_iter.png").is_file()


def test_killed_sweep_rerun_completes_only_missing_points(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    small = SIMPLEX.replace('"exponentiated-gradient", "projected-gradient", ', "")  # 2 methods x 2 seeds
    args = ["sweep", str(_recipe(tmp_path, small)), "--smoke", "--executor", "debug", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = _done(out)
    # A kill leaves points without their marker: one half-written (and a temp file of a torn write), one never
    # started.
    (out / "method-frank-wolfe__seed-0" / DONE).unlink()
    (out / "method-frank-wolfe__seed-0" / "metrics.jsonl").unlink()
    (out / "method-frank-wolfe__seed-0" / ".metrics.jsonl.x1.tmp").write_text('{"iter": 0, "gap": 1.0, "obj')
    shutil.rmtree(out / "method-softmax-gd__seed-1")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "4 points: 2 run, 2 skipped" in res.output
    after = _done(out)
    assert set(after) == set(before)
    rerun = {k for k in after if after[k] != before[k]}
    assert rerun == {"method-frank-wolfe__seed-0", "method-softmax-gd__seed-1"}
    rows = [json.loads(line) for line in (out / "method-frank-wolfe__seed-0" / "metrics.jsonl").open()]
    assert rows[0]["iter"] == 0 and len(rows) >= 2
    assert not list((out / "method-frank-wolfe__seed-0").glob(".*.tmp"))


@pytest.mark.parametrize(("text", "needle"), [
    (SIMPLEX.replace("iters = 20", "itres = 20"),
     "unknown setting of 'optimize simplex' 'itres' (did you mean 'iters'?)"),
    (SIMPLEX.replace('method = ["frank', 'methd = ["frank'), "'methd' (did you mean 'method'?)"),
    (SIMPLEX.replace("[smoke]", "[smokee]"), "unknown top-level key 'smokee' (did you mean 'smoke'?)"),
    (SIMPLEX.replace('"optimize simplex"', '"optimize simplx"'), "unknown command 'optimize simplx'"),
    (SIMPLEX.replace("seeds = [0, 1]", "seeds = []"), "sweep.seeds must be a non-empty list"),
    ("command = [", "invalid TOML"),
])
def test_invalid_recipe_is_one_line_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    path = _recipe(tmp_path, text)
    for cmd in ("run", "sweep"):
        res = runner.invoke(app, [cmd, str(path), "--out", str(tmp_path / "o")] if cmd == "sweep"
                            else [cmd, str(path)])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert not (tmp_path / "o").exists()


def test_run_appends_cli_flags_that_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path)
    res = runner.invoke(app, ["run", str(path), "--iters", "3", "--method", "softmax-gd"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "runs" / "simplex" / "config.json").read_text())
    assert config["config"]["iters"] == 3 and config["config"]["method"] == "softmax-gd"
    trace = (tmp_path / "runs" / "simplex" / "metrics.jsonl").read_text().splitlines()
    assert len(trace) == 4  # iterations 0..3


def test_run_reports_command_errors_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(_recipe(tmp_path)), "--method", "newton", "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 2 and "newton" in res.output


def test_missing_recipe_and_report_dir_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["run", str(tmp_path / "nope.toml")]).exit_code == 2
    res = runner.invoke(app, ["report", str(tmp_path / "nodir")])
    assert res.exit_code == 2 and "sweep directory not found" in res.output
    (tmp_path / "empty").mkdir()
    assert runner.invoke(app, ["report", str(tmp_path / "empty")]).exit_code == 2


@pytest.mark.skipif(shutil.which("srun") is not None, reason="slurm is available here")
def test_slurm_executor_without_slurm_is_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "slurm", "--partition", "gpu",
                              "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "executor 'slurm' is not available here" in res.output
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "slurmm"])
    assert res.exit_code == 2 and "did you mean 'slurm'" in res.output


def test_expand_grid_smoke_and_overrides(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path))
    points = expand(recipe, tmp_path / "s", parse_overrides(["--tol", "1e-3"]))
    assert len(points) == 8 and len({p.run_dir for p in points}) == 8
    assert points[0].run_dir == str(tmp_path / "s" / points[0].point_id)
    assert points[0].options["x"] == [1, 0.5, -1] and points[0].options["tol"] == "1e-3"
    assert {p.run["seed"] for p in points} == {0, 1} and points[0].run["progress"] is False
    smoke = load_recipe(_recipe(tmp_path), smoke=True)
    assert smoke.options["iters"] == 5 and recipe.options["iters"] == 20
    assert parse_overrides(["--progress", "--log-every", "2", "--no-plots", "--x=1,2"]) == {
        "progress": True, "log-every": "2", "plots": False, "x": "1,2"}
    with pytest.raises(BadInput, match="did you mean 'tol'"):
        expand(recipe, tmp_path / "s", {"toll": "1e-3"})
    with pytest.raises(BadInput, match="tol must be a finite number"):
        expand(recipe, tmp_path / "s", {"tol": "nan"})


def test_the_same_recipe_runs_from_python_and_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gentool.core.experiments import run_recipe

    monkeypatch.chdir(tmp_path)
    path = _recipe(tmp_path)
    res = run_recipe(path, tmp_path / "py", iters=7, seed=1)
    assert res.rows[-1]["iter"] == 7 and res.out == tmp_path / "py"
    cli = runner.invoke(app, ["run", str(path), "--iters", "7", "--seed", "1", "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert (tmp_path / "py" / "metrics.jsonl").read_text() == (tmp_path / "cli" / "metrics.jsonl").read_text()
