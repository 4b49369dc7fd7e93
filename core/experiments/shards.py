"""Sharded jobs: one job whose units are independent, split over K tasks and merged exactly.

    outcome, merged = run_sharded("sample", config, seed, {"device": "cpu"}, "runs/big", 4, "slurm")

A shardable command names its independent units (`SHARDABLE`), split in one of these ways:

- by a part config, interleaved (mad-loop): the units are its seeds (seed ids `seed .. seed + seeds - 1`; every draw of
  seed id k comes from `generation_rng(k, t, stream)`, so a seed's numbers do not depend on which other seeds
  run with it); shard i is the mad-loop of seeds `[a_i, b_i)` alone. The merge's unit t holds every shard's
  rows of unit t in shard order (= seed order); the samples and snapshots are the first shard's (its first
  seed is the run's first seed).
- by unit range (sample: its batches): shard i runs units `a_i + 1 .. b_i` of the job itself
  (`gentool.core.run.contract.UnitRange`: the job's `start_at(a_i)` advances its noise stream past the
  earlier batches, so each batch gets the numbers of the whole run). The merge concatenates the shards'
  units in order and their final states (`merge_states` of the job class), so the merged `samples.npz`
  (x, x0, labels) is the whole run's, and `finish` computes the metrics (Fréchet distances, figures, PNGs
  numbered globally) once over all samples.
- by unit range, the benchmark's cases (bench samplers, bench solvers: `gentool.core.jobs.bench`, jobs of
  `RUNNABLE` though not commands of `JOBS`): shard i measures cases `a_i + 1 .. b_i`, each with its peers and
  floor in the same task (same-run ratios); the merge concatenates the rows in case order into one table.
- by a part config, concatenated (optimize compare: the table's entries): shard i is the comparison of
  entries `[a_i, b_i)` (their methods and Frank-Wolfe steps); the merge concatenates the shards' units and
  results (`merge_states`), and `finish` computes the table (F* over all methods) once.

Part directories are named by their range where the merge concatenates (`0001-units-11-20`), so another K
never resumes a different range; a part directory whose `point.json` records another run is refused.

Shard i runs in `OUT/parts/<id>` as an ordinary run (locked, resumable), submitted like the points of a sweep
(`OUT/parts` is their sweep directory: local, debug or Slurm executor; a re-run skips complete shards,
resumes a killed one from its last committed unit and waits for queued Slurm jobs).

Once every shard is complete, `merge(OUT)` writes `OUT` as the run directory of the unsharded job, through
`execute` like any run; `finish` of the unsharded job computes the summary, figures and metrics over all rows.
On CPU the merged `metrics.jsonl`, `samples.npz` and summary equal the unsharded run's (timings aside).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentool.core.config import config_dict, make_config
from gentool.core.errors import BadInput
from gentool.core.experiments.points import Point, check_point_dirs
from gentool.core.experiments.recipe import Recipe
from gentool.core.experiments.sweep import SweepOutcome, executor_options, plan, run_sweep
from gentool.core.io import atomic_write_json, load_torch_file, read_json, read_jsonl
from gentool.core.jobs import RUNNABLE
from gentool.core.jobs.bench import BENCHES
from gentool.core.mad.families import VECTORISED_FAMILIES
from gentool.core.progress import attach
from gentool.core.run import RunResult, execute, resolve_device
from gentool.core.run.contract import CountedUnits, Job, Row
from gentool.core.run.device import use_threads
from gentool.core.run.rundir import DONE, STATE, read_snapshot, snapshot_path

PARTS = "parts"
PLAN = "shards.json"


@dataclass(frozen=True)
class Sharding:
    """How a command splits: `units(config)` independent units; `part(config, seed, a, b)` the config and seed
    of the job that runs units [a, b) alone, or None: a shard runs units [a, b) of the job itself
    (`UnitRange`). `hint`: how to get more units than `units(config)`."""

    unit: str
    units: Callable[[Any], int]
    part: Callable[[Any, int, int, int], tuple[Any, int]] | None = None
    hint: str = ""
    concat: bool = True  # the merge concatenates the shards' units (False: unit t holds every shard's unit t)


def _mad_part(config: Any, seed: int, a: int, b: int) -> tuple[Any, int]:
    """Seeds a..b-1 of a mad-loop: seed ids `seed + a ..`; the vectorised families' sample metrics stay on
    the run's first `metric_seeds` seeds."""
    if config.family not in VECTORISED_FAMILIES:  # every seed gets the metrics; metric_seeds does not apply
        return dataclasses.replace(config, seeds=b - a), seed + a
    return dataclasses.replace(config, seeds=b - a, metric_seeds=max(0, min(b - a, config.metric_seeds - a))), seed + a


