"""The probe list of issue 25 for every job command, generated from the commands' configs (so a new option is
probed without editing this file): each float option given nan, inf, -inf, 1e308, -1e308; each count option 0,
-1, 2**63; each path option '', a file where a directory is expected and a directory where a file is expected,
a path in a missing directory, a read-only directory. Every probe ends with a documented exit code (0, 2, 3 or 4;
NaN and '' always 2), no traceback, at most one `error:` line, and a refused new run leaves no directory.

Each option is probed where it applies: the choices its `applies` declaration names are selected first (a model
from a tiny `train` run where the setting is for models), so the value itself is what is checked. The experiment
commands (run, sweep, report, merge) get the path probes on their recipe, directories and --out.

The whole sweep is `slow`; the default suite runs a representative subset (`FAST`)."""

from __future__ import annotations

import os
import signal
import typing
from pathlib import Path
from typing import Any

import pytest
from gentool.cli.main import app
from gentool.core.config import config_fields, field_types
from gentool.core.jobs import JOBS
from typer.testing import CliRunner

runner = CliRunner()

BASE = {  # each job command with options that keep an accepted probe cheap
    "sample": ["sample", "--target", "gaussian", "--steps", "2", "-n", "8", "--no-reference"],
    "tune": ["tune", "--target", "gaussian", "--nfe", "2", "--steps", "1", "--train-samples", "8",
             "--eval-samples", "8"],
    "train": ["train", "--steps", "2", "--checkpoint-every", "2", "--n-train", "20", "--width", "8", "--depth", "1",
              "--batch-size", "8"],
    "bound": ["bound", "--target", "gaussian", "--perturb", "0.1", "-n", "8", "--steps", "2", "--n-w2", "8",
              "--w2-levels", "2"],
    "monoflow": ["monoflow", "--steps", "2", "--eval-every", "2", "-n", "16", "--n-train", "32", "--hidden", "8",
                 "--batch-size", "8"],
    "optimize simplex": ["optimize", "simplex", "--steps", "3"],
    "optimize compare": ["optimize", "compare", "--steps", "3"],
    "optimize particles": ["optimize", "particles", "-n", "8", "--time", "0.02", "--step-size", "0.01"],
    "optimize topk": ["optimize", "topk", "--x", "3,1,2", "--k", "1"],
    "mad-loop": ["mad-loop", "--generations", "1", "--seeds", "1", "--n-real", "20", "--n-test", "20"],
}
FLOATS = ("nan", "inf", "-inf", "1e308", "-1e308")
COUNTS = ("0", "-1", str(2**63))
PATHS = ("''", "file-for-dir", "dir-for-file", "missing-parent", "read-only-dir")
PATH_FIELDS = {"PATH": "file", "FILE": "file", "DIR": "dir"}


def _kind(field: Any, hint: Any) -> str | None:
    """float, count, file, dir or None (not probed here: names, vectors, schedules, switches)."""
    metavar = field.metadata.get("metavar")
    if metavar in PATH_FIELDS:
        return PATH_FIELDS[metavar]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if field.metadata.get("choices") or field.metadata.get("parse") or len(args) != 1:
        return "file" if args[0] is Path else None
    return {float: "float", int: "count", Path: "file"}.get(args[0])


def _flag(command: str, name: str) -> str:
    short = {f.name: f.metadata.get("short") for f in config_fields(JOBS[command].config)}.get(name)
    return short or "--" + name.replace("_", "-")


RECIPE = 'description = "probe"\ncommand = "optimize topk"\n[options]\nx = [3, 1, 2]\nk = 1\n[sweep]\nseeds = [0, 1]\n'
EXPERIMENTS = {  # the experiment commands: argv with RECIPE, SWEEP (a finished sweep), RUN (a finished run), OUT
    "run": ["run", "RECIPE", "--out", "OUT", "--no-progress", "--no-plots"],
    "sweep": ["sweep", "RECIPE", "--executor", "debug", "--out", "OUT"],
    "report": ["report", "SWEEP", "--out", "OUT", "--no-plots"],
    "report --compare": ["report", "--compare", "RUN", "--out", "OUT", "--no-plots"],
    "merge": ["merge", "RUN"],
}
SLOT_KINDS = {"RECIPE": "file", "SWEEP": "dir", "RUN": "dir", "OUT": "out"}
MODEL = "MODEL"  # stands for the tiny trained model (the `tiny_model` fixture)
OBJECTIVES = {"module:function": "simplex_problems:square"}  # (tests/simplex_problems.py)
SELECT = {  # choices that need another setting besides their own
    ("optimize simplex", "objective_kind", "quadratic"): ["--matrix", "2,0,0;0,2,0;0,0,2"],
    ("optimize compare", "objective_kind", "quadratic"): ["--matrix", "2,0,0;0,2,0;0,0,2"],
    ("train", "arch", "unet"): ["--data", "digits"],
    ("mad-loop", "loop", "reservoir"): ["--budget", "10"],
    ("sample", "sampler", "ddim"): ["--grid", "model"],
}


