"""Shared test setup: one torch thread per worker, GPU tests skip cleanly without CUDA, the tests listed in
`slow_tests.txt` (measured the slowest of the default suite) are marked `slow`, and the cluster tests
(tests/cluster: a real single-node Slurm) are collected only with --slurm (`make test-cluster`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
CLUSTER_TESTS = Path(__file__).parent / "cluster"
SLOW_TESTS = frozenset(line.strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
                       if line.strip() and not line.startswith("#"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slurm", action="store_true",
                     help="run tests/cluster on a private single-node Slurm the session starts and stops "
                          "(root on Debian; installs slurm-wlm when missing)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/cluster only with --slurm (they start Slurm daemons and take minutes)."""
    if collection_path == CLUSTER_TESTS and not config.getoption("--slurm"):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)