def _batches(config: Any) -> int:
    """A sample run's batches: ceil(n / batch_size) (one when batch_size is unset)."""
    return -(-int(config.n) // int(config.batch_size or config.n))


def _entries(config: Any) -> list[tuple[str, str, str]]:
    """An optimize compare's entries: (label, method, Frank-Wolfe step), in table order."""
    return config.entries(config.make_objective())


def _compare_part(config: Any, seed: int, a: int, b: int) -> tuple[Any, int]:
    """Entries a..b-1 of an optimize compare: their methods, and their Frank-Wolfe steps where frank-wolfe is
    among them (the entries of one method are consecutive, in the order of fw_steps); settings that none of
    the part's methods uses (`applies`) keep their defaults, as the applies rule asks."""
    entries = _entries(config)[a:b]
    methods = tuple(dict.fromkeys(m for _, m, _ in entries))
    steps = tuple(step for label, method, step in entries if label != method)  # frank-wolfe's name the step
    fields = dataclasses.fields(config)
    unused = {f.name: f.default for f in fields
              if not set(methods) & set(f.metadata.get("applies", {}).get("method", methods))}
    fw_default = next(f.default for f in fields if f.name == "fw_steps")
    return dataclasses.replace(config, methods=methods, fw_steps=steps or fw_default, **unused), seed


SHARDABLE = {
    "mad-loop": Sharding("seeds", lambda config: int(config.seeds), _mad_part, concat=False),
    "sample": Sharding("batches", _batches, hint="; the units are batches: set batch_size to n / shards or less"),
    "optimize compare": Sharding("entries", lambda config: len(_entries(config)), _compare_part,
                                 hint="; the units are the table's entries (methods, Frank-Wolfe steps)"),
    **{command: Sharding("cases", lambda config, c=command: len(BENCHES[c].cases(config)),
                         hint="; the units are the benchmark's cases") for command in BENCHES},
}


def shard_ranges(units: int, shards: int, hint: str = "") -> list[tuple[int, int]]:
    """`shards` contiguous unit ranges covering 0..units-1, sizes differing by at most one."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= units:
        raise BadInput(f"shards must be an integer in [1, {units}] (the job's independent units), got {shards!r}"
                       + hint)
    cuts = [units * i // shards for i in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def sharding(command: str) -> Sharding:
    """The command's `Sharding`, or `BadInput` naming the shardable commands."""
    if command not in SHARDABLE:
        raise BadInput(f"{command} cannot be sharded; shardable: {', '.join(SHARDABLE)}")
    return SHARDABLE[command]


def shard_points(command: str, config: Any, seed: int, run: dict[str, Any], out: Path, shards: int) -> list[Point]:
    """One point per shard, its run directory `OUT/parts/<i>`."""
    plan = sharding(command)
    points = []
    for i, (a, b) in enumerate(shard_ranges(plan.units(config), shards, plan.hint)):
        # a concatenated shard's range is in its directory's name: another --shards K never meets it
        pid = f"{i:04d}-{'units' if plan.part is None else plan.unit}-{a + 1}-{b}" if plan.concat else f"{i:04d}"
        if plan.part is not None:
            (part, part_seed), extra = plan.part(config, seed, a, b), {}
        else:
            part, part_seed, extra = config, seed, {"units": [a, b]}
        points.append(Point(pid, command, {plan.unit: f"{a}-{b - 1}"}, part_seed, config_dict(part),
                            {**run, "seed": part_seed, **extra}, str(out / PARTS / pid)))
    return points


def _setup(command: str, config: Any, seed: int, run: dict[str, Any], out: Path, shards: int, executor: str,
           slurm: dict[str, Any] | None, flags: dict[str, Any] | None) -> tuple[list[Point], Recipe, Any]:
    """The shards' points, the recipe they run under and the executor options (`slurm`: a recipe's [slurm]
    table; `flags`: `Resources` fields given on the command line, which win); nothing is written."""
    points = shard_points(command, config, seed, {**run, "plots": False}, out, shards)
    recipe = Recipe(path=Path(f"{out.name}-shards"), command=command, options=config_dict(config), run=run,
                    slurm=dict(slurm or {}))
    opts = executor_options(recipe, points, executor, **(flags or {}))
    check_point_dirs(points, "a shard of another run")
    return points, recipe, opts


def plan_sharded(command: str, config: Any, seed: int, run: dict[str, Any], out: str | Path, shards: int,
                 executor: str, slurm: dict[str, Any] | None = None, flags: dict[str, Any] | None = None
                 ) -> list[str]:
    """What `run_sharded` would do, as lines (each shard's state; Slurm: the complete sbatch script), as a
    sweep's dry run prints it; nothing is written or submitted."""
    out = Path(out)
    points, recipe, opts = _setup(command, config, seed, run, out, shards, executor, slurm, flags)
    return plan(recipe, points, out / PARTS, opts)


def stored_plan(out: str | Path) -> dict[str, Any] | None:
    """The sharded run recorded in `OUT/parts/shards.json` (command, config, seed, run, parts), or None."""
    try:
        plan_ = read_json(Path(out) / PARTS / PLAN)
    except (OSError, ValueError):
        return None
    return plan_ if isinstance(plan_, dict) and isinstance(plan_.get("config"), dict) else None


def run_sharded(command: str, config: Any, seed: int, run: dict[str, Any], out: str | Path, shards: int,
                executor: str, progress: Callable[..., None] | None = None, slurm: dict[str, Any] | None = None,
                flags: dict[str, Any] | None = None) -> tuple[SweepOutcome, RunResult | None]:
    """Run the shards (see the module docstring) and merge them once all are complete: (the shards' outcome,
    the merged run, or None while some shard is not complete). `run`: device, plots, threads of the run
    (shards draw no figures; the merge does); `slurm`: a recipe's [slurm] table for the shards' jobs, `flags`:
    `Resources` fields that override it."""
    out = Path(out)
    points, recipe, opts = _setup(command, config, seed, run, out, shards, executor, slurm, flags)
    atomic_write_json(out / PARTS / PLAN, {"command": command, "config": config_dict(config), "seed": seed,
                                           "run": run, "parts": [p.point_id for p in points],
                                           "merge": "concat" if sharding(command).concat else "interleave"})
    outcome = run_sweep(recipe, points, out / PARTS, opts, progress=progress)
    complete = all((Path(p.run_dir) / DONE).is_file() for p in points)
    return outcome, merge(out) if complete and not outcome.stopped else None


class MergedJob(CountedUnits):
    """The unsharded job replayed from its shards' committed units (a `Job` for `execute`)."""

    def __init__(self, job: Job, parts: list[Path]) -> None:
        self.job, self.parts, self.t = job, parts, 0
        self.command, self.config, self.seed = job.command, job.config, job.seed
        self.device = getattr(job, "device", None)
        self.hint = getattr(job, "hint", "")
        self.snapshot_every = getattr(job, "snapshot_every", 0)

    @property
    def units_total(self) -> int:
        return self.job.units_total

    def advance(self) -> list[Row]:
        """Unit t+1: each shard's rows of that unit, in shard order."""
        self.t += 1
        return [row for part in self.parts for row in read_jsonl(part / "units" / f"{self.t:06d}.jsonl")]

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])

    def samples(self) -> dict[str, Any] | None:
        """The first shard's samples after this unit (its snapshot), as the unsharded run keeps them."""
        path = snapshot_path(self.parts[0], self.t)
        return dict(read_snapshot(self.parts[0], self.t)) if path.is_file() else None

    def finish(self, out: Path, rows: list[Row], plots: bool) -> Row:
        return self.job.finish(out, rows, plots)