def _drop(argv: list[str], option: str) -> list[str]:
    """`argv` without `option` and its value."""
    if option not in argv:
        return argv
    i = argv.index(option)
    return argv[:i] + argv[i + 2:]


def applicable(command: str, name: str) -> list[str]:
    """The base argv of `command` with the choices where setting `name` applies (the first one each of its
    `applies` keys names): `source` model replaces the base's target by the tiny model."""
    field = {f.name: f for f in config_fields(JOBS[command].config)}[name]
    argv = list(BASE[command])
    for key, allowed in field.metadata.get("applies", {}).items():
        choice = allowed[0]
        if key == "objective_kind":  # a built-in objective, or a module:function one from the tests' helpers
            argv = _drop(argv, "--objective") + ["--objective", OBJECTIVES.get(choice, choice)]
        elif key == "source":
            argv = _drop(_drop(argv, "--target"), "--perturb") + (["--model", MODEL] if choice == "model" else
                                                                  ["--target", choice])
            argv = [a for a in argv if a != "--no-reference" or choice != "model"]  # (targets only)
            argv += ["--perturb", "0.1"] if command == "bound" and choice != "model" else []
        else:
            argv = _drop(argv, "--" + key.replace("_", "-")) + ["--" + key.replace("_", "-"), choice]
        argv += SELECT.get((command, key, choice), [])
    return argv


def probes() -> list[tuple[str, str, str, str]]:
    """(command, option, kind, value) for every probed option of every job command, plus --out, and for every
    path slot of the experiment commands."""
    cases = []
    for command in BASE:
        hints = field_types(JOBS[command].config)
        for field in config_fields(JOBS[command].config):
            kind = _kind(field, hints[field.name])
            values = {"float": FLOATS, "count": COUNTS, "file": PATHS, "dir": PATHS}.get(kind or "", ())
            cases += [(command, _flag(command, field.name), kind, v) for v in values]
        cases += [(command, "--out", "out", v) for v in PATHS]
    for command, argv in EXPERIMENTS.items():
        cases += [(command, slot, SLOT_KINDS[slot], v) for slot in argv if slot in SLOT_KINDS for v in PATHS]
    return cases


ALL = probes()
FAST = [c for c in ALL if c[3] in ("nan", str(2**63), "''")]  # refused at once: cheap, and they found bugs


def _value(kind: str, probe: str, tmp: Path) -> str:
    """The command-line text of a probe (files and directories created under `tmp`)."""
    (tmp / "a-file").write_text("not what was asked for\n")
    (tmp / "a-dir").mkdir(exist_ok=True)
    readonly = tmp / "read-only"
    readonly.mkdir(exist_ok=True)
    readonly.chmod(0o500)
    expects_dir = kind in ("dir", "out")
    return {"''": "", "file-for-dir": str(tmp / "a-file"), "dir-for-file": str(tmp / "a-dir"),
            "missing-parent": str(tmp / "missing" / ("sub" if expects_dir else "x.npy")),
            "read-only-dir": str(readonly / "x") if expects_dir else str(readonly)}.get(probe, probe)


def _argv(command: str, option: str, value: str, out: Path, fixtures: dict[str, str]) -> list[str]:
    """The command line of a probe: `value` for `option` (an experiment command's slot), the rest from the base
    (for a job command, where the option applies), `out` as the run directory, the fixtures' paths."""
    if command in EXPERIMENTS:
        slots = {**fixtures, "OUT": str(out), option: value}
        return [slots.get(a, a) for a in EXPERIMENTS[command]]
    name = next((f.name for f in config_fields(JOBS[command].config) if _flag(command, f.name) == option), None)
    base = _drop(applicable(command, name) if name else list(BASE[command]), option)  # the probe replaces it
    argv = [fixtures.get(a, a) for a in [*base, option, value]]
    if option != "--out":
        argv += ["--out", str(out)]
    return [*argv, "--no-progress", "--no-plots"]


