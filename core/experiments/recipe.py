"""Recipes: one TOML file naming a gentool job, its settings, and optionally a sweep.

A recipe looks like::

    description = "Sampler error vs NFE on the GMM ring"
    command = "sample"                 # a job of `gentool.core.jobs.JOBS`: "optimize simplex", "mad-loop", ...
    [options]                          # the job's config fields (dashes or underscores) and run settings
    target = "gmm-ring"
    n = 10000
    device = "cpu"                     # run settings: seed, device, plots
    [sweep]                            # grids: the cartesian product is run
    sampler = ["euler", "heun"]
    steps = [5, 10, 20]
    seeds = [0, 1]                     # the run's seed
    [slurm]                            # resources of each job (see `resources.Resources`)
    partition = "gpu"
    account = "proj"
    setup = ["module load cuda"]
    [smoke]                            # overrides of the smoke-sized (CI) run
    n = 200
    sweep = { steps = [5] }

A top-level `shards = K` splits the run of `gentool run` over K tasks (commands with independent units, see
`gentool.core.experiments.shards`; a recipe without a sweep), merged into the unsharded run.

Keys are checked against the job's config dataclass, so recipes cannot drift from the code; an unknown key
is a `BadInput` naming the nearest valid one. The same recipe runs through `gentool run`, `gentool sweep` and
`run_recipe` in Python.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gentool.core.config import check_int, coerce, config_fields, field_name, make_config
from gentool.core.errors import BadInput
from gentool.core.experiments import resources
from gentool.core.jobs import JOBS
from gentool.core.run.contract import JobSpec

TOP_LEVEL_KEYS = ("command", "description", "options", "sweep", "slurm", "smoke", "shards")
RUN_KEYS = ("seed", "device", "plots", "progress", "threads")
SEEDS_KEY = "seeds"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: the job `command`, its `options` (config field -> value), run settings (`seed`,
    `device`, `plots`), the sweep grid and seeds, Slurm defaults."""

    path: Path
    command: str
    options: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the effective TOML table (overrides applied)
    shards: int | None = None  # `gentool run` splits the job over this many tasks (None: one run)
    overrides: tuple[str, ...] = ()  # the `table.key=value` overrides applied to the file

    @property
    def name(self) -> str:
        """The recipe's file stem (default run-directory name)."""
        return self.path.stem

    @property
    def spec(self) -> JobSpec:
        return JOBS[self.command]


def _unknown(kind: str, key: str, allowed: list[str], where: str) -> BadInput:
    near = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return BadInput(f"{where}: unknown {kind} {key!r}{hint}; allowed: {', '.join(sorted(allowed))}")


def job_spec(command: Any, where: str = "recipe") -> JobSpec:
    """The job named by a recipe's `command` string."""
    if not isinstance(command, str) or not command.strip():
        raise BadInput(f"{where}: missing 'command' (a string such as \"sample\" or \"optimize simplex\")")
    name = " ".join(command.split())
    if name not in JOBS:
        raise _unknown("command", name, list(JOBS), where)
    return JOBS[name]


def normalize_key(spec: JobSpec, key: str, where: str, run_keys: tuple[str, ...] = RUN_KEYS) -> str:
    """A recipe key (dashes or underscores) as a config field or run-setting name, or `BadInput`."""
    names = [f.name for f in config_fields(spec.config)] + list(run_keys)
    name = field_name(spec.config, key) or str(key).replace("-", "_")  # a former name maps to its field
    if name not in names:
        raise _unknown(f"setting of {spec.command!r}", str(key), [n.replace("_", "-") for n in names], where)
    return name


RUN_TYPES = {"seed": int, "device": str, "plots": bool, "progress": bool, "threads": int}


