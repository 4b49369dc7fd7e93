"""Summaries of a loop's rows: per (generation, metric) statistics over seeds, as rows and as CSV.

Collapse is heavy-tailed (the mean of σ² stays at 1 while its median falls), so next to the mean, standard
deviation, standard error and 95% CI (`mean ± 1.96 sem`) every row has the median and the 5/25/75/95 % quantiles
(numpy's default linear interpolation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}
SUMMARY_COLUMNS = ("generation", "metric", "count", "mean", "std", "sem", "ci95_low", "ci95_high", *QUANTILES)


def describe(values: np.ndarray) -> dict[str, Any]:
    """count, mean, std (ddof 1), sem = std/√count, the 95% CI and the quantiles of the finite `values`."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    sem = std / math.sqrt(v.size) if v.size else math.nan
    mean = float(v.mean()) if v.size else math.nan
    out = {"count": int(v.size), "mean": mean, "std": std, "sem": sem, "ci95_low": mean - 1.96 * sem,
           "ci95_high": mean + 1.96 * sem}
    q = np.quantile(v, list(QUANTILES.values())) if v.size else [math.nan] * len(QUANTILES)
    return {**out, **{name: float(x) for name, x in zip(QUANTILES, q, strict=True)}}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (generation, metric): `describe` over the rows' finite values (metrics with none are left out)."""
    keys = sorted({k for r in rows for k in r} - {"seed", "generation"})
    by_gen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_gen[r["generation"]].append(r)
    out = []
    for t in sorted(by_gen):
        for k in keys:
            stats = describe(np.array([r[k] for r in by_gen[t] if r.get(k) is not None], dtype=float))
            if stats["count"]:
                out.append({"generation": t, "metric": k, **stats})
    return out


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """`summarize(rows)` as CSV text (floats with 10 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.10g}" if isinstance(v, float) else str(v)

    lines = [",".join(SUMMARY_COLUMNS)]
    lines += [",".join(cell(s[c]) for c in SUMMARY_COLUMNS) for s in summarize(rows)]
    return "\n".join(lines) + "\n"
