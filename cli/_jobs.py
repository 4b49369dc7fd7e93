"""One way to register a command: its options are generated from the job's config dataclass.

For a `JobSpec` (command, config dataclass, builder) this makes a Typer command whose options are the config's
fields (`--n-synth` for `n_synth`, help text, default and allowed values from `gentool.core.config.setting`)
plus the run options every job shares: `--out`, `--seed`, `--device`, `--resume`, `--progress/--no-progress`,
`--plots/--no-plots`. The command only parses: options given on the command line are handed to
`make_config` (which coerces and validates them in core), the job is built and `execute`d, and the headline
numbers are printed (a summary's `table`, a list of rows, as a table; its `warning` as a line on stderr).
With `--resume`, options not given on the command line take the stored run's values.
"""

from __future__ import annotations

import inspect
import time
import typing
from pathlib import Path
from typing import Any

import typer
from gentool.cli._common import format_numbers, handle_errors, print_table, progress_bar, rows_table, say, warn
from gentool.core.config import check_path, config_dict, config_fields, current_names, field_types, make_config
from gentool.core.errors import BadInput
from gentool.core.experiments.executors import EXECUTORS
from gentool.core.experiments.resources import KNOBS, Resources
from gentool.core.experiments.shards import SHARDABLE, plan_sharded, run_sharded, stored_plan
from gentool.core.io import read_json
from gentool.core.progress import attach
from gentool.core.run import JobSpec, execute, resolve_device
from gentool.core.run.device import DEVICES, use_threads

RUN_OPTIONS = ("out", "seed", "device", "threads", "resume", "progress", "plots")


def _metavar(hint: Any, choices: tuple[str, ...] | None) -> str:
    if choices:
        return "NAME"
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if typing.get_origin(hint) is tuple:
        return "LIST"
    return {int: "INT", float: "FLOAT", Path: "PATH"}.get(base[0], "TEXT")


def _help(field: Any) -> str:
    meta = field.metadata
    text = meta.get("help", "")
    if meta.get("choices"):
        text += f" One of: {', '.join(meta['choices'])}."
    default = field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return _escape(text + (f" [default: {shown}]" if shown not in (None, "") else ""))


def _escape(text: str) -> str:
    """Help text is rendered by rich: keep square brackets literal."""
    return text.replace("[", "\\[")


def _field_parameter(field: Any, hint: Any, name: str | None = None) -> inspect.Parameter:
    """The option of a config field, or (`name`: one of the field's `old` names) its hidden former spelling."""
    flag = "--" + (name or field.name).replace("_", "-")
    short = field.metadata.get("short") if name is None else None
    if short and not short.startswith("-"):  # a second long name, declared without dashes
        short = "--" + short
    names = [flag, short] if short else [flag]
    if hint is bool or hint == bool | None:
        option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=_help(field), show_default=False,
                              hidden=name is not None)
        annotation: Any = bool | None
    else:
        option = typer.Option(None, *names, help=_help(field), show_default=False, hidden=name is not None,
                              metavar=field.metadata.get("metavar") or _metavar(hint, field.metadata.get("choices")))
        annotation = str | None
    return inspect.Parameter(_param_name(field.name, name), inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=annotation)


def _param_name(field: str, old: str | None) -> str:
    return field if old is None else f"{field}__old__{old}"


def _given(fields: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """{field: value} of the options given, a former spelling counting as its field (`--batch` for
    `--batch-size`); both spellings at once is bad input."""
    given = {}
    for f in fields:
        values = {name: kwargs[_param_name(f.name, name)] for name in (None, *f.metadata.get("old", ()))}
        set_ = {name: v for name, v in values.items() if v is not None}
        if len(set_) > 1:
            spellings = ", ".join("--" + (n or f.name).replace("_", "-") for n in set_)
            raise BadInput(f"{f.name} is given twice ({spellings}); give it once")
        if set_:
            given[f.name] = next(iter(set_.values()))
    return given


def _run_parameters(spec: JobSpec) -> list[inspect.Parameter]:
    def opt(name: str, default: Any, annotation: Any, *decls: str, help: str) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                 default=typer.Option(default, *decls, help=help))

    return [
        opt("out", spec.default_out, str, "--out", help="Run directory (locked while the run works in it)."),
        opt("seed", None, int | None, "--seed", help=_escape("Random seed [default: 0; with --resume: the stored "
                                                             "seed].")),
        opt("device", "auto", str, "--device", help=f"One of: {', '.join(DEVICES)}."),
        opt("threads", None, int | None, "--threads", help=_escape("CPU threads [default: Slurm's cpus-per-task "
                                                                   "inside a Slurm job, else torch's default]; "
                                                                   "recorded in config.json.")),
        opt("resume", False, bool, "--resume", help="Continue the run in --out from its last completed unit "
            "(options not given keep their stored values; others must match)."),
        opt("progress", True, bool, "--progress/--no-progress", help="Show a progress bar."),
        opt("plots", True, bool, "--plots/--no-plots", help="Write the figures."),
    ] + _shard_parameters(spec, opt)