def split_options(spec: JobSpec, options: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config options, run settings), keys normalised and checked; run settings coerced to their types."""
    config, run = {}, {}
    for key, value in options.items():
        name = normalize_key(spec, key, where)
        if name in RUN_KEYS:
            try:
                run[name] = coerce(name, RUN_TYPES[name], value)
            except BadInput as exc:
                raise BadInput(f"{where}: {exc}") from None
        else:
            config[name] = value
    return config, run


def _check_table(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key!r} must be a table, got {type(value).__name__}")
    return value


def _parse_sweep(spec: JobSpec, table: dict[str, Any], where: str) -> tuple[dict[str, list], list[int]]:
    grid: dict[str, list[Any]] = {}
    seeds: list[int] = []
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"{where}: sweep.{key} must be a non-empty list, got {values!r}")
        if key == SEEDS_KEY:
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in values):
                raise BadInput(f"{where}: sweep.seeds must be integers, got {values!r}")
            seeds = list(values)
            continue
        grid[normalize_key(spec, key, f"{where}: sweep", run_keys=("device",))] = list(values)
    return grid, seeds


def _apply_smoke(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Merge the [smoke] table into options (and its `sweep` sub-table into the sweep)."""
    smoke = dict(_check_table(data.get("smoke", {}), "smoke", where))
    sweep_over = _check_table(smoke.pop("sweep", {}), "smoke.sweep", where)
    merged = dict(data)
    merged["options"] = {**data.get("options", {}), **smoke}
    merged["sweep"] = {**data.get("sweep", {}), **sweep_over}
    return merged


def _parse_shards(spec: JobSpec, data: dict[str, Any], where: str) -> int | None:
    """The recipe's `shards`: an integer >= 1 for a shardable command without a sweep, or None."""
    from gentool.core.experiments.shards import sharding  # shards builds on recipes

    value = data.get("shards")
    if value is None:
        return None
    try:
        check_int("shards", value, 1)
        sharding(spec.command)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    if data.get("sweep"):
        raise BadInput(f"{where}: shards splits one run; a recipe with a sweep runs each point whole (remove "
                       "shards or the sweep table)")
    return value


def parse_recipe(data: dict[str, Any], path: Path, smoke: bool = False) -> Recipe:
    """Validate a parsed recipe table; `smoke` applies the [smoke] overrides. Every point's config is built
    once here, so a bad value anywhere in the grid is reported before anything runs."""
    where = str(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown("top-level key", key, list(TOP_LEVEL_KEYS), where)
    spec = job_spec(data.get("command"), where)
    if smoke:
        data = _apply_smoke(data, where)
    config, run = split_options(spec, _check_table(data.get("options", {}), "options", where), f"{where}: options")
    grid, seeds = _parse_sweep(spec, _check_table(data.get("sweep", {}), "sweep", where), where)
    slurm = _check_table(data.get("slurm", {}), "slurm", where)
    for key in slurm:
        if str(key).replace("-", "_") not in resources.slurm_keys():
            raise _unknown("slurm key", key, resources.slurm_keys(), where)
    resources.from_table(slurm, f"{where}: slurm")  # values checked before anything runs
    recipe = Recipe(path=path, command=spec.command, options=config, run=run, sweep=grid, seeds=seeds,
                    slurm=dict(slurm), description=str(data.get("description", "")), data=data,
                    shards=_parse_shards(spec, data, where))
    for options in grid_options(recipe):
        make_config(spec.config, {k: v for k, v in options.items() if k != "device"}, where)
    return recipe


def grid_options(recipe: Recipe) -> list[dict[str, Any]]:
    """The config options of every grid point (the cartesian product of the sweep lists)."""
    import itertools

    keys = list(recipe.sweep)
    return [{**recipe.options, **dict(zip(keys, values, strict=True))}
            for values in itertools.product(*(recipe.sweep[k] for k in keys))]


def override_keys(spec: JobSpec) -> list[str]:
    """Every `table.key` an override may set: options and sweep settings (dashes as in recipes), the sweep's
    seeds, run settings, the [slurm] table's keys, the description and shards."""
    names = [n.replace("_", "-") for f in config_fields(spec.config) for n in (f.name, *f.metadata.get("old", ()))]
    return (["description", "shards"] + [f"options.{n}" for n in [*names, *RUN_KEYS]] +
            [f"sweep.{n}" for n in [*names, SEEDS_KEY, "device"]] + [f"slurm.{k}" for k in resources.slurm_keys()])


def _bare(text: str) -> Any:
    """A value that is not TOML: `[a,b]` is a list of (TOML or bare) items, anything else the text itself."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        return [override_value(item.strip(), None) for item in inner[1:-1].split(",") if item.strip()]
    return text


def override_value(text: str, current: Any) -> Any:
    """The value of `key=text`, typed like the TOML value `current` it replaces: parsed as TOML (bare words
    and `[a,b]` allowed); a string setting keeps the text as a string, a float setting takes an integer
    as a float."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = _bare(text)
    if isinstance(current, str) and not isinstance(value, str):
        return text
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _table_key(data: dict[str, Any], table: str, key: str) -> str:
    """The key as the table spells it already (dashes or underscores), else `key` as given."""
    same = [k for k in data.get(table, {}) if str(k).replace("-", "_") == key.replace("-", "_")]
    return same[0] if same else key


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], where: str = "overrides"
                    ) -> dict[str, Any]:
    """A copy of the recipe table `data` with each `table.key=value` (`options.steps=10`,
    `sweep.sampler=[euler,heun]`, `slurm.time=120`) applied; an unknown key is `BadInput` naming the closest
    valid keys."""
    spec = job_spec(data.get("command"), where)
    valid = override_keys(spec)
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        dotted, sep, text = item.partition("=")
        key = dotted.strip().replace("_", "-")
        if not sep or key not in valid:
            near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            hint = f"; closest valid keys: {', '.join(near)}" if near else f"; valid keys: {', '.join(valid)}"
            raise BadInput(f"{where}: unknown override {item!r} (expected table.key=value){hint}")
        table, _, name = key.partition(".")
        if not name:
            out[table] = override_value(text, out.get(table))
            continue
        if table == "slurm":
            name = name.replace("-", "_")
        section = out.setdefault(table, {})
        name = _table_key(out, table, name)
        section[name] = override_value(text, section.get(name))
    return out


