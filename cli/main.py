"""The `gentool` Typer application: registers one module per subcommand."""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata

import typer

app = typer.Typer(
    name="gentool",
    help="Toolbox for generative-model experiments: diffusion-ODE sampling, MonoFlow, "
    "probability-space optimisation and self-consuming (MAD) loops.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# Each module exposes `register(app)`; order is the order shown in `gentool --help`.
SUBCOMMAND_MODULES = ("sample", "train", "monoflow", "optimize", "mad", "experiments", "bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gentool {metadata.version('gentool')}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """gentool: run the ideas of modern generative modelling."""


for _name in SUBCOMMAND_MODULES:
    if importlib.util.find_spec(f"gentool.cli.{_name}") is not None:
        importlib.import_module(f"gentool.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
