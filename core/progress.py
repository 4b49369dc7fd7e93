"""Progress reporting: the core calls a callback, the CLI renders it (rich)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as `progress(done, total, **info)`; `info` holds scalar metrics to display."""

    def __call__(self, done: int, total: int, **info: float) -> None: ...


def no_progress(done: int, total: int, **info: float) -> None:
    """Default callback: ignore progress."""
