"""Shared test setup: one torch thread per worker, GPU tests skip cleanly without CUDA, and the cluster tests
(tests/cluster: a real single-node Slurm) are collected only with --slurm (`make test-cluster`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
CLUSTER_TESTS = Path(__file__).parent / "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slurm", action="store_true",
                     help="run tests/cluster on a private single-node Slurm the session starts and stops "
                          "(root on Debian; installs slurm-wlm when missing)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/cluster only with --slurm (they start Slurm daemons and take minutes)."""
    if collection_path == CLUSTER_TESTS and not config.getoption("--slurm"):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)
