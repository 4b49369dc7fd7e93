"""Every shipped recipe validates at full size and runs end to end at its --smoke size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from gentool.cli.main import app
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import DONE, expand
from typer.testing import CliRunner

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
ROOT = typer.main.get_command(app)
runner = CliRunner()


def _command_exists(path: Path) -> bool:
    import tomllib

    words = tomllib.loads(path.read_text())["command"].split()
    node = ROOT
    for word in words:
        node = getattr(node, "commands", {}).get(word)
        if node is None:
            return False
    return True


def test_the_headline_recipes_are_shipped() -> None:
    names = {p.stem for p in RECIPES}
    assert {"mad-gaussian", "mad-diffusion-moons", "sampler-nfe-gmm-ring", "monoflow-h-8gaussians",
            "simplex-optimisers"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_smoke_sweep_and_report(path: Path, tmp_path: Path) -> None:
    if not _command_exists(path):
        pytest.skip(f"{path.name}: its command is not registered in this tree yet")
    full = load_recipe(path, ROOT)
    smoke = load_recipe(path, ROOT, smoke=True)
    assert full.sweep and len(expand(smoke, ROOT, tmp_path)) <= len(expand(full, ROOT, tmp_path))
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", str(path), "--smoke", "--executor", "debug", "--out", str(out)])
    assert res.exit_code == 0, res.output
    n_points = len(expand(smoke, ROOT, out))
    assert len(list(out.glob(f"*/{DONE}"))) == n_points
    res = runner.invoke(app, ["report", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert len({r["point"] for r in report["rows"]}) == n_points
