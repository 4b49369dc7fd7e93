"""The layers of ARCHITECTURE.md, checked on the source: every import in `core/` points down.

    foundation (errors, config, io, progress, nn, data, plots)
      <- solver core (solvers)
      <- domain libraries (diffusion, monoflow, probspace, mad, metrics)
      <- run contract (run, jobs)
      <- experiments (experiments)
      <- CLI (gentool.cli)

`core/` never imports typer, click or rich, and never the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {"errors", "config", "io", "progress", "nn", "data", "plots"}
LAYERS = [FOUNDATION, {"solvers"}, {"diffusion", "monoflow", "probspace", "mad", "metrics"}, {"run", "jobs"},
          {"experiments"}]
CLI_LIBRARIES = {"typer", "click", "rich"}


def layer_of(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imports(path: Path) -> list[str]:
    """Every module name imported anywhere in the file (top level or inside functions)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


CORE_FILES = sorted((ROOT / "core").rglob("*.py"))


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "core")
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "__init__"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_point_down(path: Path) -> None:
    here = package_of(path)
    if here == "__init__":
        return
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in CLI_LIBRARIES, f"{path.name} imports {name}: core must not import a CLI library"
        assert not name.startswith("gentool.cli"), f"{path.name} imports the CLI ({name})"
        if name.startswith("gentool.core."):
            target = name.split(".")[2]
            assert layer_of(target) <= layer_of(here), f"{path.relative_to(ROOT)} ({here}) imports {name}, " \
                "a higher layer"


def test_every_core_package_has_a_layer() -> None:
    packages = {package_of(p) for p in CORE_FILES} - {"__init__"}
    assert packages <= set().union(*LAYERS), packages - set().union(*LAYERS)


def test_core_messages_do_not_name_cli_flags() -> None:
    """Core error messages name settings (`n_synth`), not command-line flags (`--n-synth`)."""
    import re

    flag = re.compile(r"(^|[\s(`'\"])--[a-z][a-z-]+")
    for path in CORE_FILES:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            assert not flag.search(line), f"{path.relative_to(ROOT)}:{lineno} names a CLI flag: {line.strip()}"
