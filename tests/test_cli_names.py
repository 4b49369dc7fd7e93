"""One naming scheme across commands (`--batch-size`, `-n/--n`, `--steps`, `--lr`; former spellings hidden for
one release), `-V/--version`, shell completion, and the one-line message for a missing optional extra."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
import typer.main
from gentool.cli._common import handle_errors
from gentool.cli.main import app
from gentool.core.config import make_config
from gentool.core.jobs import JOBS
from typer.testing import CliRunner

runner = CliRunner()
# a visible option spelled like this must be spelled the scheme's way
OFF_SCHEME = {"--batch": "--batch-size", "--bs": "--batch-size", "--iters": "--steps", "--iterations": "--steps",
              "--num-steps": "--steps", "--n-steps": "--steps", "--nsteps": "--steps", "--learning-rate": "--lr",
              "--num-samples": "--n", "--n-samples": "--n", "--samples": "--n", "--version": None}
KEBAB = re.compile(r"^--[a-z0-9]+(-[a-z0-9]+)*$")


def _commands() -> dict[str, object]:
    """'path of words' -> click command, for every leaf command of the app."""
    out: dict[str, object] = {}

    def walk(cmd: object, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = cmd

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def _options(cmd: object) -> list[object]:
    return [p for p in cmd.params if p.param_type_name == "option"]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_option_names_follow_the_scheme(name: str) -> None:
    for opt in _options(COMMANDS[name]):
        if opt.hidden:
            continue
        for decl in [*opt.opts, *opt.secondary_opts]:
            if decl.startswith("--"):
                assert KEBAB.match(decl), f"{name}: {decl} is not --kebab-case"
                assert decl not in OFF_SCHEME, f"{name}: {decl} should be {OFF_SCHEME[decl]}"
            else:
                assert decl == "-n" and "--n" in opt.opts, f"{name}: short option {decl} other than -n/--n"
        if "--n" in opt.opts:
            assert "-n" in opt.opts, f"{name}: --n without -n"


def test_the_scheme_is_used_where_the_settings_exist() -> None:
    """Counts of steps are --steps, minibatches --batch-size, learning rates --lr, sample counts -n/--n."""
    visible = {name: {d for o in _options(c) if not o.hidden for d in o.opts} for name, c in COMMANDS.items()}
    assert "--batch-size" in visible["train"] and "--batch-size" in visible["sample"]
    assert {"--steps", "--lr"} <= visible["optimize simplex"] and {"--steps", "--lr"} <= visible["train"]
    assert {"-n", "--n"} <= visible["sample"] and {"-n", "--n"} <= visible["monoflow"]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_hidden_options_are_former_names_of_a_setting(name: str) -> None:
    """Every hidden option is the former spelling of a job setting (declared with `setting(old=...)`)."""
    hidden = [o for o in _options(COMMANDS[name]) if o.hidden]
    spec = next((s for s in JOBS.values() if s.command == name), None)
    fields = [] if spec is None else list(spec.config.__dataclass_fields__.values())
    olds = {"--" + o.replace("_", "-") for f in fields for o in f.metadata.get("old", ())}
    for opt in hidden:
        assert set(opt.opts) <= olds, f"{name}: hidden {opt.opts} is not a declared former name"


@pytest.mark.parametrize(("command", "old", "new", "value"), [
    ("train", "batch", "batch_size", "64"),
    ("optimize simplex", "iters", "steps", "7"),
    ("optimize simplex", "step", "fw_step", "open-loop"),
    ("optimize compare", "iters", "steps", "7"),
])
def test_former_names_still_work(command: str, old: str, new: str, value: str) -> None:
    """A former name builds the same config as the new one (recipes, Python calls and `--resume` use make_config)."""
    spec = JOBS[command]
    assert make_config(spec.config, {old: value}) == make_config(spec.config, {new.replace("_", "-"): value})
    with pytest.raises(Exception, match="given twice"):
        make_config(spec.config, {old: value, new: value})


def test_old_cli_spelling_is_hidden_and_works(tmp_path: Path) -> None:
    args = ["optimize", "simplex", "--objective", "sparsemax", "--no-progress", "--no-plots"]
    old = runner.invoke(app, [*args, "--iters", "3", "--out", str(tmp_path / "old")])
    new = runner.invoke(app, [*args, "--steps", "3", "--out", str(tmp_path / "new")])
    assert old.exit_code == new.exit_code == 0, old.output
    assert (tmp_path / "old" / "metrics.jsonl").read_text() == (tmp_path / "new" / "metrics.jsonl").read_text()
    both = runner.invoke(app, [*args, "--iters", "3", "--steps", "3", "--out", str(tmp_path / "both")])
    assert both.exit_code == 2 and "steps is given twice (--steps, --iters)" in both.stderr
    assert "--iters" not in runner.invoke(app, ["optimize", "simplex", "--help"]).output


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    res = runner.invoke(app, [flag])
    assert res.exit_code == 0 and res.output == f"gentool {metadata.version('gentool')}\n"


def _complete(words: str) -> list[str]:
    """What bash completion offers for the last of `words` (the protocol the installed script speaks)."""
    env = {"_GENTOOL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    res = runner.invoke(app, [], env=env, prog_name="gentool")
    assert res.exit_code == 0, res.output
    return res.output.split()


def test_install_completion_writes_the_script_and_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("bash", "/bin/bash"))  # the parent is pytest
    res = runner.invoke(app, ["--install-completion"], env={"HOME": str(tmp_path)}, prog_name="gentool")
    assert res.exit_code == 0, res.output
    script = (tmp_path / ".bash_completions" / "gentool.sh").read_text()
    assert "_GENTOOL_COMPLETE=complete_bash" in script
    assert "gentool.sh" in (tmp_path / ".bashrc").read_text()
    assert _complete("gentool train --bat") == ["--batch-size"]  # the hidden --batch is not offered
    assert _complete("gentool rep") == ["report"]


def test_missing_extra_is_one_line_naming_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazily imported package of an extra that is not installed: one line, exit 2, nothing written."""
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ModuleNotFoundError
    out = tmp_path / "unet"
    res = runner.invoke(app, ["train", "--arch", "unet", "--data", "digits", "--steps", "1", "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and "pip install 'gentool[diffusers]'" in res.stderr
    assert "Traceback" not in res.output and not out.exists()


def test_missing_extra_mechanism_is_generic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any command under `handle_errors`: the extra is looked up in the package metadata (pyproject's
    optional-dependencies); a missing module of no extra is not disguised."""
    small = typer.Typer()

    @small.command()
    @handle_errors
    def needs(module: str) -> None:
        __import__(module)

    monkeypatch.setitem(sys.modules, "torchode", None)
    res = runner.invoke(small, ["torchode"])
    assert res.exit_code == 2 and "pip install 'gentool[test]'" in res.stderr
    res = runner.invoke(small, ["no_such_module_xyz"])
    assert res.exit_code == 1 and isinstance(res.exception, ModuleNotFoundError)


def test_resume_of_a_run_stored_under_former_names(tmp_path: Path) -> None:
    """A run directory written before a rename (config.json with `iters`, `step`) resumes; a changed value is
    still refused, under the current name."""
    import json

    out = tmp_path / "run"
    args = ["optimize", "simplex", "--objective", "sparsemax", "--no-progress", "--no-plots", "--out", str(out)]
    assert runner.invoke(app, [*args, "--steps", "30"]).exit_code == 0
    stored = json.loads((out / "config.json").read_text())
    config = stored["config"]
    config["iters"], config["step"] = config.pop("steps"), config.pop("fw_step")
    (out / "config.json").write_text(json.dumps(stored))
    (out / "DONE.json").unlink()
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--resume", "--steps", "40"])
    assert res.exit_code == 2 and "steps (30 -> 40)" in res.stderr