class ConcatJob(CountedUnits):
    """The unsharded job rebuilt from shards that ran consecutive ranges of its independent units (a `Job` for
    `execute`): the job holds the merged final state (`merge_states` of the job class over the shards' final
    states); the merged unit t is the unit of the shard that ran it, in order. Committed once, at the end
    (`checkpoint_every` = all units)."""

    def __init__(self, job: Any, parts: list[Path]) -> None:
        saved = [load_torch_file(path / STATE, "state file") for path in parts]
        states = [s["job"]["job"] if "unit_range" in s["job"] else s["job"] for s in saved]  # `UnitRange` or not
        job.load_state_dict(type(job).merge_states(states))
        self.job, self.t = job, 0
        self.units = [(path, int(s["units_done"])) for path, s in zip(parts, saved, strict=True)]
        self.command, self.config, self.seed = job.command, job.config, job.seed
        self.device = getattr(job, "device", None)
        self.hint = getattr(job, "hint", "")

    @property
    def units_total(self) -> int:
        return sum(n for _, n in self.units)

    def advance(self) -> list[Row]:
        """Unit t+1: the rows its shard committed for it."""
        self.t += 1
        local = self.t
        for path, n in self.units:
            if local <= n:
                return read_jsonl(path / "units" / f"{local:06d}.jsonl")
            local -= n
        raise IndexError(self.t)

    def state_dict(self) -> dict[str, Any]:
        return self.job.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.job.load_state_dict(state)
        self.t = self.job.units_done

    def samples(self) -> dict[str, Any] | None:
        return self.job.samples()

    def finish(self, out: Path, rows: list[Row], plots: bool) -> Row:
        return self.job.finish(out, rows, plots)


