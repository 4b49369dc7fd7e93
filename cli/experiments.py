"""`gentool run`, `gentool sweep`, `gentool report`: recipes, sweeps over submitit, merged reports."""

from __future__ import annotations

import inspect
import math
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from gentool.cli._common import console, format_numbers, handle_errors, print_table, progress_bar, say, warn
from gentool.cli._jobs import _field_parameter, run_job, run_shards
from gentool.core.config import check_path, coerce, config_fields, field_types, make_config
from gentool.core.errors import BadInput, Interrupted, NumericalFailure, choose
from gentool.core.experiments.executors import EXECUTORS
from gentool.core.experiments.points import FAILED, RAN, RUNNING, SKIPPED
from gentool.core.experiments.recipe import Recipe, load_recipe, record_recipe, split_options
from gentool.core.experiments.report import (
    FORMATS,
    compare_runs,
    describe_non_finite,
    long_table,
    merge,
    non_finite,
    plot_report,
    render,
    summary,
    summary_metrics,
    write_table,
)
from gentool.core.experiments.resources import Resources
from gentool.core.experiments.shards import merge as merge_shards
from gentool.core.experiments.sweep import (
    INTERRUPTED,
    TIMEOUT,
    SweepOutcome,
    executor_options,
    expand,
    failures,
    plan,
    run_sweep,
)
from rich.table import Table

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def parse_overrides(args: list[str], where: str = "arguments") -> dict[str, object]:
    """`--key value`, `--flag` and `--no-flag` arguments (after a recipe) as {key: value} (text or bool)."""
    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise BadInput(f"{where}: expected --name [value], got {arg!r}")
        name = arg[2:]
        if "=" in name:
            name, value = name.split("=", 1)
            out[name] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[name] = args[i + 1]
            i += 1
        elif name.startswith("no-"):
            out[name[3:]] = False
        else:
            out[name] = True
        i += 1
    return out


def _flag(value: object, name: str) -> bool:
    return bool(coerce(name, bool, value))


