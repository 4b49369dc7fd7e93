"""gentool command-line interface (Typer). Thin: parses options, calls `gentool.core`, renders progress."""
