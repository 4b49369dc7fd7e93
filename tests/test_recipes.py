"""Every shipped recipe validates at full size and runs end to end at its --smoke size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.experiments.recipe import load_recipe
from gentool.core.experiments.sweep import DONE, expand
from typer.testing import CliRunner

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("**/*.toml"))
runner = CliRunner()


def test_the_headline_recipes_are_shipped() -> None:
    names = {p.stem for p in RECIPES}
    assert {"mad-gaussian", "mad-diffusion-moons", "sampler-nfe-gmm-ring", "monoflow-h-8gaussians",
            "simplex-optimisers"} <= names


@pytest.mark.parametrize("plots", [pytest.param(False, id="no-plots"),
                                   pytest.param(True, id="plots", marks=pytest.mark.slow)])
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_smoke_sweep_and_report(path: Path, tmp_path: Path, plots: bool) -> None:
    """The default suite runs the points without their figures (each point's figures take seconds, up to 15 s
    for a particles point; every command's figures are checked in its own tests); `slow` runs them whole."""
    full = load_recipe(path)
    smoke = load_recipe(path, smoke=True)
    assert full.sweep and len(expand(smoke, tmp_path)) <= len(expand(full, tmp_path))
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", str(path), "--smoke", "--executor", "debug", "--out", str(out),
                              f"options.plots={str(plots).lower()}"])
    assert res.exit_code == 0, res.output
    assert any(out.glob("*/*.png")) == plots
    n_points = len(expand(smoke, out))
    assert len(list(out.glob(f"*/{DONE}"))) == n_points
    res = runner.invoke(app, ["report", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert len({r["point"] for r in report["rows"]}) == n_points
