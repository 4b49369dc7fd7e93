"""The run directory is never damaged by a refusal: a refused `--resume` leaves every file as it was, a refused new
run removes what it wrote (so a plain re-run works), `--resume` verifies the committed unit files against the
manifest in `state.pt`, a corrupt `config.json` is one line, and the Ctrl-C message counts the committed units.
(Limits that used to fail late are now refused up front: tests/test_hardening_limits.py; late refusals are
exercised here with small jobs.)"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from gentool.cli.main import app
from gentool.core.errors import BadInput, Interrupted
from gentool.core.run import execute
from typer.testing import CliRunner

runner = CliRunner()
PARTICLES = ["optimize", "particles", "-n", "16", "--time", "0.04", "--step-size", "0.01", "--log-every", "1"]


def _invoke(*argv: str) -> Any:
    return runner.invoke(app, [*argv, "--no-progress", "--no-plots"])


def _one_line(res: Any, code: int = 2) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    return lines[0]


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a run directory but the lock (whose text names the last process that held it)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".gentool.lock"}


@pytest.fixture
def done_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "run"
    with monkeypatch.context() as m:  # config.json records the process's argv: make it a gentool one
        m.setattr(sys, "argv", ["/usr/bin/gentool", *PARTICLES, "--out", str(out)])
        assert _invoke(*PARTICLES, "--out", str(out)).exit_code == 0
    assert (out / "DONE.json").is_file() and len(list((out / "units").glob("*.jsonl"))) == 4
    return out


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--step-size", "0.02"], "settings differ from the stored run: step_size"),
    (["--time", "0.08", "--seed", "3"], "settings differ from the stored run: seed"),
])
def test_refused_resume_leaves_every_file_untouched(done_run: Path, extra: list[str], fragment: str) -> None:
    before = _snapshot(done_run)
    line = _one_line(_invoke(*PARTICLES, *extra, "--out", str(done_run), "--resume"))
    assert fragment in line and "run these in a new output directory" in line, line
    assert _snapshot(done_run) == before


def test_refused_extension_leaves_config_and_done_untouched(done_run: Path) -> None:
    """Raising an extendable setting rewrites config.json and removes DONE.json only once the stored state has
    been checked; a bad state refuses first."""
    (done_run / "units" / "000002.jsonl").unlink()
    before = _snapshot(done_run)
    line = _one_line(_invoke(*PARTICLES[:-4], "--time", "0.08", *PARTICLES[-4:-2], "--log-every", "1",
                             "--out", str(done_run), "--resume"))
    assert "committed unit 2" in line and "is missing" in line
    assert _snapshot(done_run) == before


def test_resume_extends_after_the_checks(done_run: Path) -> None:
    res = _invoke(*PARTICLES[:4], "--time", "0.06", *PARTICLES[6:], "--out", str(done_run), "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads((done_run / "config.json").read_text())["config"]["time"] == 0.06
    assert json.loads((done_run / "DONE.json").read_text())["units"] == 6


@pytest.mark.parametrize("damage", ["missing", "changed", "truncated"])
def test_resume_verifies_the_committed_units(done_run: Path, damage: str) -> None:
    unit = done_run / "units" / "000003.jsonl"
    (done_run / "DONE.json").unlink()
    if damage == "missing":
        unit.unlink()
    elif damage == "changed":
        unit.write_text(unit.read_text().replace("1", "2"))
    else:
        unit.write_bytes(unit.read_bytes()[:-1])
    before = _snapshot(done_run)
    line = _one_line(_invoke(*PARTICLES, "--out", str(done_run), "--resume"))
    assert "committed unit 3" in line and str(unit) in line
    assert ("is missing" if damage == "missing" else "has changed") in line
    assert "`gentool optimize particles -n 16 --time 0.04" in line and f"--out {done_run}`" in line
    assert _snapshot(done_run) == before


def test_the_manifest_records_size_and_hash(done_run: Path) -> None:
    import hashlib

    manifest = torch.load(done_run / "state.pt", weights_only=True)["units"]
    for name, (size, digest) in manifest.items():
        data = (done_run / "units" / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
    assert sorted(manifest) == [f"{u:06d}.jsonl" for u in range(1, 5)]


@pytest.mark.parametrize(("config", "fragment"), [
    ("{not json", "is corrupt (not JSON)"),
    ('{"command": "optimize particles", "config": [1, 2], "seed": 0}', "is not a gentool run configuration"),
    ('{"command": "optimize particles", "config": {"n": "many"}, "seed": 0}', "config.json is corrupt: n must"),
    ('{"command": "optimize particles", "config": {"n": 16}, "seed": "abc"}', "seed must be an integer"),
    ('{"command": "optimize particles", "config": {"nope": 1}, "seed": 0}', "config.json is corrupt: unknown"),
    ("[]", "is not a gentool run configuration"),
])
def test_corrupt_config_on_resume_is_one_line(done_run: Path, config: str, fragment: str) -> None:
    (done_run / "config.json").write_text(config)
    before = _snapshot(done_run)
    assert fragment in _one_line(_invoke(*PARTICLES, "--out", str(done_run), "--resume"))
    assert _snapshot(done_run) == before


def test_another_commands_directory_names_the_owner(done_run: Path) -> None:
    line = _one_line(_invoke("mad-loop", "--generations", "1", "--out", str(done_run), "--resume"))
    assert "already holds a `optimize particles` run" in line and "bandwidth" not in line


@dataclass(frozen=True)
class _NoSettings:
    pass


class _SignalledJob:
    """Three one-row units; SIGINT arrives while unit `signal_at` is being committed (inside state_dict)."""

    command: ClassVar[str] = "test-signal"

    def __init__(self, signal_at: int) -> None:
        self.config, self.seed, self.step, self.signal_at = _NoSettings(), 0, 0, signal_at

    units_total = property(lambda self: 3)
    units_done = property(lambda self: self.step)
    done = property(lambda self: self.step >= 3)

    def advance(self) -> list[dict[str, Any]]:
        self.step += 1
        return [{"unit": self.step, "value": float(self.step)}]

    def state_dict(self) -> dict[str, Any]:
        if self.step == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]

    def samples(self) -> None:
        return None

    def finish(self, out: Path, rows: list[dict[str, Any]], plots: bool) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("signal_at", [1, 2])
def test_the_interrupt_message_counts_the_committed_units(tmp_path: Path, signal_at: int) -> None:
    with pytest.raises(Interrupted, match=f"with {signal_at} of 3 units committed"):
        execute(_SignalledJob(signal_at), tmp_path / "run")
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["units_done"] == signal_at


class _LateBadInput(_SignalledJob):
    """Three units; bad input found at unit `fail_at` (4: in `finish`), after earlier units were committed."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(signal_at=0)
        self.fail_at = fail_at

    def advance(self) -> list[dict[str, Any]]:
        if self.step + 1 == self.fail_at:
            raise BadInput("found late")
        return super().advance()

    def finish(self, out: Path, rows: list[dict[str, Any]], plots: bool) -> dict[str, Any]:
        if self.fail_at == 4:
            raise BadInput("found in finish")
        return {}


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_a_new_run_refused_late_leaves_nothing_and_a_rerun_works(tmp_path: Path, fail_at: int) -> None:
    out, existing = tmp_path / "run", tmp_path / "existing"
    with pytest.raises(BadInput, match="found"):
        execute(_LateBadInput(fail_at), out)
    assert not out.exists()
    existing.mkdir()
    with pytest.raises(BadInput, match="found"):
        execute(_LateBadInput(fail_at), existing)
    assert list(existing.iterdir()) == []  # as it was: not even a lock file
    assert execute(_LateBadInput(0), out).units_done == 3  # a plain re-run works


def test_a_resumed_run_refused_late_keeps_its_committed_units(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        execute(_SignalledJob(2), out)
    with pytest.raises(BadInput, match="found late"):
        execute(_LateBadInput(3), out, resume="require")
    assert torch.load(out / "state.pt", weights_only=True)["units_done"] == 2
    assert execute(_LateBadInput(0), out, resume="require").units_done == 3
