"""Shared CLI plumbing: one-line errors with documented exit codes, progress lines, tables.

Exit codes: 2 bad input, 3 numerical failure, 4 file-system error, 130 interrupted (see
`gentool.core.errors`). Error text is written to stderr literally (no markup is interpreted).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from gentool.cli._extras import missing_extra
from gentool.cli._progress import ProgressLine
from gentool.core.errors import BadInput, GentoolError, Interrupted, StorageError
from rich.console import Console
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])
console = Console()


def print_table(table: Table) -> None:
    """Print a rich table; when stdout is not a terminal (a log file, a pipe) print it at its natural
    width instead of squeezing it into 80 columns, so no number is cut off."""
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(width=max(console.width, natural)).print(table)


def rows_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """A rich table of rows (the first row's keys are the columns; floats with 4 significant digits)."""
    table = Table(title=title or None)
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="left" if isinstance(rows[0][key], str) else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)
                        for v in row.values()))
    return table


def warn(text: str) -> None:
    """`warning: text` as one line on stderr."""
    sys.stderr.write("warning: " + " ".join(str(text).split()) + "\n")
    sys.stderr.flush()


def say(text: str) -> None:
    """Print a line of results to stdout literally (paths and user values are not markup)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = BadInput.exit_code) -> typer.Exit:
    """Write `error: message` as one line to stderr; return the `typer.Exit(code)` to raise."""
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    return typer.Exit(code)


def error_exit(exc: BaseException) -> typer.Exit:
    """The one-line report and exit code of an exception raised by a command."""
    if isinstance(exc, Interrupted):
        return fail(f"{exc}; continue with --resume", exc.exit_code)
    if isinstance(exc, GentoolError):
        return fail(str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return fail("interrupted", Interrupted.exit_code)
    if isinstance(exc, FileNotFoundError):
        return fail(f"file not found: {exc.filename or exc}", BadInput.exit_code)
    assert isinstance(exc, OSError)
    where = f": {exc.filename}" if exc.filename else ""
    return fail(f"file system error{where}: {exc.strerror or exc}", StorageError.exit_code)


def handle_errors(fn: F) -> F:
    """Decorator for commands: expected failures become one line on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (GentoolError, OSError, KeyboardInterrupt) as exc:
            raise error_exit(exc) from None
        except ModuleNotFoundError as exc:  # an optional extra's package: one line naming its pip install
            hint = missing_extra(exc)
            if hint is None:
                raise
            raise fail(hint, BadInput.exit_code) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield a `progress(done, total, **info)` callback drawn as progress lines on stderr (`cli._progress`:
    one line per phase, fitted to the terminal width, plain lines when stderr is not a terminal).

    The line appears at the first update, so a command that fails before doing any work prints only its
    one-line error.
    """
    if not enabled:
        yield lambda done, total, **info: None
        return
    line = ProgressLine(description)
    try:
        yield line
    finally:
        line.close()


def format_numbers(values: dict[str, Any]) -> str:
    """`key=value` pairs, floats with 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
