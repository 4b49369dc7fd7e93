"""Exceptions the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GentoolError(Exception):
    """Base class for errors that are the user's to fix (reported without a traceback)."""


class BadInput(GentoolError, ValueError):
    """Bad input: unknown name, out-of-range number, wrong shape, missing file, non-finite value."""


def choose(kind: str, value: str, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else raise `BadInput` naming the allowed values.

    The message suggests the nearest allowed name when one is close.
    """
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
