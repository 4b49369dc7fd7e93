"""Fixtures of the cluster tests: a private single-node Slurm for the session (`start-slurm.sh` /
`stop-slurm.sh` in this folder; clients reach it through SLURM_CONF), the fault tests' recipe and its
uninterrupted reference sweep. Collected only with `pytest --slurm` (see tests/conftest.py); `make
test-cluster` runs them. The accounting records of every job the session ran are printed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import FAULT_RECIPE, HERE, Cluster, gentool, output

SACCT_FIELDS = "JobID,JobName%28,State,ReqMem,AllocCPUS,Start,End,Elapsed"
ACCOUNTING: list[str] = []  # the session's sacct table, printed in the terminal summary


def _start(state_dir: Path) -> None:
    res = subprocess.run(["bash", str(HERE / "start-slurm.sh"), str(state_dir)], capture_output=True, text=True,
                         timeout=600)
    if res.returncode:
        logs = "".join(f"\n--- {p.name}\n" + p.read_text()[-2000:] for p in sorted((state_dir / "log").glob("*")))
        pytest.fail(f"start-slurm.sh failed ({res.returncode}):\n{res.stdout}{res.stderr}{logs}", pytrace=False)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A private single-node Slurm for the session; clients reach it through SLURM_CONF. Stopped, and its
    state directory removed, at the end (the accounting table is kept for the terminal summary)."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tests start Slurm's daemons and need root", pytrace=False)
    state_dir = Path(tempfile.mkdtemp(prefix="gentool-slurm-", dir="/tmp"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state_dir / "etc" / "slurm.conf")
    try:
        _start(state_dir)
        yield Cluster(state_dir)
        ACCOUNTING.append(Cluster(state_dir).run("sacct", "--allocations", "--starttime=now-1day",
                                                 f"--format={SACCT_FIELDS}"))
    finally:
        subprocess.run(["bash", str(HERE / "stop-slurm.sh"), str(state_dir)], check=False, timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ACCOUNTING:
        terminalreporter.section("sacct: every job of the cluster tests")
        terminalreporter.write(ACCOUNTING[0])


@pytest.fixture(scope="session")
def fault_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "faults.toml"
    path.write_text(FAULT_RECIPE)
    return path


@pytest.fixture(scope="session")
def reference(fault_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault recipe's sweep run uninterrupted, here with the local executor (the same recipe)."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    res = gentool("sweep", fault_recipe, "--executor", "local", "--parallel", "2", "--out", out)
    assert res.returncode == 0, output(res)
    return out