DOTTED = re.compile(r"[A-Za-z][\w-]*(\.[A-Za-z][\w-]*)?=")


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(`table.key=value` overrides, the other arguments) of the arguments after a recipe."""
    dotted = [a for a in args if not a.startswith("-") and DOTTED.match(a)]
    return dotted, [a for a in args if a not in dotted]


@handle_errors
def run_cmd(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="Recipe TOML file."),
    smoke: bool = typer.Option(False, "--smoke", help="Apply the recipe's smoke-table overrides (CI size)."),
) -> None:
    """Run a recipe's job with its options table (a sweep table is left out, with a warning naming the swept
    settings not given as arguments; use `gentool sweep` for the grid).

    Arguments after the recipe override it: `table.key=value` typed like the TOML value it replaces (e.g.
    `options.steps=10`, `options.sampler=heun`), or `--name value`, `--flag`, `--no-flag` for options; also
    `--out`, `--seed`, `--device`, `--resume`. The run directory defaults to runs/<recipe name> and records
    the effective recipe (recipe.json). A recipe with `shards = K` (or the override `shards=K`) runs its job
    split over K tasks (`--executor local|slurm|debug`, Slurm resources from its [slurm] table) and merges
    them into the run directory, as `--shards K` on the job command does.
    """
    dotted, rest = split_args(list(ctx.args))
    rec = load_recipe(check_path("recipe", recipe, "the recipe", "file"), smoke=smoke, overrides=dotted)
    extra = parse_overrides(rest)
    out = check_path("out", str(extra.pop("out", Path("runs") / rec.name)), "the run directory")
    resume = _flag(extra.pop("resume", False), "resume")
    executor = extra.pop("executor", None)
    if executor is not None and rec.shards is None:
        raise BadInput(f"executor applies to a recipe with shards (shards = K, or the override shards=K); "
                       f"{recipe} runs in this process")
    config, run = split_options(rec.spec, extra, "arguments")
    given = {**config, **run}
    run = {**rec.run, **run}
    options = {**rec.options, **config}
    make_config(rec.spec.config, options)
    if rec.shards is not None:
        code = run_shards(rec.spec, options, rec.shards, str(executor or "local"), out=out, seed=run.get("seed"),
                          device=run.get("device", "auto"), threads=run.get("threads"), resume=resume,
                          progress=run.get("progress", True), plots=run.get("plots", True), slurm=rec.slurm)
        record_recipe(out, rec)
        raise typer.Exit(code)
    try:
        run_job(rec.spec, options, out=out, seed=run.get("seed"), device=run.get("device", "auto"), resume=resume,
                progress=run.get("progress", True), plots=run.get("plots", True), threads=run.get("threads"))
    except (Interrupted, NumericalFailure):
        record_recipe(out, rec)
        raise
    record_recipe(out, rec)
    _warn_unswept(rec, given)  # after the run (an error stays the one line printed)


def _warn_unswept(rec: Recipe, given: dict[str, Any]) -> None:
    """A warning when `gentool run` leaves out the recipe's sweep: the swept settings not given as arguments take
    the options table's value (else the command's default), which need not be a point of the grid."""
    swept = [k for k in rec.sweep if k not in given] + (["seed"] if rec.seeds and "seed" not in given else [])
    if swept:
        warn(f"{rec.name} sweeps over {', '.join(swept)}; gentool run runs one job with the options table's "
             f"values (else the defaults) for them: give them as arguments, or run the grid with gentool sweep")


def _with_resources(fn: Any) -> Any:
    """Add an option per field of `Resources` (help, aliases and metavar from its declaration) to a command;
    the command receives them as keyword arguments."""
    hints = field_types(Resources)
    base = [p for p in inspect.signature(fn).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    knobs = [_field_parameter(f, hints[f.name]) for f in config_fields(Resources)]
    fn.__signature__ = inspect.Signature(base + knobs)
    fn.__annotations__ = {p.name: p.annotation for p in base + knobs}
    return fn


@_with_resources
@handle_errors
def sweep_cmd(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="Recipe TOML file with a sweep table."),
    out: str = typer.Option(None, help="Sweep directory (default runs/<recipe name>)."),
    executor: str = typer.Option("local", help=f"submitit executor: {', '.join(EXECUTORS)}."),
    timeout: float = typer.Option(None, help="Stop waiting after this many seconds; jobs still queued or "
                                             "running keep going and a re-run of the sweep waits for them."),
    smoke: bool = typer.Option(False, "--smoke", help="Apply the recipe's smoke-table overrides (CI size)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the points, their state and how they would be "
                                                          "submitted (slurm: the sbatch script); submit nothing."),
    **resources: Any,
) -> None:
    """Expand a recipe's sweep grid and run every point as a submitit job (slurm: one array task per point).

    A re-run skips complete points, waits for points whose Slurm job is still queued or running, resumes
    points killed mid-run from their last completed unit and starts the rest. Arguments after the recipe
    override it: `table.key=value` (e.g. `sweep.sampler=\\[euler,heun]`, `slurm.time=120`, `options.n=500`),
    or `--name value` for every point's options; a swept setting cannot be overridden that way. Job resources
    default to the recipe's \\[slurm] table; the options below win.
    """
    dotted, rest = split_args(list(ctx.args))
    rec = load_recipe(check_path("recipe", recipe, "the recipe", "file"), smoke=smoke, overrides=dotted)
    if rec.shards is not None:
        raise BadInput(f"{recipe}: shards = {rec.shards} splits one run: run it with gentool run (a sweep runs "
                       "each point whole)")
    sweep_dir = Path("runs") / rec.name if out is None else check_path("out", out, "the sweep directory")
    points = expand(rec, sweep_dir, parse_overrides(rest))
    opts = executor_options(rec, points, executor, **resources)
    if timeout is not None and timeout <= 0:
        raise BadInput(f"timeout must be a positive number of seconds, got {timeout}")
    if dry_run:
        for line in plan(rec, points, sweep_dir, opts):
            say(line)
        return
    with progress_bar(f"sweep {rec.name}") as progress:
        outcome = run_sweep(rec, points, sweep_dir, opts, progress=progress, timeout_s=timeout)
    raise typer.Exit(_report_sweep(outcome, sweep_dir, timeout, opts.executor))


NEXT_AFTER_STOP = {
    "slurm": "the queued and running Slurm jobs keep going; re-run the same sweep to wait for them (they are "
             "not submitted again)",
    "local": "the local workers were stopped (each point keeps its last committed unit); re-run the same sweep "
             "to resume the unfinished points",
    "debug": "the running point stopped after its last committed unit; re-run the same sweep to resume it and "
             "run the rest",
}


def _report_sweep(outcome: SweepOutcome, sweep_dir: Path, timeout: float | None, executor: str) -> int:
    """Print the sweep's summary, each failure with its reason and each unfinished job; return the exit
    code: 0 all complete, 1 some point failed or still runs, 130 interrupted."""
    if outcome.orphans_stopped:
        say(f"stopped {outcome.orphans_stopped} local worker(s) left running by an earlier run of this sweep; "
            "their points resume from their last committed unit")
    count = Counter(r.state for r in outcome.results)
    say(f"{len(outcome.results)} points: {count[RAN]} completed, {count[SKIPPED]} skipped (complete already), "
        f"{count[FAILED]} failed, {count[RUNNING]} still queued or running -> {sweep_dir}")
    for r in outcome.results:
        job = f" (job {r.job_id})" if r.job_id else ""
        if r.state == FAILED:
            say(f"failed {r.point_id}{job}: exit {r.exit_code}: {r.message}")
        elif r.state == RUNNING:
            say(f"running {r.point_id}{job}")
    if outcome.stopped == TIMEOUT:
        say(f"gave up waiting after {timeout:g} s: " + (
            "the local workers keep running; a re-run of the same sweep stops them first and resumes their "
            "points" if executor == "local" else "the queued and running jobs keep going; re-run the same "
            "sweep to wait for them (they are not submitted again)"))
    elif outcome.stopped == INTERRUPTED:
        say(f"interrupted: {NEXT_AFTER_STOP[executor]}")
    if count[FAILED] and outcome.stopped != INTERRUPTED:
        say("re-run the same sweep to retry the failed points (each resumes from its last completed unit)")
    if outcome.stopped == INTERRUPTED:
        return Interrupted.exit_code
    return 1 if count[FAILED] or count[RUNNING] else 0


def _table(title: str, header: list[str], body: list[list[object]]) -> Table:
    table = Table(title=title)
    for name in header:
        table.add_column(name)
    for line in body:
        table.add_row(*(_fmt(v) for v in line))
    return table


def _fmt(value: object) -> str:
    """A cell's text: floats with 4 significant digits, a non-finite number marked as such."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else f"{value} (non-finite)"
    return str(value)