def _fixtures(command: str, option: str, request: pytest.FixtureRequest, tmp: Path) -> dict[str, str]:
    """The paths a probe's command line names: the tiny model, a recipe, a finished sweep and run."""
    out: dict[str, str] = {}
    name = next((f.name for f in config_fields(JOBS[command].config) if _flag(command, f.name) == option),
                None) if command in JOBS else None
    if name and MODEL in applicable(command, name):
        out[MODEL] = request.getfixturevalue("tiny_model")
    if command in EXPERIMENTS:
        (tmp / "probe.toml").write_text(RECIPE)
        out["RECIPE"] = str(tmp / "probe.toml")
        if command.startswith("report") or command == "merge":
            out.update(request.getfixturevalue("finished_sweep"))
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A `gentool train` run on ring data (an analytic law, so bound takes it), two steps of a tiny MLP."""
    out = tmp_path_factory.mktemp("model") / "ring"
    res = runner.invoke(app, ["train", "--data", "ring", "--steps", "2", "--checkpoint-every", "2", "--n-train", "20",
                              "--width", "8", "--depth", "1", "--batch-size", "8", "--out", str(out), "--no-progress",
                              "--no-plots"])
    assert res.exit_code == 0, res.output
    return str(out)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished sweep of the probe recipe (debug executor) and one of its points' run directories."""
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "probe.toml").write_text(RECIPE)
    res = runner.invoke(app, ["sweep", str(tmp / "probe.toml"), "--executor", "debug", "--out", str(tmp / "s")])
    assert res.exit_code == 0, res.output
    run = next(p.parent for p in (tmp / "s").rglob("DONE.json"))
    return {"SWEEP": str(tmp / "s"), "RUN": str(run)}


class RanTooLong(Exception):
    """An accepted probe that does not finish: a value that should have been refused (2**63 steps) was taken."""


def _alarm(signum: int, frame: Any) -> None:
    raise RanTooLong(f"the probe ran longer than {LIMIT_S} s")


LIMIT_S = 120


def _check(request: pytest.FixtureRequest, tmp_path: Path, command: str, option: str, kind: str, probe: str) -> None:
    if probe == "read-only-dir" and os.geteuid() == 0:
        pytest.skip("running as root: a read-only directory is writable (permission bits do not bind root)")
    out = tmp_path / "run"
    value = _value(kind, probe, tmp_path)
    argv = _argv(command, option, value, out, _fixtures(command, option, request, tmp_path))
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        res = runner.invoke(app, argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        (tmp_path / "read-only").chmod(0o700)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in res.output and not (res.exception and not isinstance(res.exception, SystemExit)), \
        (command, option, value, repr(res.exception), res.output[-2000:])
    assert res.exit_code in (0, 2, 3, 4), (command, option, value, res.exit_code, res.output[-2000:])
    if probe in ("nan", "''"):
        assert res.exit_code == 2, (command, option, value, res.exit_code, res.output[-2000:])
    if res.exit_code:
        assert len(errors) == 1, (command, option, value, res.stderr)
    if res.exit_code == 2 and option not in ("--out", "OUT"):
        assert not out.exists(), f"{command} {option} {value!r}: a refused run left {out} behind"


def _id(case: tuple[str, str, str, str]) -> str:
    return f"{case[0]} {case[1]} {case[3]}"


@pytest.mark.parametrize("case", FAST, ids=[_id(c) for c in FAST])
def test_probe_fast(request: pytest.FixtureRequest, tmp_path: Path, case: tuple[str, str, str, str]) -> None:
    _check(request, tmp_path, *case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in ALL if c not in FAST], ids=[_id(c) for c in ALL if c not in FAST])
def test_probe_all(request: pytest.FixtureRequest, tmp_path: Path, case: tuple[str, str, str, str]) -> None:
    _check(request, tmp_path, *case)


def test_every_command_is_probed() -> None:
    """Every job command has a base command line, every other command (bench aside: it measures, reads no user
    paths) an experiment entry, and every `applies` declaration's choices are selected by `applicable`."""
    assert set(BASE) == set(JOBS)
    others = {c.name for c in app.registered_commands} - {c.split()[0] for c in JOBS}
    assert others <= {c.split()[0] for c in EXPERIMENTS}, others
    for command in JOBS:
        for field in config_fields(JOBS[command].config):
            argv = applicable(command, field.name)
            for key, allowed in field.metadata.get("applies", {}).items():
                flag = {"source": "--model" if allowed[0] == "model" else "--target",
                        "objective_kind": "--objective"}.get(key, "--" + key.replace("_", "-"))
                value = OBJECTIVES.get(allowed[0], allowed[0])
                assert flag in argv and (flag == "--model" or argv[argv.index(flag) + 1] == value), \
                    (command, field.name, argv)


def test_a_module_function_objective_is_found_in_the_working_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--objective mod:fn` with mod.py in the working directory imports it (a console script's sys.path does not
    hold the working directory); a module that is nowhere names where it was looked for; sys.path is left as
    it was."""
    (tmp_path / "objective_in_cwd_probe.py").write_text("def good(p):\n    return (p ** 2).sum()\n")
    monkeypatch.chdir(tmp_path)
    path = list(__import__("sys").path)
    res = runner.invoke(app, ["optimize", "simplex", "--objective", "objective_in_cwd_probe:good", "--dim", "4",
                              "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 0 and "p=0.25, 0.25, 0.25, 0.25" in res.output, res.output
    res = runner.invoke(app, ["optimize", "simplex", "--objective", "no_such_module_xyz:good", "--dim", "4",
                              "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and f"in the working directory {tmp_path}" in res.output, res.output
    assert __import__("sys").path == path
