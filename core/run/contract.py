"""The `Job` protocol every long-running gentool job implements (MAD loops, MonoFlow, training, sampling,
optimisers). A job is built from a typed config dataclass, a seed and a device; `execute` owns everything
that touches the run directory, so a job never writes files itself except through `finish`.

Unit semantics: `advance()` performs one unit of work (a generation, a chunk of training steps, a batch of
samples) and returns its metric rows. After a unit, `state_dict()` must capture everything needed to
continue bit-identically (weights, optimiser state, RNG states, particles), because `execute` may
checkpoint it and a later process may `load_state_dict` it and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from gentool.core.errors import BadInput

Row = dict[str, Any]


@runtime_checkable
class Job(Protocol):
    """One run of one command.

    `command`: the owner name written into the run directory ("mad-loop", "train", ...).
    `config`: the (frozen) config dataclass; with `seed` it defines the numbers.
    `units_total`: the planned number of units (an upper bound when the job can stop early).
    `units_done`: units completed so far (restored by `load_state_dict`).
    `done`: True when no unit is left (`units_done == units_total`, or an early stop such as convergence).
    """

    command: ClassVar[str]
    config: Any
    seed: int

    @property
    def units_total(self) -> int: ...

    @property
    def units_done(self) -> int: ...

    @property
    def done(self) -> bool: ...

    def advance(self) -> list[Row]:
        """Run one unit; return its rows (plain numbers and strings)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last completed unit."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`."""
        ...

    def samples(self) -> dict[str, Any] | None:
        """Arrays describing the current result (written as `samples.npz` at every checkpoint), or None."""
        ...

    def finish(self, out: Path, rows: list[Row], plots: bool) -> Row:
        """Write the final artefacts (summaries, figures) into `out` atomically; return the headline numbers."""
        ...


SEED_MAX = 2**63 - 1  # seeds are in [0, SEED_MAX]: torch and numpy generators take them with room for offsets


def check_seed(seed: Any) -> int:
    """`seed` if it is an integer in [0, SEED_MAX], else `BadInput` naming the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise BadInput(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed


@dataclass(frozen=True)
class JobSpec:
    """How to build one command's job."""

    command: str
    config: type
    build: Callable[[Any, int, torch.device], Job]
    help: str
    out_default: str = ""  # default run directory ("runs/<command>" when empty)

    def make(self, config: Any, seed: int, device: torch.device) -> Job:
        """The job of `config` and `seed` (checked first: every caller builds jobs through here)."""
        return self.build(config, check_seed(seed), device)

    @property
    def default_out(self) -> str:
        return self.out_default or "runs/" + self.command.replace(" ", "-")




class SteppedUnits:
    """Mixin for jobs whose progress is a step counter cut into units of `step_chunk` steps: provides
    `units_total`, `units_done`, `done` and `next_chunk()` from `step_count`, `step_total`, `step_chunk`."""

    step_count: int
    step_total: int
    step_chunk: int

    @property
    def units_total(self) -> int:
        return -(-self.step_total // self.step_chunk)

    @property
    def units_done(self) -> int:
        return -(-self.step_count // self.step_chunk)

    @property
    def done(self) -> bool:
        return self.step_count >= self.step_total

    def progress_position(self) -> tuple[int, int]:
        """Steps done of the total: what the progress line counts (a unit is `step_chunk` steps)."""
        return self.step_count, self.step_total

    def next_chunk(self) -> int:
        """Steps to the end of the current unit (never past `step_total`)."""
        return min(self.step_chunk - self.step_count % self.step_chunk, self.step_total - self.step_count)


class CountedUnits:
    """Mixin for jobs that count their finished units in `t`: provides `units_done` and `done` from the job's
    `units_total`."""

    t: int
    units_total: int

    @property
    def units_done(self) -> int:
        return self.t

    @property
    def done(self) -> bool:
        return self.t >= self.units_total


class BatchedUnits:
    """Mixin for jobs whose units are batches of `config.n` items, `config.batch_size` at a time (all at once
    when None): provides `batch`, `units_total`, `done` and `next_batch()` from the job's `units_done`."""

    config: Any

    @property
    def batch(self) -> int:
        return self.config.batch_size or self.config.n

    @property
    def units_total(self) -> int:
        return -(-self.config.n // self.batch)

    @property
    def done(self) -> bool:
        return self.units_done >= self.units_total

    def next_batch(self) -> tuple[int, int]:
        """`(first, b)`: the index of the next batch's first item and its size (the last batch may be short)."""
        first = self.units_done * self.batch
        return first, min(self.batch, self.config.n - first)


class UnitRange:
    """Units `first + 1 .. stop` of `job` alone, as one shard of a job whose units are independent (a `Job`).

    The job implements `start_at(first)`: afterwards its `units_done` is `first` and its next unit is unit
    `first + 1` of the whole run, with the numbers the whole run gives it (its noise stream advanced past the
    earlier units' draws). The shard's own units are counted from 1 (`units_done - first`); its state records
    the range, so a directory of another range is refused on resume. `finish` writes nothing: the merge of
    the shards computes the summary over the whole run (`gentool.core.experiments.shards`)."""

    def __init__(self, job: Any, first: int, stop: int) -> None:
        if not 0 <= first < stop <= job.units_total:
            raise BadInput(f"unit range {first}..{stop} is not inside the job's units 0..{job.units_total}")
        job.start_at(first)
        self.job, self.first, self.stop = job, first, stop
        self.command, self.config, self.seed = job.command, job.config, job.seed
        self.device = getattr(job, "device", None)
        self.hint = getattr(job, "hint", "")

    @property
    def units_total(self) -> int:
        return self.stop - self.first

    @property
    def units_done(self) -> int:
        return self.job.units_done - self.first

    @property
    def done(self) -> bool:
        return self.units_done >= self.units_total

    def advance(self) -> list[Row]:
        return self.job.advance()

    def state_dict(self) -> dict[str, Any]:
        return {"unit_range": [self.first, self.stop], "job": self.job.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stored = list(state["unit_range"])
        if stored != [self.first, self.stop]:
            raise BadInput(f"it holds units {stored[0]}..{stored[1]} of the run, not {self.first}..{self.stop}")
        self.job.load_state_dict(state["job"])

    def samples(self) -> dict[str, Any] | None:
        return self.job.samples()

    def finish(self, out: Path, rows: list[Row], plots: bool) -> Row:
        return {"first_unit": self.first, "stop_unit": self.stop}