def _show(title: str, header: list[str], body: list[list[object]], metrics: list[str], fmt: str,
          non_finite: list[dict[str, object]]) -> None:
    """Print a summary: as CSV/JSON, or as a table — wide (one column per metric) when it fits the
    terminal width, else long (one row per run and metric)."""
    if fmt != "table":
        sys.stdout.write(render(header, body, fmt, non_finite))
        return
    table = _table(title, header, body)
    if console.measure(table, options=console.options.update_width(10_000)).maximum > _width():
        table = _table(title, *long_table(header, body, metrics))
    print_table(table)


def _width() -> int:
    return shutil.get_terminal_size().columns


def _note(text: str, fmt: str) -> None:
    """A status line: stdout with the table, stderr when stdout carries CSV/JSON."""
    if fmt == "table":
        say(text)
    else:
        sys.stderr.write(text + "\n")


def _metric_list(text: str | None) -> list[str] | None:
    names = [m.strip() for m in text.split(",") if m.strip()] if text else []
    return names or None


@handle_errors
def report_cmd(
    paths: list[str] = typer.Argument(..., help="A sweep directory written by `gentool sweep`, or with --compare "
                                       "the run directories to overlay."),
    compare: bool = typer.Option(False, "--compare", help="Overlay completed runs (any job): each metric's mean "
                                 "vs generation/step with its 95% CI band, one curve per run."),
    metrics: str = typer.Option(None, help="Comma-separated metrics to show and plot (default: all)."),
    fmt: str = typer.Option("table", "--format", help=f"What to print: {', '.join(FORMATS)} (csv/json: the "
                            "summary on stdout, status lines on stderr)."),
    out: str = typer.Option(None, help="Where to write report.csv/json and plots (default SWEEP_DIR; with "
                             "--compare the first run directory)."),
    plots: bool = typer.Option(True, help="Write comparison plots."),
) -> None:
    """Merge every completed run's JSONL and metrics.json into report.csv/report.json; print and plot.
    With --compare, overlay several run directories instead (compare.csv, compare.png). Points the sweep
    recorded as failed (and that have not completed since) are listed with their reasons, also in report.json.
    A NaN or infinite value is shown as non-finite and the exit code is 3."""
    fmt = choose("format", fmt, FORMATS)
    dirs = [check_path("paths", p, "a run directory" if compare else "the sweep directory") for p in paths]
    out = None if out is None else check_path("out", out, "the report directory")
    if compare:
        _compare(dirs, _metric_list(metrics), out or dirs[0], plots, fmt)
        return
    if len(paths) != 1:
        raise BadInput(f"report takes one sweep directory (or --compare RUN...), got {len(paths)}")
    sweep_dir = dirs[0]
    params, rows = merge(sweep_dir)
    header, body = summary(params, rows, _metric_list(metrics))
    names = summary_metrics(header, params)
    out_dir = out or sweep_dir
    failed = failures(sweep_dir)
    csv_path, json_path = write_table(out_dir, params, rows, failed)
    bad = non_finite(rows, ("point", "source"))
    _show(f"{sweep_dir} ({len({r['point'] for r in rows})} runs, {len(rows)} rows)", header, body, names, fmt,
          bad)
    paths_ = plot_report(out_dir, params, rows, names) if plots else []
    for f in failed:
        _note(f"failed {f['point']}" + (f" (job {f['job_id']})" if f["job_id"] else "") +
              f": exit {f['exit_code']}: {f['reason']}", fmt)
    _note(f"wrote {csv_path}, {json_path}" + (f" and {len(paths_)} plots" if paths_ else ""), fmt)
    _refuse_non_finite(bad)