def load_recipe(path: str | Path, smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate the TOML recipe at `path` (missing file / bad TOML / bad key -> BadInput), with
    `table.key=value` overrides applied (`apply_overrides`) before validation."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe: {path} is a directory, not a TOML file" if path.is_dir() else
                       f"recipe not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: invalid TOML: {str(exc).splitlines()[0]}") from None
    if overrides:
        data = apply_overrides(data, overrides, f"{path}: overrides")
    recipe = parse_recipe(data, path)
    if smoke or "smoke" in data:  # the smoke-sized recipe is validated too, even when not asked for
        smoke_recipe = parse_recipe(data, path, smoke=True)
        recipe = smoke_recipe if smoke else recipe
    return replace(recipe, overrides=tuple(overrides))


def record_recipe(out: str | Path, recipe: Recipe) -> None:
    """Record the effective recipe (overrides applied) in a run directory that holds a run (`recipe.json`)."""
    from gentool.core.io import atomic_write_json
    from gentool.core.run.rundir import CONFIG

    if (Path(out) / CONFIG).is_file():
        atomic_write_json(Path(out) / "recipe.json", {"path": str(recipe.path), "overrides": list(recipe.overrides),
                                                      "effective": recipe.data})


def run_recipe(path: str | Path, out: str | Path | None = None, *, smoke: bool = False, resume: str = "never",
               **overrides: Any) -> Any:
    """Run a recipe's job (its options table; any sweep table is ignored) from Python, as `gentool run` does:
    `overrides` (settings or run settings seed/device/plots) win over the recipe; the run directory defaults
    to `runs/<recipe name>`. Returns the `RunResult`."""
    from gentool.core.run import execute, resolve_device

    recipe = load_recipe(path, smoke=smoke)
    config, run = split_options(recipe.spec, {**recipe.options, **recipe.run, **overrides}, "overrides")
    job = recipe.spec.make(make_config(recipe.spec.config, config), run.get("seed", 0),
                            resolve_device(run.get("device", "auto")))
    return execute(job, Path("runs") / recipe.name if out is None else out, resume=resume,
                   plots=run.get("plots", True))
