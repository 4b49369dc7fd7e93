"""`gentool tune`: options generated from `gentool.core.jobs.tune.TuneConfig`."""

from __future__ import annotations

import typer
from gentool.cli._jobs import register_job
from gentool.core.jobs import JOBS


def register(app: typer.Typer) -> None:
    register_job(app, JOBS["tune"], "tune")
