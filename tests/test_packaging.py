"""The package layout: every package under cli/ and core/ is installed as gentool.*."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "gentool." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("cli", "core")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed


def test_the_c_extensions_are_built_wherever_a_c_compiler_is() -> None:
    """Each of pyproject's ext-modules (optional: an install without a C compiler goes on without them) is
    importable from its source's place under core/ when the machine has a C compiler."""
    import importlib
    import shutil
    import sysconfig

    modules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["ext-modules"]
    assert modules
    for ext in modules:
        assert [ROOT / src for src in ext["sources"]] == [ROOT / "core" / Path(*ext["name"].split(".")[2:])
                                                          .with_suffix(".c")]
        if shutil.which(sysconfig.get_config_var("CC").split()[0]):
            assert importlib.import_module(ext["name"]).__name__ == ext["name"]


def test_version_and_help() -> None:
    from gentool.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.stdout.startswith("gentool ")
    assert runner.invoke(app, ["--help"]).exit_code == 0


def test_data_sets_are_deterministic_and_shaped() -> None:
    import torch
    from gentool.core.data import DATASETS, data_dim, sample_data

    for name in DATASETS:
        a = sample_data(name, 64, torch.Generator().manual_seed(3))
        b = sample_data(name, 64, torch.Generator().manual_seed(3))
        assert a.shape == (64, data_dim(name)) and torch.equal(a, b) and torch.isfinite(a).all()