EXECUTOR_HELP = f"Where --shards run: {', '.join(EXECUTORS)}."
DRY_RUN_HELP = ("With --shards: print each shard's state and how they would be submitted (slurm: the sbatch "
                "script); submit and write nothing.")


def _shard_parameters(spec: JobSpec, opt: Any) -> list[inspect.Parameter]:
    """--shards, --executor, --dry-run and the Slurm resources (one option per field of `Resources`, as
    `gentool sweep` has them) for commands whose units are independent (`SHARDABLE`)."""
    if spec.command not in SHARDABLE:
        return []
    unit = SHARDABLE[spec.command].unit
    hints = field_types(Resources)
    return [opt("shards", None, int | None, "--shards", help=f"Split the run over K tasks by {unit} (each a "
                "resumable part in OUT/parts), then merge them into OUT exactly as one run would write it; a "
                "re-run resumes the unfinished parts alone."),
            opt("executor", "local", str, "--executor", help=EXECUTOR_HELP),
            opt("dry_run", False, bool, "--dry-run", help=DRY_RUN_HELP),
            *(_field_parameter(f, hints[f.name]) for f in config_fields(Resources))]


def slurm_flags(kwargs: dict[str, Any], shards: int | None, executor: str) -> dict[str, Any]:
    """The `Resources` options given on the command line; they apply to shards on the slurm executor only."""
    flags = {k: kwargs[k] for k in KNOBS if kwargs.get(k) is not None}
    if flags and (shards is None or executor != "slurm"):
        names = ", ".join(flags)
        where = "without shards" if shards is None else f"with executor {executor!r}"
        raise BadInput(f"{names} given {where}: Slurm resources apply to shards run with executor 'slurm' "
                       f"(executors: {', '.join(EXECUTORS)})")
    return flags


def options_for_resume(spec: JobSpec, out: str | Path, given: dict[str, Any], seed: int | None
                       ) -> tuple[dict[str, Any], int | None]:
    """With `--resume`: the stored config overlaid with the options given on the command line. A config.json
    of another command, or one that is not JSON, is left to `execute` (one line naming the owner or the file);
    stored settings that do not make a valid config are reported as a corrupt config.json."""
    path = Path(out) / "config.json"
    try:
        stored = read_json(path) if path.is_file() else None
    except (ValueError, UnicodeDecodeError):
        stored = None
    if not isinstance(stored, dict) or stored.get("command") != spec.command or not isinstance(stored.get("config"),
                                                                                             dict):
        return given, seed
    try:
        make_config(spec.config, stored["config"])
    except BadInput as exc:
        raise BadInput(f"{path} is corrupt: {exc}; delete {out} to start over") from None
    return {**current_names(spec.config, stored["config"]), **given}, stored.get("seed") if seed is None else seed


def run_job(spec: JobSpec, given: dict[str, Any], *, out: str | Path, seed: int | None, device: str, resume: bool,
            progress: bool, plots: bool, threads: int | None = None) -> dict[str, Any]:
    """Build the config from the given options, build the job, execute it, print its headline numbers."""
    use_threads(threads)
    if resume:
        given, seed = options_for_resume(spec, out, given, seed)
    config = make_config(spec.config, given)
    job = spec.make(config, 0 if seed is None else seed, resolve_device(device))
    start = time.perf_counter()
    with progress_bar(spec.command, enabled=progress) as bar:
        attach(job, bar)  # the job's phases after its units (reference solves, metrics, figures)
        result = execute(job, out, resume="require" if resume else "never", progress=bar, plots=plots)
    seconds = time.perf_counter() - start
    summary = dict(result.summary)
    table, warning = summary.pop("table", None), summary.pop("warning", None)
    say(f"{spec.command}: {result.units_done} units in {seconds:.2f} s; {format_numbers(summary)}")
    if table:
        print_table(rows_table(table))
    say(f"run directory: {out}")
    if warning:
        warn(warning)
    return result.summary


