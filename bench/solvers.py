"""Solver benchmark script: `python bench/solvers.py [--batch-sizes 256,4096] [--steps 50] [--device cpu]`.

Same options and tables as `gentool bench solvers` (it runs the same command function).
"""

from __future__ import annotations

import typer
from gentool.cli.bench import solvers

if __name__ == "__main__":
    typer.run(solvers)
