"""Custom `module:function` code (simplex objectives, particle targets): any exception while importing it is one
line naming module:function and the exception (exit 2); an exception while a run calls it is one line, exit 3;
`KeyboardInterrupt` and `SystemExit` pass through (130 and their own code); a target without a gradient is one
line. Checks before the run starts that call the user's code are bad input (exit 2) and leave nothing behind."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from gentool.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
_names = itertools.count()

SIMPLEX = ["optimize", "simplex", "--steps", "30", "--tol", "-1"]
PARTICLES = ["optimize", "particles", "--dim", "2", "-n", "8", "--time", "0.05", "--step-size", "0.01"]
FUNCTIONS = {
    "objective": "def f(p):\n    {body}\n    return (p * p).sum()\n",
    "target": "def f(x):\n    {body}\n    return -(x * x).sum(-1) / 2\n",
}


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write `source` as a fresh module importable by name; returns its name."""
    name = f"gentool_user_code_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _run(kind: str, spec: str, out: Path) -> Any:
    argv = [*SIMPLEX, "--objective", spec] if kind == "objective" else [*PARTICLES, "--target", spec]
    return runner.invoke(app, [*argv, "--out", str(out), "--no-progress", "--no-plots"])


def _one_line(res: Any, code: int) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["objective", "target"])
@pytest.mark.parametrize(("source", "exception"), [
    ("def f(:\n", "SyntaxError"),
    ("raise RuntimeError('module init failed')\n", "RuntimeError: module init failed"),
    ("import json\njson.loads('{')\n", "JSONDecodeError"),
    ("def f(p)\n    return p\n", "SyntaxError"),
])
def test_import_errors_are_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, source: str,
                                           exception: str) -> None:
    spec = _module(tmp_path, monkeypatch, source) + ":f"
    line = _one_line(_run(kind, spec, tmp_path / "out"), 2)
    assert f"cannot import {kind} {spec!r}" in line and exception in line
    assert not (tmp_path / "out").exists()


COUNTED = "CALLS = [0]\n\ndef f({arg}):\n    CALLS[0] += 1\n    if CALLS[0] > {after}:\n        {action}\n" \
          "    return {value}\n"


def _counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, action: str) -> str:
    """A function that works for its first calls (the up-front checks) and then does `action`."""
    arg, value = ("p", "(p * p).sum()") if kind == "objective" else ("x", "-(x * x).sum(-1) / 2")
    source = COUNTED.format(arg=arg, after=12, action=action, value=value)
    return _module(tmp_path, monkeypatch, source) + ":f"


@pytest.mark.parametrize("kind", ["objective", "target"])
def test_an_error_during_the_run_is_one_line_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    kind: str) -> None:
    spec = _counted(tmp_path, monkeypatch, kind, "raise ZeroDivisionError('late failure')")
    line = _one_line(_run(kind, spec, tmp_path / "out"), 3)
    assert f"{kind} {spec!r} raised ZeroDivisionError: late failure" in line


@pytest.mark.parametrize("kind", ["objective", "target"])
def test_an_error_in_the_checks_before_the_run_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          kind: str) -> None:
    spec = _module(tmp_path, monkeypatch, FUNCTIONS[kind].format(body="raise KeyError('early')")) + ":f"
    line = _one_line(_run(kind, spec, tmp_path / "out"), 2)
    assert f"{kind} {spec!r} raised KeyError" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["objective", "target"])
def test_keyboard_interrupt_passes_through_as_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    spec = _counted(tmp_path, monkeypatch, kind, "raise KeyboardInterrupt")
    line = _one_line(_run(kind, spec, tmp_path / "out"), 130)
    assert "interrupted" in line


@pytest.mark.parametrize("kind", ["objective", "target"])
def test_system_exit_passes_through_with_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    spec = _counted(tmp_path, monkeypatch, kind, "raise SystemExit(7)")
    assert _run(kind, spec, tmp_path / "out").exit_code == 7


def test_a_target_without_a_gradient_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = "import torch\n\ndef f(x):\n    return torch.as_tensor(-(x.detach().numpy() ** 2).sum(-1))\n"
    spec = _module(tmp_path, monkeypatch, source) + ":f"
    line = _one_line(_run("target", spec, tmp_path / "out"), 2)
    assert f"target {spec!r} returns log π(x) without a gradient in x" in line
    assert not (tmp_path / "out").exists()
