"""Recipes (TOML), sweeps over clusters (submitit) and reports (tidy tables and plots)."""

from gentool.core.experiments.recipe import Recipe, load_recipe, option_args, resolve_command
from gentool.core.experiments.report import merge, plot_report, summary, write_table
from gentool.core.experiments.sweep import ExecutorOptions, Point, PointResult, expand, run_sweep

__all__ = ["ExecutorOptions", "Point", "PointResult", "Recipe", "expand", "load_recipe", "merge",
           "option_args", "plot_report", "resolve_command", "run_sweep", "summary", "write_table"]
