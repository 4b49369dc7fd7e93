"""Solver failures: numerical, not the user's input (the CLI exits with `NumericalFailure.exit_code`)."""

from __future__ import annotations

from gentool.core.errors import NumericalFailure


class NonFiniteState(NumericalFailure):
    """The state became NaN/inf; the message names the step index and time (also kept as attributes)."""

    def __init__(self, message: str, step: int | None = None, time: float | None = None) -> None:
        super().__init__(message)
        self.step, self.time = step, time


class MaxStepsExceeded(NumericalFailure):
    """An adaptive solve needed more than `max_steps` steps for some sample."""
