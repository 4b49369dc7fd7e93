"""`gentool run`, `gentool sweep`, `gentool report`: recipes, sweeps over submitit, merged reports."""

from __future__ import annotations

from pathlib import Path

import typer
from gentool.cli._common import handle_errors, print_table, progress_bar, say
from gentool.cli._jobs import run_job
from gentool.core.config import coerce, make_config
from gentool.core.experiments.recipe import Recipe, load_recipe, parse_overrides, split_options
from gentool.core.experiments.report import merge, plot_report, summary, write_table
from gentool.core.experiments.sweep import EXECUTORS, executor_options, expand, is_complete, run_sweep
from rich.table import Table

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _flag(value: object, name: str) -> bool:
    return bool(coerce(name, bool, value))


@handle_errors
def run_cmd(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    smoke: bool = typer.Option(False, "--smoke", help="Apply the recipe's smoke-table overrides (CI size)."),
) -> None:
    """Run a recipe's job with its options table (any sweep table is ignored; use `gentool sweep`).

    Arguments after the recipe (`--name value`, `--flag`, `--no-flag`) win over recipe values, e.g.
    `gentool run recipes/x.toml --steps 5`; also `--out`, `--seed`, `--device`, `--resume`. The run
    directory defaults to runs/<recipe name>.
    """
    rec = load_recipe(recipe, smoke=smoke)
    extra = parse_overrides(list(ctx.args))
    out = Path(str(extra.pop("out", Path("runs") / rec.name)))
    resume = _flag(extra.pop("resume", False), "resume")
    config, run = split_options(rec.spec, extra, "arguments")
    run = {**rec.run, **run}
    options = {**rec.options, **config}
    make_config(rec.spec.config, options)
    seed = run.get("seed")
    run_job(rec.spec, options, out=out, seed=None if seed is None else int(seed),
            device=str(run.get("device", "auto")), resume=resume,
            progress=_flag(run.get("progress", True), "progress"),
            plots=_flag(run.get("plots", True), "plots"))


def _recipe(path: Path, smoke: bool) -> Recipe:
    return load_recipe(path, smoke=smoke)


@handle_errors
def sweep_cmd(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="Recipe TOML file with a sweep table."),
    out: Path = typer.Option(None, help="Sweep directory (default runs/<recipe name>)."),
    executor: str = typer.Option("local", help=f"submitit executor: {', '.join(EXECUTORS)}."),
    parallel: int = typer.Option(None, help="Parallel jobs (local: default CPU count; slurm: array "
                                            "parallelism, default slurm.array_parallelism or 16)."),
    partition: str = typer.Option(None, help="Slurm partition (default slurm.partition)."),
    time: int = typer.Option(None, "--time", help="Job time limit in minutes (default slurm.time or 60)."),
    gpus: int = typer.Option(None, help="GPUs per job (slurm; default slurm.gpus or 0)."),
    cpus: int = typer.Option(None, help="CPUs per job (default slurm.cpus or 1)."),
    smoke: bool = typer.Option(False, "--smoke", help="Apply the recipe's smoke-table overrides (CI size)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the points and their state, run nothing."),
) -> None:
    """Expand a recipe's sweep grid and run every point as a submitit job: complete points are skipped,
    points killed mid-run resume from their last completed unit.

    Arguments after the recipe (`--name value`) override every point's settings.
    """
    rec = _recipe(recipe, smoke)
    opts = executor_options(rec, executor, parallel=parallel, partition=partition, time=time, gpus=gpus,
                            cpus=cpus)
    sweep_dir = out or Path("runs") / rec.name
    points = expand(rec, sweep_dir, list(ctx.args))
    if dry_run:
        for p in points:
            say(f"{'complete' if is_complete(p.run_dir) else 'todo':9s} {p.point_id}")
        return
    with progress_bar(f"sweep {rec.name}") as progress:
        results = run_sweep(rec, points, sweep_dir, opts, progress=progress)
    failed = [r for r in results if r.exit_code]
    ran = sum(1 for r in results if not r.message.startswith("skipped"))
    say(f"{len(points)} points: {ran} run, {len(points) - ran} skipped (complete), {len(failed)} failed -> "
        f"{sweep_dir}")
    for r in failed:
        say(f"failed {r.point_id}: exit {r.exit_code}: {r.message}")
    if failed:  # exit 1: some points failed (each reason above); a re-run resumes them
        raise typer.Exit(1)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@handle_errors
def report_cmd(
    sweep_dir: Path = typer.Argument(..., help="Sweep directory written by `gentool sweep`."),
    out: Path = typer.Option(None, help="Where to write report.csv/json and plots (default SWEEP_DIR)."),
    plots: bool = typer.Option(True, help="Write comparison plots."),
) -> None:
    """Merge every completed run's JSONL and metrics.json into report.csv/report.json; print and plot."""
    params, rows = merge(sweep_dir)
    out_dir = out or sweep_dir
    csv_path, json_path = write_table(out_dir, params, rows)
    header, body = summary(params, rows)
    table = Table(title=f"{sweep_dir} ({len({r['point'] for r in rows})} runs, {len(rows)} rows)")
    for name in header:
        table.add_column(name)
    for line in body:
        table.add_row(*(_fmt(v) for v in line))
    print_table(table)
    paths = plot_report(out_dir, params, rows) if plots else []
    say(f"wrote {csv_path}, {json_path}" + (f" and {len(paths)} plots" if paths else ""))


def register(app: typer.Typer) -> None:
    """Add `run`, `sweep` and `report` to the gentool app."""
    app.command("run", context_settings=EXTRA)(run_cmd)
    app.command("sweep", context_settings=EXTRA)(sweep_cmd)
    app.command("report")(report_cmd)
