"""SIGINT/SIGTERM handling for a run: stop the computation at once, but never in the middle of a commit.

While `StopOnSignal` is active, a SIGINT or SIGTERM raises `Interrupted` immediately, unless a commit is
being written (`with stop.committing():`), in which case the commit finishes first and `Interrupted` is
raised when it ends. Either way the run directory holds the last completed unit, so the run resumes.
Outside the main thread (where Python cannot install handlers) the guard does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from gentool.core.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """Context manager installing the handlers; `message` is the text of the raised `Interrupted`."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._writing = False
        self._pending: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._writing:
            self._pending = signum
            return
        raise Interrupted(f"{signal.Signals(signum).name}: {self.message}")

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Defer signals until the block (a commit) has finished."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(f"{signal.Signals(signum).name}: {self.message}")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