def resume_shards(spec: JobSpec, out: str | Path, given: dict[str, Any], seed: int | None, shards: int
                  ) -> tuple[dict[str, Any], int | None]:
    """With `--resume --shards K`: the sharded run recorded in `OUT/parts/shards.json` (options not given keep
    its values; the others and K must match it, as an unsharded resume's settings must); nothing recorded is
    `BadInput`, as the unsharded `--resume` of a directory without a run."""
    stored = stored_plan(out)
    if stored is None or stored.get("command") != spec.command:
        raise BadInput(f"nothing to resume in {out}: it holds no sharded {spec.command} run; run without "
                       "resume to start one")
    parts = len(stored.get("parts") or ())
    if shards != parts:
        raise BadInput(f"shards is {shards} but the run in {out} has {parts} shards; resume it with shards "
                       f"{parts}")
    old = current_names(spec.config, stored["config"])
    changed = [k for k, v in given.items() if k in old and config_dict(make_config(spec.config, {**old, k: v}))
               != config_dict(make_config(spec.config, old))]
    if changed or (seed is not None and seed != stored.get("seed")):
        names = ", ".join(changed + (["seed"] if seed is not None and seed != stored.get("seed") else []))
        raise BadInput(f"cannot resume {out} with other settings ({names}); omit them to keep the stored values "
                       "or choose another output directory")
    return {**old, **given}, stored.get("seed")


def run_shards(spec: JobSpec, given: dict[str, Any], shards: int, executor: str, *, out: str | Path,
               seed: int | None, device: str, threads: int | None, resume: bool, progress: bool, plots: bool,
               slurm: dict[str, Any] | None = None, flags: dict[str, Any] | None = None,
               dry_run: bool = False) -> int:
    """Run a job split over `shards` tasks and merge it (`gentool.core.experiments.shards`; `slurm`: a recipe's
    [slurm] table, `flags`: Slurm resources given on the command line, which win; `resume`: the recorded
    sharded run, see `resume_shards`); returns the exit code: 0 merged, 1 some shard failed, 130 interrupted.
    `dry_run`: print what would be submitted (slurm: the sbatch script) and write nothing."""
    out = check_path("out", out, "the run directory")
    if resume:
        given, seed = resume_shards(spec, out, given, seed, shards)
    config = make_config(spec.config, given)
    resolve_device(device)
    run = {"device": device, "threads": threads, "plots": plots, "progress": False}
    seed = 0 if seed is None else seed
    if dry_run:
        for line in plan_sharded(spec.command, config, seed, run, out, shards, executor, slurm, flags):
            say(line)
        return 0
    with progress_bar(f"{spec.command} shards", enabled=progress) as bar:
        outcome, merged = run_sharded(spec.command, config, seed, run, out, shards, executor, progress=bar,
                                      slurm=slurm, flags=flags)
    for r in outcome.results:
        if r.state == "failed":
            say(f"shard {r.point_id} failed: exit {r.exit_code}: {r.message}")
    if merged is None:
        say(f"{len(outcome.results)} shards, not all complete: re-run the same command to resume them -> {out}")
        return 130 if outcome.stopped == "interrupted" else 1
    summary = {k: v for k, v in merged.summary.items() if k not in ("table", "warning")}
    say(f"{spec.command}: {len(outcome.results)} shards merged, {merged.units_done} units; "
        f"{format_numbers(summary)}")
    say(f"run directory: {out}")
    return 0


def job_command(spec: JobSpec) -> Any:
    """A Typer command function for `spec` (register it with `app.command(name)(...)`)."""
    hints = field_types(spec.config)
    fields = config_fields(spec.config)

    @handle_errors
    def command(**kwargs: Any) -> None:
        shards, executor = kwargs.get("shards"), kwargs.get("executor", "local")
        flags = slurm_flags(kwargs, shards, executor) if spec.command in SHARDABLE else {}
        if kwargs.get("dry_run") and shards is None:
            raise BadInput("dry_run applies to a run with shards (it prints how they would be submitted)")
        if shards is not None:
            raise typer.Exit(run_shards(spec, _given(fields, kwargs), shards, executor, flags=flags,
                                        dry_run=kwargs["dry_run"], **{k: kwargs[k] for k in RUN_OPTIONS}))
        run_job(spec, _given(fields, kwargs), **{k: kwargs[k] for k in RUN_OPTIONS})

    params = [_field_parameter(f, hints[f.name], name) for f in fields for name in (None, *f.metadata.get("old", ()))]
    params += _run_parameters(spec)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = spec.help
    command.__name__ = spec.command.replace(" ", "_").replace("-", "_")
    return command


def register_job(app: typer.Typer, spec: JobSpec, name: str | None = None) -> None:
    """Add `spec` as command `name` (default: the last word of its command) to `app`."""
    app.command(name or spec.command.split()[-1])(job_command(spec))
