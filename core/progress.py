"""Progress reporting: the core calls a callback, the CLI renders it (`gentool.cli._progress`).

A callback is called as `progress(done, total, **info)`: `done` of `total` units of the current phase
(`total <= 0`: unknown), `info` scalar metrics, the first of which is shown as the key metric. The reserved
key `phase` (a string) names a phase of work other than a job's units (a reference solve, metrics, figures,
a merge, waiting for jobs); the renderer gives each phase its own line, so every long phase is visible.

Jobs whose `finish` has long phases declare a `progress` attribute (`Reports`); whoever runs the job hands it
the callback with `attach(job, callback)` before running it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

PHASE = "phase"


class Progress(Protocol):
    """Called as `progress(done, total, **info)`; `info` holds scalar metrics to display (and `phase`)."""

    def __call__(self, done: int, total: int, **info: Any) -> None: ...


def no_progress(done: int, total: int, **info: Any) -> None:
    """Default callback: ignore progress."""


def in_phase(progress: Progress | None, name: str) -> Progress:
    """A callback that reports to `progress` as phase `name` (a no-op callback when `progress` is None)."""
    if progress is None:
        return no_progress

    def report(done: int, total: int, **info: Any) -> None:
        progress(done, total, **{PHASE: name, **info})

    return report


@contextmanager
def one_step(progress: Progress | None, name: str) -> Iterator[None]:
    """A phase of one step (a figure, a summary): reported as 0 of 1 before the block and 1 of 1 after it."""
    report = in_phase(progress, name)
    report(0, 1)
    yield
    report(1, 1)


class Reports:
    """Mixin for jobs that report the phases of their `finish` (metrics, reference solves, figures) through
    `self.progress`; the default callback ignores them."""

    progress: Progress = staticmethod(no_progress)  # type: ignore[assignment]


def position(job: Any) -> tuple[int, int]:
    """The (done, total) shown for a job after each unit: its own counter when it has one
    (`progress_position()`, e.g. the iterations of an optimiser that stops early, where a count of units
    would claim work that was never done), else its units."""
    own = getattr(job, "progress_position", None)
    return own() if own is not None else (job.units_done, job.units_total)


def attach(job: Any, progress: Progress | None) -> None:
    """Hand `progress` to a job that reports phases (one with a `progress` attribute); others are unchanged."""
    if progress is not None and hasattr(job, "progress"):
        job.progress = progress
