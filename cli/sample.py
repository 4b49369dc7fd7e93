"""`gentool sample`: options generated from `gentool.core.jobs.sample.SampleConfig`; the help ends with the
sampler table (NFE per step, order, options) generated from the sampler registry."""

from __future__ import annotations

import dataclasses

import typer
from gentool.cli._jobs import register_job
from gentool.core.diffusion import sampler_table
from gentool.core.jobs import JOBS


def sampler_help() -> str:
    """The sampler table as help text (non-breaking spaces keep the columns)."""
    rows = sampler_table().replace("[", "\\[").splitlines()
    return "Samplers (order: observed convergence order on the EDM grid):\n\n" + "\n".join(
        row.replace(" ", "\u00a0") for row in rows)


def register(app: typer.Typer) -> None:
    spec = JOBS["sample"]
    register_job(app, dataclasses.replace(spec, help=f"{spec.help}\n\n{sampler_help()}"), "sample")
