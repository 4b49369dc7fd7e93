"""`gentool optimize simplex|compare|particles|topk`: options generated from the optimize jobs' configs."""

from __future__ import annotations

import typer
from gentool.cli._jobs import register_job
from gentool.core.jobs import JOBS

optimize_app = typer.Typer(help="Optimise over probability distributions: the simplex, particles "
                                "following a Wasserstein gradient flow, or smooth Top-k maps.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `gentool optimize simplex|compare|particles|topk`."""
    register_job(optimize_app, JOBS["optimize simplex"], "simplex")
    register_job(optimize_app, JOBS["optimize compare"], "compare")
    register_job(optimize_app, JOBS["optimize particles"], "particles")
    register_job(optimize_app, JOBS["optimize topk"], "topk")
    app.add_typer(optimize_app, name="optimize")
