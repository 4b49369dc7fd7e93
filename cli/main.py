"""The `gentool` application: every subcommand module exposes `register(app)`.

Usage errors (unknown option, missing value) are reported like every other bad input: one line on stderr,
exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from typing import Any

import typer
from gentool.cli._common import fail
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """A Typer group whose usage errors are one line (`error: ...`, exit 2) instead of a usage box."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except Exception as exc:
            if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage / parameter errors
                raise SystemExit(fail(exc.format_message(), exc.exit_code).exit_code) from None
            if type(exc).__name__ == "Abort":
                raise SystemExit(fail("aborted", 130).exit_code) from None
            raise
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="gentool",
    cls=OneLineErrors,
    help="Toolbox for generative-model experiments: diffusion-ODE sampling, MonoFlow, "
    "probability-space optimisation and self-consuming (MAD) loops.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, powershell)
)

# Each module exposes `register(app)`; order is the order shown in `gentool --help`.
SUBCOMMAND_MODULES = ("sample", "tune", "train", "bound", "monoflow", "optimize", "mad", "experiments", "bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gentool {metadata.version('gentool')}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """gentool: run the ideas of modern generative modelling."""


for _name in SUBCOMMAND_MODULES:
    importlib.import_module(f"gentool.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
