"""Progress lines on stderr for the core's `progress(done, total, **info)` callbacks (`gentool.core.progress`).

One line per phase, fitted to the terminal width (80 columns and up):

    sample: reference solve  [########.........]  4/9  1.3/s  eta 0:04  sigma=0.2

description, bar, counts, rate, ETA and the key metric (the first `info` value); the bar shrinks first, then
the description, then the metric, so the numbers stay readable. On a terminal the line is redrawn in place
(at most 10 times a second); elsewhere (a log file, a pipe) plain lines are written at most every
`plain_every` seconds and at the end of each phase.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from gentool.core.progress import PHASE

MIN_BAR = 6
MAX_BAR = 30
DESCRIPTION_MAX = 32


def fmt_duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def fmt_rate(per_s: float) -> str:
    """Units per second (`12.5/s`), or seconds per unit (`3.2s/it`) when slower than one a second."""
    if per_s <= 0 or not math.isfinite(per_s):
        return ""
    return f"{per_s:.3g}/s" if per_s >= 1 else f"{1 / per_s:.3g}s/it"


def fmt_value(key: str, value: Any) -> str:
    """`key=value`, floats with 4 significant digits."""
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def format_line(description: str, done: int, total: int, elapsed: float, done_at_start: int = 0,
                info: dict[str, Any] | None = None, width: int = 80) -> str:
    """The progress line of `done` of `total` units after `elapsed` seconds (rate counted from
    `done_at_start`, the units already done when the phase began, e.g. on resume), at most `width` characters."""
    per_s = (done - done_at_start) / elapsed if elapsed > 0 else 0.0
    known = total > 0
    counts = f"{done}/{total}" if known else f"{done}"
    eta = f"eta {fmt_duration((total - done) / per_s)}" if known and per_s > 0 and done < total else ""
    clock = fmt_duration(elapsed) if not known or done >= total else ""
    metric = fmt_value(*next(iter(info.items()))) if info else ""
    numbers = "  ".join(p for p in (counts, fmt_rate(per_s), eta or clock) if p)
    desc = _clip(description, max(8, min(DESCRIPTION_MAX, width - len(numbers) - 2)))
    room = width - len(desc) - len(numbers) - 4 - (len(metric) + 2 if metric else 0) - 2  # 2: the brackets
    if known and room >= MIN_BAR:
        cells = min(MAX_BAR, room)
        filled = min(cells, int(cells * done / total))
        bar = "[" + "#" * filled + "." * (cells - filled) + "]"
    else:
        bar = ""
    line = "  ".join(p for p in (desc, bar, numbers) if p)
    if metric and width - len(line) - 2 >= min(8, len(metric)):
        line = line + "  " + _clip(metric, width - len(line) - 2)
    return _clip(line, width)


class ProgressLine:
    """A `progress(done, total, **info)` callback that draws progress lines on `stream` (see the module
    docstring); `description` names the command, a `phase` in `info` is added to it. Call `close()` at the end."""

    def __init__(self, description: str, stream: TextIO | None = None, *, tty: bool | None = None,
                 width: int | None = None, plain_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width, self.plain_every, self.clock = width, plain_every, clock
        self.base, self.phase, self.started = description, None, None
        self.drawn, self.first, self.last = -math.inf, 0, ""
        self.pending = False  # the latest state is not written (plain), or its line is not ended (terminal)

    def columns(self) -> int:
        """The line width: `width`, else the terminal's (`COLUMNS`), one less on a terminal (no wrap)."""
        cols = self.width or shutil.get_terminal_size((80, 24)).columns
        return max(40, cols - 1 if self.tty else cols)

    def __call__(self, done: int, total: int, **info: Any) -> None:
        phase = info.pop(PHASE, None)
        now = self.clock()
        if self.started is None or phase != self.phase:
            self.close()
            self.phase, self.started, self.first, self.drawn = phase, now, done, -math.inf
        description = f"{self.base}: {phase}" if phase else self.base
        self.last = format_line(description, done, total, now - self.started, self.first, info, self.columns())
        finished = total > 0 and done >= total
        if finished or now - self.drawn >= (0.1 if self.tty else self.plain_every):
            self.drawn = now
            self.stream.write(("\r" + self.last + "\x1b[K") if self.tty else self.last + "\n")
            self.pending = self.tty
            if finished:
                self.close()
        else:
            self.pending = True
        self.stream.flush()

    def close(self) -> None:
        """End the current line with the latest state (at a phase change, and once at the end)."""
        if self.pending:
            self.stream.write(("\r" + self.last + "\x1b[K\n") if self.tty else self.last + "\n")
            self.stream.flush()
        self.pending = False