def merge(out: str | Path, progress: Callable[..., None] | None = None) -> RunResult:
    """Write `OUT` as the unsharded run from its complete shards (`gentool merge`); an incomplete shard is
    `BadInput` naming it."""
    out = Path(out)
    try:
        plan = read_json(out / PARTS / PLAN)
        command, stored, seed, run, parts = (plan["command"], plan["config"], int(plan["seed"]), plan["run"],
                                             [out / PARTS / p for p in plan["parts"]])
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(f"{out} holds no sharded run ({out / PARTS / PLAN} is missing or corrupt)") from None
    missing = [p.name for p in parts if not (p / DONE).is_file()]
    if missing:
        raise BadInput(f"cannot merge {out}: shard(s) {', '.join(missing)} not complete; re-run the same command "
                       "with its shards to finish them")
    spec = RUNNABLE[command]
    use_threads(run.get("threads"))  # the run's threads: its metrics sum in the order the unsharded run's do
    job = spec.make(make_config(spec.config, stored), seed, resolve_device(run.get("device", "auto")))
    attach(job, progress)  # the merge's metrics and figures phases
    if plan.get("merge", "interleave") == "interleave":
        merged: Any = MergedJob(job, parts)
        every = 1
    else:
        merged = ConcatJob(job, parts)
        every = merged.units_total
    return execute(merged, out, resume="auto", progress=progress, plots=bool(run.get("plots", True)),
                   checkpoint_every=every)