def _refuse_non_finite(bad: list[dict[str, object]]) -> None:
    if bad:
        raise NumericalFailure(describe_non_finite(bad) + "; shown as non-finite above and written as "
                               "'nan'/'inf' in the report files")


def _compare(runs: list[Path], metrics: list[str] | None, out: Path, plots: bool, fmt: str) -> None:
    header, body, written, bad = compare_runs(runs, out, metrics, draw=plots)
    _show(f"{len(runs)} runs, final values", header, body, header[2:], fmt, bad)
    _note("wrote " + ", ".join(str(p) for p in written), fmt)
    _refuse_non_finite(bad)


@handle_errors
def merge_cmd(out: str = typer.Argument(..., help="Run directory of a job run with --shards.")) -> None:
    """Merge the complete shards of a job run with --shards into its run directory (as the unsharded run
    writes it: rows in unit order, the summary and figures computed over all of them). The job command merges
    by itself when its last shard finishes; use this after finishing shards by hand."""
    out = check_path("out", out, "the run directory")
    result = merge_shards(out)
    summary = {k: v for k, v in result.summary.items() if k not in ("table", "warning")}
    say(f"merged {out}: {result.units_done} units; {format_numbers(summary)}")


def register(app: typer.Typer) -> None:
    """Add `run`, `sweep`, `report` and `merge` to the gentool app."""
    app.command("run", context_settings=EXTRA)(run_cmd)
    app.command("sweep", context_settings=EXTRA)(sweep_cmd)
    app.command("report")(report_cmd)
    app.command("merge")(merge_cmd)
