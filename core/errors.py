"""Errors the CLI turns into one line on stderr and a documented exit code (no traceback).

Exit codes (also in README and ARCHITECTURE.md):

    0    success
    2    BadInput: the user's input is wrong (unknown name, out-of-range value, missing or corrupt file,
         a run directory that is locked, owned by another command, or holds a different config)
    3    NumericalFailure: the computation diverged (non-finite state, step size collapse, max steps);
         the message names the step/unit and the knob to turn; also UserCodeFailure: the user's
         module:function raised during a run
    4    StorageError: the file system refused a read or write (permissions, full disk, not a directory)
    130  Interrupted: SIGINT/SIGTERM; the last completed unit is committed and resuming continues
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GentoolError(Exception):
    """Base class for errors reported without a traceback; `exit_code` is the process exit status."""

    exit_code = 1


class BadInput(GentoolError, ValueError):
    """Bad input: unknown name, out-of-range number, wrong shape, missing file, non-finite value."""

    exit_code = 2


class NumericalFailure(GentoolError, ArithmeticError):
    """The computation diverged; the message names where (step, time, unit) and what to try."""

    exit_code = 3


class UserCodeFailure(NumericalFailure):
    """The user's `module:function` raised while a run was computing (exit 3, like any failure of the
    computation; the same exception in the checks before a run starts is `BadInput`, exit 2)."""


class StorageError(GentoolError, OSError):
    """A file-system operation failed (the message names the path and the reason)."""

    exit_code = 4


class Interrupted(GentoolError):
    """The run was stopped by a signal after committing its last completed unit."""

    exit_code = 130


CONTAINERS = (dict, tuple, list, set, frozenset)


def choose(kind: str, value: str, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else raise `BadInput` naming the allowed values.

    The message suggests the nearest allowed name when one is close.
    """
    if isinstance(allowed, CONTAINERS) and isinstance(value, str) and value in allowed:
        return value  # the common case without sorting (`choose` runs on every solve; concrete types: no ABC check)
    options = sorted(allowed)
    if value in options:
        return value
    near = difflib.get_close_matches(str(value), options, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise BadInput(f"unknown {kind} {value!r}{hint}; allowed: {', '.join(options)}")


def require(condition: bool, message: str) -> None:
    """Raise `BadInput(message)` unless `condition` holds."""
    if not condition:
        raise BadInput(message)
