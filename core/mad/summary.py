"""Summaries of a loop's rows: per (generation, metric) statistics over seeds, as rows and as CSV."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

SUMMARY_COLUMNS = ("generation", "metric", "count", "mean", "std", "ci95_low", "ci95_high")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (generation, metric): count, mean, std (ddof 1), 95% CI `mean ± 1.96 std/√count`."""
    keys = sorted({k for r in rows for k in r} - {"seed", "generation"})
    by_gen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_gen[r["generation"]].append(r)
    out = []
    for t in sorted(by_gen):
        for k in keys:
            v = np.array([r[k] for r in by_gen[t] if r.get(k) is not None], dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            std = float(v.std(ddof=1)) if v.size > 1 else 0.0
            half = 1.96 * std / math.sqrt(v.size)
            mean = float(v.mean())
            out.append({"generation": t, "metric": k, "count": int(v.size), "mean": mean, "std": std,
                        "ci95_low": mean - half, "ci95_high": mean + half})
    return out


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """`summarize(rows)` as CSV text (floats with 10 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.10g}" if isinstance(v, float) else str(v)

    lines = [",".join(SUMMARY_COLUMNS)]
    lines += [",".join(cell(s[c]) for c in SUMMARY_COLUMNS) for s in summarize(rows)]
    return "\n".join(lines) + "\n"
