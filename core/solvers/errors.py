"""Solver-specific user errors (the CLI reports them on one line, exit code 2)."""

from __future__ import annotations

from gentool.core.errors import BadInput, GentoolError


class NonFiniteState(BadInput):
    """The state became NaN/inf; the message names the step index and time."""


class MaxStepsExceeded(GentoolError):
    """An adaptive solve needed more than `max_steps` steps for some sample."""
