"""Solver failures: numerical, not the user's input (the CLI exits with `NumericalFailure.exit_code`)."""

from __future__ import annotations

from gentool.core.errors import NumericalFailure


class NonFiniteState(NumericalFailure):
    """The state became NaN/inf; the message names the step index and time."""


class MaxStepsExceeded(NumericalFailure):
    """An adaptive solve needed more than `max_steps` steps for some sample."""
