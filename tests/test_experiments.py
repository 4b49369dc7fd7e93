"""Recipes, sweeps (submitit local/debug executors) and reports, driven through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gentool.cli.experiments import parse_overrides
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.experiments.points import point_id
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import DONE, expand
from typer.testing import CliRunner

runner = CliRunner()

SIMPLEX = """
command = "optimize simplex"
[options]
objective = "softmax"
x = [1, 0.5, -1]
steps = 20
progress = false
plots = false
[sweep]
method = ["frank-wolfe", "exponentiated-gradient", "projected-gradient", "softmax-gd"]
seeds = [0, 1]
[smoke]
steps = 5
"""


def _recipe(tmp_path: Path, text: str = SIMPLEX, name: str = "simplex.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _pid(method: str, seed: int) -> str:
    return point_id({"method": method}, seed)


def _done(sweep_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob(f"*/{DONE}")}


def test_sweep_4x2_local_executor_then_report_merges_8_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "--executor", "local", "--parallel", "2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "8 points: 8 completed, 0 skipped" in res.output
    assert len(_done(out)) == 8
    assert list((out / "submitit").glob("*_result.pkl")), "jobs did not go through submitit's local executor"
    point = json.loads((out / _pid("softmax-gd", 1) / "point.json").read_text())
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
    fw0, sgd1 = _pid("frank-wolfe", 0), _pid("softmax-gd", 1)
    (out / fw0 / DONE).unlink()
    (out / fw0 / "metrics.jsonl").unlink()
    (out / fw0 / ".metrics.jsonl.x1.tmp").write_text('{"iter": 0, "gap": 1.0, "obj')
    shutil.rmtree(out / sgd1)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "4 points: 2 completed, 2 skipped" in res.output
    after = _done(out)
    assert set(after) == set(before)
    rerun = {k for k in after if after[k] != before[k]}
    assert rerun == {fw0, sgd1}
    rows = [json.loads(line) for line in (out / fw0 / "metrics.jsonl").open()]
    assert rows[0]["iter"] == 0 and len(rows) >= 2
    assert not list((out / fw0).glob(".*.tmp"))


@pytest.mark.parametrize(("text", "needle"), [
    (SIMPLEX.replace("steps = 20", "stesp = 20"),
     "unknown setting of 'optimize simplex' 'stesp' (did you mean 'steps'?)"),
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
    assert config["config"]["steps"] == 3 and config["config"]["method"] == "softmax-gd"
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


def test_slurm_executor_without_slurm_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
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
    assert smoke.options["steps"] == 5 and recipe.options["steps"] == 20
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


def test_point_ids_are_injective_in_the_exact_values(tmp_path: Path) -> None:
    """Values whose slugs collide (sign, separators, types) get different directories; the id keeps a
    readable slug; the same values always give the same id."""
    pairs = [({"tol": 0.001}, {"tol": -0.001}), ({"x": "-1,0,0.5"}, {"x": "1,0,0.5"}),
             ({"n": 1}, {"n": 1.0}), ({"n": 1}, {"n": "1"}), ({"a": "x y"}, {"a": "x-y"})]
    for a, b in pairs:
        assert point_id(a, 0) != point_id(b, 0), (a, b)
        assert point_id(a, 0) == point_id(dict(a), 0)
    assert point_id({"tol": 0.001}, 3).startswith("tol-0.001__seed-3__")
    assert len(point_id({"x": "y" * 500}, 0)) < 140
    text = SIMPLEX.replace('method = ["frank-wolfe", "exponentiated-gradient", "projected-gradient", "softmax-gd"]',
                           "tol = [0.001, -0.001]").replace("seeds = [0, 1]", "seeds = [0]")
    points = expand(load_recipe(_recipe(tmp_path, text)), tmp_path / "s")
    assert len({p.run_dir for p in points}) == 2 and [p.params["tol"] for p in points] == [0.001, -0.001]


def test_old_point_directories_are_reused_only_when_their_point_json_matches(tmp_path: Path) -> None:
    from gentool.core.experiments.points import POINT, legacy_point_id

    recipe = load_recipe(_recipe(tmp_path))
    old = tmp_path / "s" / legacy_point_id({"method": "frank-wolfe"}, 0)
    old.mkdir(parents=True)
    (old / POINT).write_text(json.dumps({"params": {"method": "frank-wolfe"}, "seed": 0}))
    ids = [p.point_id for p in expand(recipe, tmp_path / "s")]
    assert ids[0] == old.name and ids[1] == _pid("frank-wolfe", 1)
    (old / POINT).write_text(json.dumps({"params": {"method": "softmax-gd"}, "seed": 0}))
    assert expand(recipe, tmp_path / "s")[0].point_id == _pid("frank-wolfe", 0)


def test_a_rerun_with_other_settings_does_not_report_the_old_points_as_complete(tmp_path: Path) -> None:
    """The smoke sweep (steps 5), then the full one (steps 20) into the same directory: the same point ids,
    but their runs hold other settings, so the sweep is refused naming them (not "skipped, complete already"
    with the old numbers); the same sweep again skips its complete points."""
    path, out = _recipe(tmp_path), tmp_path / "s"
    smoke = runner.invoke(app, ["sweep", str(path), "--smoke", "--executor", "debug", "--out", str(out)])
    assert smoke.exit_code == 0, smoke.output
    full = runner.invoke(app, ["sweep", str(path), "--executor", "debug", "--out", str(out)])
    assert full.exit_code == 2 and "holds a point of another sweep" in full.output, full.output
    assert "(other settings, seed or unit range: steps)" in full.output
    again = runner.invoke(app, ["sweep", str(path), "--smoke", "--executor", "debug", "--out", str(out)])
    assert again.exit_code == 0 and "8 skipped (complete already)" in again.output, again.output


@pytest.mark.parametrize(("edit", "args", "needle"), [
    (('"projected-gradient", "softmax-gd"]', '"projected-gradient", "frank-wolfe"]'), [],
     "duplicate sweep points: {'method': 'frank-wolfe'} and {'method': 'frank-wolfe'}"),
    (("seeds = [0, 1]", "seeds = [1, 1]"), [], "duplicate sweep points"),
    (("", ""), ["--method", "softmax-gd"], "cannot override method: the recipe sweeps over it"),
    (("", ""), ["--seed", "3"], "cannot override seed: the recipe sweeps over it"),
])
def test_duplicate_points_and_overrides_of_swept_keys_are_refused(tmp_path: Path, edit: tuple[str, str],
                                                                  args: list[str], needle: str) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path, SIMPLEX.replace(*edit))), "--executor", "debug",
                              "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert not out.exists()


SLOW_MAD = """
command = "mad-loop"
[options]
family = "gaussian"
data = "gaussian"
dim = 2
generations = GENS
seeds = 2
n-real = 20
n-synth = 20
n-test = 50
device = "cpu"
progress = false
plots = false
[sweep]
loop = ["fresh", "accumulate"]
"""
GENTOOL = Path(sys.executable).with_name("gentool")


def _units(run_dir: Path) -> int:
    return len(list((run_dir / "units").glob("*.jsonl"))) if (run_dir / "units").is_dir() else 0


def _wait_for(cond: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _start_sweep(tmp_path: Path, gens: int, *args: str) -> tuple[subprocess.Popen[str], Path, list[Path]]:
    recipe = _recipe(tmp_path, SLOW_MAD.replace("GENS", str(gens)), f"mad{gens}.toml")
    out = tmp_path / f"s{gens}"
    proc = subprocess.Popen([str(GENTOOL), "sweep", str(recipe), "--out", str(out), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    dirs = [out / point_id({"loop": loop}, None) for loop in ("fresh", "accumulate")]
    return proc, out, dirs


@pytest.mark.slow
def test_ctrl_c_stops_a_debug_sweep_and_the_next_point_never_starts(tmp_path: Path) -> None:
    proc, out, (first, second) = _start_sweep(tmp_path, 3000, "--executor", "debug")
    try:
        _wait_for(lambda: _units(first) >= 2, 400, "two committed units of the first point")
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, text
    assert "interrupted: the running point stopped after its last committed unit" in text
    assert not (first / DONE).exists() and not (second / "config.json").exists(), text
    assert "Traceback" not in text


@pytest.mark.slow
def test_ctrl_c_stops_local_workers_and_a_killed_sweeps_orphans_are_stopped_by_the_rerun(tmp_path: Path) -> None:
    """SIGINT to the sweep alone: it stops its local workers before it exits (exit 130, the message says the
    re-run resumes). SIGKILL to the sweep: its workers live on; the re-run stops them before it submits, so
    no point ever has two workers, and every point completes with all its units."""
    from gentool.core.experiments import workers

    proc, out, dirs = _start_sweep(tmp_path, 3000, "--executor", "local", "--parallel", "2")
    try:
        _wait_for(lambda: all(_units(d) >= 2 for d in dirs), 400, "both points running")
        recorded = workers.recorded(out)
        assert len(recorded) == 2 and all(workers.alive(w) for w in recorded)
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, text
        assert "interrupted: the local workers were stopped" in text and "Traceback" not in text
        assert not any(workers.alive(w) for w in recorded)
        assert not [p for w in recorded for p in workers.descendants(w.pid)]

        proc, out, dirs = _start_sweep(tmp_path, 300, "--executor", "local", "--parallel", "2")
        _wait_for(lambda: all(_units(d) >= 2 for d in dirs), 400, "both points running again")
        orphans = workers.recorded(out)
        proc.kill()
        proc.wait(timeout=30)
        assert all(workers.alive(w) for w in orphans), "the workers of a SIGKILLed sweep live on"
        done = subprocess.run([str(GENTOOL), "sweep", str(out.parent / "mad300.toml"), "--out", str(out),
                               "--executor", "local", "--parallel", "2"], text=True, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stopped 2 local worker(s) left running by an earlier run of this sweep" in done.stdout
        assert not any(workers.alive(w) for w in orphans)
        for d in dirs:
            assert json.loads((d / DONE).read_text())["units"] == 300 and _units(d) == 300
    finally:
        proc.kill()
        for w in workers.recorded(out):
            workers.stop([w], grace_s=0.5)


def test_overrides_are_typed_like_the_value_they_replace(tmp_path: Path) -> None:
    from gentool.core.experiments.recipe import override_value

    assert override_value("3", 20) == 3 and override_value("3", 0.5) == 3.0 and isinstance(override_value("3", 0.5),
                                                                                            float)
    assert override_value("123", "gmm-ring") == "123" and override_value("heun", "euler") == "heun"
    assert override_value("[euler,heun]", ["a"]) == ["euler", "heun"] and override_value("[5, 10]", [1]) == [5, 10]
    assert override_value("true", False) is True and override_value("1e-3", None) == 0.001
    recipe = load_recipe(_recipe(tmp_path), overrides=["options.x=[1, 2, 3]", "sweep.method=[softmax-gd,frank-wolfe]",
                                                       "sweep.seeds=[4]", "slurm.time=120", "options.log_every=2"])
    assert recipe.options["x"] == [1, 2, 3] and recipe.sweep["method"] == ["softmax-gd", "frank-wolfe"]
    assert recipe.seeds == [4] and recipe.slurm["time"] == 120 and recipe.options["log_every"] == 2
    assert recipe.data["options"]["x"] == [1, 2, 3] and recipe.overrides[0] == "options.x=[1, 2, 3]"


@pytest.mark.parametrize(("override", "needle"), [
    ("options.objectiv=kl", "unknown override 'options.objectiv=kl' (expected table.key=value); closest valid "
                            "keys: options.objective"),
    ("option.objective=kl", "closest valid keys: options.objective"),
    ("slurm.acount=x", "closest valid keys: slurm.account"),
    ("options.method=softmax-gd", "cannot override method: the recipe sweeps over it (sweep.method)"),
    ("options.seed=3", "cannot override seed: the recipe sweeps over it (sweep.seeds)"),
    ("options.lr=-1", "lr must be a finite number > 0"),
    ("slurm.time=0", "time must be an integer >= 1"),
])
def test_bad_overrides_are_one_line_exit_2(tmp_path: Path, override: str, needle: str) -> None:
    path = _recipe(tmp_path)
    commands = (["run", str(path), override, "--out", str(tmp_path / "r")],
                ["sweep", str(path), override, "--out", str(tmp_path / "s"), "--executor", "debug"])
    for args in commands[1:] if "sweeps over" in needle else commands:  # `run` ignores the sweep table
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_run_with_overrides_records_the_effective_recipe(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = runner.invoke(app, ["run", str(_recipe(tmp_path)), "options.log_every=5", "options.method=softmax-gd",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["log_every"] == 5 and config["method"] == "softmax-gd"
    recorded = json.loads((out / "recipe.json").read_text())
    assert recorded["overrides"] == ["options.log_every=5", "options.method=softmax-gd"]
    assert recorded["effective"]["options"]["log-every"] == 5
    assert recorded["effective"]["options"]["method"] == "softmax-gd"


def test_sweep_override_of_the_grid_changes_the_points_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["sweep", str(_recipe(tmp_path)), "sweep.method=[softmax-gd]", "sweep.seeds=[3]",
                              "options.log_every=5", "--executor", "debug", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 points: 1 completed" in res.output
    point = json.loads((out / _pid("softmax-gd", 3) / "point.json").read_text())
    assert point["options"]["log_every"] == 5 and point["recipe"]["overrides"][0] == "sweep.method=[softmax-gd]"
    assert point["recipe"]["effective"]["sweep"]["method"] == ["softmax-gd"]


@pytest.mark.slow
def test_must_show_mad_gaussian_recipe_with_three_generations(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "r"
    res = runner.invoke(app, ["run", str(root / "recipes" / "mad-gaussian.toml"), "options.generations=3",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "DONE.json").read_text())["units"] == 3
    res = runner.invoke(app, ["run", str(root / "recipes" / "mad-gaussian.toml"), "options.nope=1", "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown override 'options.nope=1'" in res.output


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                               (0o077, 0o600, 0o700)])
def test_run_directory_files_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    """Collaborators in a shared directory can read (under umask 002: write) what a run wrote; every file
    is still written atomically (no temp files left)."""
    out = tmp_path / "r"
    old = os.umask(umask)
    try:
        res = runner.invoke(app, ["run", str(_recipe(tmp_path)), "options.method=softmax-gd", "--out", str(out)])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"config.json", "DONE.json", "metrics.jsonl", "state.pt", "recipe.json", ".gentool.lock"} <= {
        p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(file_mode) for p in files}
    assert all(d.stat().st_mode & 0o777 == dir_mode for d in [out, *(p for p in out.rglob("*") if p.is_dir())])
    assert not list(out.rglob("*.tmp"))


def test_threads_default_to_slurms_cpus_per_task_and_are_recorded(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from gentool.core.run.device import resolve_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert resolve_threads(None) == before and resolve_threads(2) == 2  # not inside a Slurm job
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert resolve_threads(None) == 3 and resolve_threads(5) == 5
    for bad in (0, -1, True):
        with pytest.raises(BadInput, match="threads must be an integer >= 1"):
            resolve_threads(bad)
    try:
        res = runner.invoke(app, ["optimize", "simplex", "--objective", "softmax", "--x", "1,0.5,-1", "--threads",
                                  "2", "--out", str(tmp_path / "a"), "--no-plots"])
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / "a" / "config.json").read_text())["env"]["threads"] == 2
        res = runner.invoke(app, ["optimize", "simplex", "--objective", "softmax", "--x", "1,0.5,-1", "--out",
                                  str(tmp_path / "b"), "--no-plots"])  # inside the (pretend) Slurm job: 3
        assert res.exit_code == 0 and json.loads((tmp_path / "b" / "config.json").read_text())["env"]["threads"] == 3
        res = runner.invoke(app, ["run", str(_recipe(tmp_path)), "options.threads=1", "--out", str(tmp_path / "c")])
        assert res.exit_code == 0 and json.loads((tmp_path / "c" / "config.json").read_text())["env"]["threads"] == 1
        res = runner.invoke(app, ["optimize", "simplex", "--threads", "0", "--out", str(tmp_path / "d")])
        assert res.exit_code == 2 and "threads must be an integer >= 1, got 0" in res.output
        assert not (tmp_path / "d").exists()
    finally:
        torch.set_num_threads(before)


MAD_ARGS = ["--family", "gaussian", "--data", "gaussian", "--dim", "2", "--n-real", "20", "--n-synth", "20",
            "--n-test", "50", "--device", "cpu", "--no-progress", "--no-plots"]


def _same_run(a: Path, b: Path) -> None:
    """Two mad-loop run directories hold the same rows, summary and samples (byte for byte)."""
    import numpy as np

    for name in ("metrics.jsonl", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / DONE).read_text())["summary"] == json.loads((b / DONE).read_text())["summary"]
    with np.load(a / "samples.npz") as x, np.load(b / "samples.npz") as y:
        assert x["x"].dtype == y["x"].dtype and x["x"].tobytes() == y["x"].tobytes()
    configs = [json.loads((d / "config.json").read_text()) for d in (a, b)]
    assert configs[0]["config"] == configs[1]["config"] and configs[0]["seed"] == configs[1]["seed"]


def test_shard_ranges_cover_the_units_in_order() -> None:
    from gentool.core.experiments.shards import shard_ranges

    assert shard_ranges(200, 4) == [(0, 50), (50, 100), (100, 150), (150, 200)]
    assert shard_ranges(7, 3) == [(0, 2), (2, 4), (4, 7)] and shard_ranges(1, 1) == [(0, 1)]
    for bad in (0, 8, -1, True):
        with pytest.raises(BadInput, match=r"shards must be an integer in \[1, 7\]"):
            shard_ranges(7, bad)


def test_200_seed_mad_loop_over_4_shards_merges_to_the_unsharded_run(tmp_path: Path) -> None:
    """Each shard runs 50 seeds in its own part directory; the merge equals the unsharded run exactly, and
    `gentool merge` redoes it; shards beyond the seeds and unshardable commands are refused."""
    args = ["mad-loop", *MAD_ARGS, "--generations", "3", "--seeds", "200", "--seed", "5"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--shards", "4", "--executor", "debug", "--out", str(tmp_path / "sharded")])
    assert res.exit_code == 0, res.output
    assert "4 shards merged, 3 units" in res.output
    parts = sorted((tmp_path / "sharded" / "parts").glob("000?"))
    assert [json.loads((p / "config.json").read_text())["seed"] for p in parts] == [5, 55, 105, 155]
    _same_run(tmp_path / "plain", tmp_path / "sharded")
    res = runner.invoke(app, ["merge", str(tmp_path / "sharded")])
    assert res.exit_code == 0, res.output
    _same_run(tmp_path / "plain", tmp_path / "sharded")
    res = runner.invoke(app, [*args, "--shards", "201", "--executor", "debug", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "shards must be an integer in [1, 200]" in res.output
    assert "--shards" not in runner.invoke(app, ["optimize", "simplex", "--help"]).output
    res = runner.invoke(app, ["merge", str(tmp_path / "plain")])
    assert res.exit_code == 2 and "holds no sharded run" in res.output


@pytest.mark.slow
def test_a_shard_killed_mid_run_is_resumed_alone_and_the_merge_still_equals_the_unsharded_run(tmp_path: Path
                                                                                               ) -> None:
    args = ["mad-loop", *MAD_ARGS, "--generations", "150", "--seeds", "8"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    out = tmp_path / "sharded"
    cmd = [str(GENTOOL), *args, "--shards", "2", "--executor", "local", "--out", str(out)]
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = out / "parts" / "0001"
    try:
        _wait_for(lambda: _units(second) >= 3, 400, "three committed units of the second shard")
        holder = int((second / ".gentool.lock").read_text().rsplit("pid ", 1)[1].rstrip(")"))
        os.kill(holder, signal.SIGKILL)
        text, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 1, text
    assert "shard 0001 failed" in text and not (second / DONE).exists() and (out / "parts" / "0000" / DONE).exists()
    first_done = (out / "parts" / "0000" / DONE).stat().st_mtime_ns
    early = {n: (second / "units" / n).stat().st_mtime_ns for n in ("000001.jsonl", "000002.jsonl")}
    done = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "parts" / "0000" / DONE).stat().st_mtime_ns == first_done  # the complete shard was not re-run
    assert {n: (second / "units" / n).stat().st_mtime_ns for n in early} == early  # resumed, not restarted
    _same_run(tmp_path / "plain", out)


def test_run_warns_when_it_leaves_swept_settings_to_the_options_table(tmp_path: Path) -> None:
    """`gentool run` on a recipe with a sweep runs one job: the swept settings not given as arguments are named
    in a one-line warning; with all of them given there is none."""
    path = _recipe(tmp_path)
    res = runner.invoke(app, ["run", str(path), "--method", "softmax-gd", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "warning: simplex sweeps over seed; gentool run runs one job" in res.output
    res = runner.invoke(app, ["run", str(path), "--method", "softmax-gd", "--seed", "1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0 and "sweeps over" not in res.output, res.output
