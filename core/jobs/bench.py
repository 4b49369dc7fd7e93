"""`bench samplers` and `bench solvers` as jobs whose units are the benchmark's cases, so they shard.

Unit i measures case i of the table (`sampler_cases`, `fixed_cases` then `adaptive_cases`): every contender
of the case (gentool, its peers, the floor) is timed together in the process that runs the unit, so every
ratio in a row is a same-run ratio, whichever shard ran it. The cases are independent: `start_at(a)` skips
to case a + 1 (a shard of `gentool.core.experiments.shards`), `merge_states` concatenates the shards' rows in
case order, and `finish` writes `<name>.json` (`{"machine": ..., <table>: rows}`) as the unsharded bench
command writes it. The timings of two runs differ by nature; the cases, columns and their order do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion import benchmark as sbench
from gentool.core.io import atomic_write_json
from gentool.core.run.contract import CountedUnits, JobSpec, Row
from gentool.core.solvers import benchmark as obench


@dataclass(frozen=True)
class Bench:
    """A benchmark's cases and how one is measured: `cases(config)` [(table, case)] in output order;
    `measure(job, table, case)` the case's row (`job.cache` keeps what its cases share: models, references)."""

    name: str
    tables: tuple[str, ...]
    cases: Callable[[Any], list[tuple[str, tuple]]]
    measure: Callable[[Any, str, tuple], dict]


def _sampler_row(job: BenchJob, table: str, case: tuple) -> dict:
    """`sbench.sampler_row` with the gmm-ring RMSE of the case's (sampler, NFE)."""
    cfg, cache = job.config, job.cache
    if "den" not in cache:
        cache["den"], cache["ref"] = sbench.MLPDenoiser(cfg.seed).to(job.device), sbench.ring_reference(cfg)
    name, _, nfe = case
    if (name, nfe) not in cache:
        cache[name, nfe] = sbench.ring_error(cfg, cache["ref"], name, nfe)
    return sbench.sampler_row(cfg, job.device, cache["den"], case, cache[name, nfe])


def _solver_row(job: BenchJob, table: str, case: tuple) -> dict:
    """`obench.fixed_row` or `obench.adaptive_row` on the case's field (made once per job)."""
    field = case[0] if table == "fixed" else "mlp2"
    if field not in job.cache:
        job.cache[field] = obench.make_field(field, job.device, job.config.seed)
    measure = obench.fixed_row if table == "fixed" else obench.adaptive_row
    return measure(job.config, job.device, job.cache[field], case)


BENCHES = {
    "bench samplers": Bench("samplers", ("samplers",),
                            lambda cfg: [("samplers", c) for c in sbench.sampler_cases(cfg)], _sampler_row),
    "bench solvers": Bench("solvers", ("fixed", "adaptive"),
                           lambda cfg: [("fixed", c) for c in obench.fixed_cases(cfg)] +
                           [("adaptive", c) for c in obench.adaptive_cases(cfg)], _solver_row),
}


class BenchJob(CountedUnits):
    """A benchmark run case by case. State: the cases measured (`t`) and their rows, tagged by table."""

    def __init__(self, command: str, config: Any, seed: int, device: torch.device) -> None:
        self.command, self.config, self.seed, self.device = command, config, int(seed), torch.device(device)
        self.bench = BENCHES[command]
        self.cases = self.bench.cases(config)
        self.t, self.rows = 0, []
        self.cache: dict[Any, Any] = {}

    @property
    def units_total(self) -> int:
        return len(self.cases)

    def start_at(self, first: int) -> None:
        """Skip to case `first + 1` (the cases are independent; nothing is carried over)."""
        self.t = first

    def advance(self) -> list[Row]:
        """Measure case t + 1: one row."""
        table, case = self.cases[self.t]
        row = self.bench.measure(self, table, case)
        self.t += 1
        self.rows.append([table, row])
        return [row]

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, self.rows = int(state["t"]), list(state["rows"])

    @staticmethod
    def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
        """The shards' rows in case order (the shards ran consecutive case ranges, the last one to the end)."""
        return {"t": int(states[-1]["t"]), "rows": [r for s in states for r in s["rows"]]}

    def samples(self) -> dict[str, Any] | None:
        return None

    def tables(self) -> dict[str, list[dict]]:
        """{table: its rows in case order}."""
        return {name: [row for table, row in self.rows if table == name] for name in self.bench.tables}

    def finish(self, out: Path, rows: list[Row], plots: bool) -> Row:
        """Write `<name>.json` as the unsharded bench command does: the machine and each table's rows."""
        atomic_write_json(out / f"{self.bench.name}.json",
                          {"machine": obench.machine_facts(self.device), **self.tables()})
        return {"cases": len(self.rows)}


def _spec(command: str, config: type, help: str) -> JobSpec:
    return JobSpec(command, config, lambda cfg, seed, device: BenchJob(command, cfg, seed, device), help,
                   out_default="runs/" + command.replace(" ", "-"))


SAMPLERS = _spec("bench samplers", sbench.SamplerBenchConfig, "Time every plan sampler, case by case.")
SOLVERS = _spec("bench solvers", obench.BenchConfig, "Time gentool's solvers against their peers, case by case.")
