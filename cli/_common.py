"""Shared CLI plumbing: one-line errors with exit code 2, rich progress, device selection."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import typer
from gentool.core.errors import BadInput, GentoolError, choose
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True)
console = Console()

EXIT_BAD_INPUT = 2


def print_table(table: Table) -> None:
    """Print a rich table; when stdout is not a terminal (a log file, a pipe) print it at its natural
    width instead of squeezing it into 80 columns, so no number is cut off."""
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(width=max(console.width, natural)).print(table)


def fail(message: str) -> typer.Exit:
    """Print `error: message` on one line to stderr and return the exit-2 exception to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def handle_errors(fn: F) -> F:
    """Decorator for commands: user errors become one line on stderr and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GentoolError as exc:
            fail(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except FileNotFoundError as exc:
            raise fail(f"file not found: {exc.filename or exc}") from None

    return wrapper  # type: ignore[return-value]


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu; `cuda` without a GPU is bad input."""
    choose("device", name.split(":")[0], ["auto", "cpu", "cuda"])
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} requested but CUDA is not available; allowed here: auto, cpu")
    return torch.device(name)


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield a `progress(done, total, **info)` callback rendered as a rich progress bar on stderr."""
    if not enabled:
        yield lambda done, total, **info: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=err_console, transient=False) as prog:
        task = prog.add_task(description, total=None, info="")

        def update(done: int, total: int, **info: float) -> None:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            prog.update(task, completed=done, total=total, info=text)

        yield update
