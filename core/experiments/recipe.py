"""Recipes: one TOML file naming a gentool subcommand, its options, and optionally a sweep.

A recipe looks like::

    description = "Sampler error vs NFE on the GMM ring"
    command = "sample"                 # or "optimize simplex", "mad-loop", ...
    [options]                          # keys are the command's option names
    target = "gmm-ring"
    n = 10000
    [sweep]                            # grids: the cartesian product is run
    sampler = ["euler", "heun"]
    steps = [5, 10, 20]
    seeds = [0, 1]                     # mapped onto the command's --seed
    [slurm]                            # defaults for `gentool sweep --executor slurm`
    partition = "gpu"
    [smoke]                            # overrides applied by --smoke (CI-sized run)
    n = 200
    sweep = { steps = [5] }

Option keys are validated against the real click command (so recipes cannot drift from
the CLI); an unknown key is a `BadInput` naming the nearest valid name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentool.core.errors import BadInput

Command = Any  # a click (or typer-vendored click) command; only duck-typed attributes are used

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOP_LEVEL_KEYS = ("command", "description", "options", "sweep", "slurm", "smoke")
SLURM_KEYS = ("partition", "time", "gpus", "cpus", "array_parallelism", "mem_gb")
SEEDS_KEY = "seeds"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: `command` is the subcommand path, `options` map option name -> value."""

    path: Path
    command: tuple[str, ...]
    options: dict[str, Any]
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def name(self) -> str:
        """The recipe's file stem (default run-directory name)."""
        return self.path.stem


def _unknown(kind: str, key: str, allowed: list[str], where: str) -> BadInput:
    near = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return BadInput(f"{where}: unknown {kind} {key!r}{hint}; allowed: {', '.join(sorted(allowed))}")


def resolve_command(root: Command, command: str | tuple[str, ...], where: str = "recipe"
                    ) -> Command:
    """Walk `root` (a click group) down the words of `command` ("optimize simplex") to a leaf command."""
    words = tuple(command.split()) if isinstance(command, str) else command
    if not words:
        raise BadInput(f"{where}: 'command' is empty")
    node = root
    for word in words:
        sub = getattr(node, "commands", {})
        if word not in sub:
            raise _unknown("command", word, list(sub), where)
        node = sub[word]
    if getattr(node, "commands", None) is not None:
        raise BadInput(f"{where}: command {' '.join(words)!r} needs a subcommand: {', '.join(node.commands)}")
    return node


def command_options(cmd: Command) -> dict[str, Any]:
    """Option name (click's python name, underscores) -> click option, `help` excluded."""
    return {p.name: p for p in cmd.params if p.param_type_name == "option" and p.name and p.name != "help"}


def normalize_key(cmd: Command, key: str, where: str) -> str:
    """Map a recipe key (dashes or underscores) to the command's option name, or raise BadInput."""
    options = command_options(cmd)
    name = key.replace("-", "_")
    if name not in options:
        raise _unknown(f"option for {cmd.name!r}", key, [n.replace("_", "-") for n in options], where)
    return name


def option_args(cmd: Command, options: dict[str, Any]) -> list[str]:
    """Command-line arguments for `options` (name -> value).

    Flags become `--x` / `--no-x`; lists join with ',' (e.g. `x = [1, 0.5]` -> `--x 1,0.5`).
    """
    params = command_options(cmd)
    args: list[str] = []
    for name, value in options.items():
        param = params[name]
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if param.is_flag:
            if value:
                args.append(flag)
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        args += [flag, text]
    return args


def _check_table(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key!r} must be a table, got {type(value).__name__}")
    return value


def _parse_sweep(cmd: Command, table: dict[str, Any], where: str) -> tuple[dict[str, list], list[int]]:
    grid: dict[str, list[Any]] = {}
    seeds: list[int] = []
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"{where}: sweep.{key} must be a non-empty list, got {values!r}")
        if key == SEEDS_KEY:
            if "seed" not in command_options(cmd):
                raise BadInput(f"{where}: sweep.seeds given but {cmd.name!r} has no --seed option")
            if not all(isinstance(s, int) for s in values):
                raise BadInput(f"{where}: sweep.seeds must be integers, got {values!r}")
            seeds = list(values)
            continue
        grid[normalize_key(cmd, key, f"{where}: sweep")] = list(values)
    return grid, seeds


def _apply_smoke(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Merge the [smoke] table into options (and its `sweep` sub-table into the sweep)."""
    smoke = dict(_check_table(data.get("smoke", {}), "smoke", where))
    sweep_over = _check_table(smoke.pop("sweep", {}), "smoke.sweep", where)
    merged = dict(data)
    merged["options"] = {**data.get("options", {}), **smoke}
    merged["sweep"] = {**data.get("sweep", {}), **sweep_over}
    return merged


def parse_recipe(data: dict[str, Any], root: Command, path: Path, smoke: bool = False) -> Recipe:
    """Validate a parsed recipe table against the CLI tree `root`; `smoke` applies the [smoke] overrides."""
    where = str(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown("top-level key", key, list(TOP_LEVEL_KEYS), where)
    if "command" not in data or not isinstance(data["command"], str):
        raise BadInput(f"{where}: missing 'command' (a string such as \"sample\" or \"optimize simplex\")")
    cmd = resolve_command(root, data["command"], where)
    if smoke:
        data = _apply_smoke(data, where)
    raw = _check_table(data.get("options", {}), "options", where)
    options = {normalize_key(cmd, k, f"{where}: options"): v for k, v in raw.items()}
    grid, seeds = _parse_sweep(cmd, _check_table(data.get("sweep", {}), "sweep", where), where)
    slurm = _check_table(data.get("slurm", {}), "slurm", where)
    for key in slurm:
        if key not in SLURM_KEYS:
            raise _unknown("slurm key", key, list(SLURM_KEYS), where)
    return Recipe(path=path, command=tuple(data["command"].split()), options=options, sweep=grid,
                  seeds=seeds, slurm=dict(slurm), description=str(data.get("description", "")))


def load_recipe(path: str | Path, root: Command, smoke: bool = False) -> Recipe:
    """Read and validate the TOML recipe at `path` (missing file / bad TOML / bad key -> BadInput)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: invalid TOML: {exc}") from None
    recipe = parse_recipe(data, root, path)
    if smoke:  # validate the full recipe first, then the smoke-sized one
        recipe = parse_recipe(data, root, path, smoke=True)
    return recipe
