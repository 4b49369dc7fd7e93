"""Recipes (TOML bound to job configs), sweeps over clusters (submitit) and reports (tidy tables and plots)."""

from gentool.core.experiments.recipe import Recipe, load_recipe, run_recipe
from gentool.core.experiments.report import merge, plot_report, summary, write_table
from gentool.core.experiments.sweep import ExecutorOptions, Point, PointResult, expand, run_sweep

__all__ = ["ExecutorOptions", "Point", "PointResult", "Recipe", "expand", "load_recipe", "merge",
           "plot_report", "run_recipe", "run_sweep", "summary", "write_table"]
