"""Reports: merge every completed run of a sweep into one tidy table and draw comparison plots.

Tidy table: one row per JSONL row (`*.jsonl` in a run directory) or per `metrics.json`, with
columns `point`, `source`, the sweep parameters, `seed`, then the row's own fields.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gentool.core import plots
from gentool.core.errors import BadInput
from gentool.core.experiments.sweep import DONE, POINT
from gentool.core.io import atomic_write_json, atomic_write_text, read_json, read_jsonl

X_COLUMNS = ("generation", "step", "iter", "round")
NFE_COLUMN = "nfe"
NOT_METRICS = {"seconds", "samples_per_s", "seed", "n_train", NFE_COLUMN, *X_COLUMNS}


def completed_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of `sweep_dir` carrying a completion marker, sorted by name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise BadInput(f"sweep directory not found: {sweep_dir}")
    return sorted(d for d in sweep_dir.iterdir() if (d / DONE).is_file() and (d / POINT).is_file())


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Keep scalar fields; lists/dicts are dropped from the tidy table."""
    return {k: v for k, v in row.items() if isinstance(v, str | int | float | bool) or v is None}


def _read(path: Path, reader: Any) -> Any:
    """`reader(path)`, with a corrupt file reported as bad input naming it."""
    try:
        return reader(path)
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"{path} is corrupt (not valid JSON); re-run that point or delete it") from None


def run_rows(run_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(parameter columns, tidy rows) of one completed run directory."""
    point = _read(run_dir / POINT, read_json)
    try:
        base = {"point": point["point_id"], **point["params"], "seed": point["seed"]}
    except (KeyError, TypeError):
        raise BadInput(f"{run_dir / POINT} is corrupt (missing point_id/params/seed)") from None
    rows = []
    for path in sorted(run_dir.glob("*.jsonl")):
        rows += [{**base, "source": path.name, **_flat(r)} for r in _read(path, read_jsonl)]
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        rows.append({**base, "source": metrics.name, **_flat(_read(metrics, read_json))})
    return list(point["params"]), rows


def merge(sweep_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(sweep parameter names, tidy rows of all completed runs)."""
    runs = completed_runs(sweep_dir)
    if not runs:
        raise BadInput(f"no completed runs in {sweep_dir} (run `gentool sweep` first)")
    params: list[str] = []
    rows: list[dict[str, Any]] = []
    for run in runs:
        names, run_rows_ = run_rows(run)
        params += [n for n in names if n not in params]
        rows += run_rows_
    return params, rows


def columns(rows: Iterable[dict[str, Any]], params: list[str]) -> list[str]:
    """Column order: point, source, parameters, seed, then the rows' fields in first-seen order."""
    cols = ["point", "source", *params, "seed"]
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def write_table(out_dir: str | Path, params: list[str], rows: list[dict[str, Any]],
                failed: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write `report.csv` and `report.json` (atomically; `failed`: the sweep's failed points with their
    reasons, see `sweep.failures`); return their paths."""
    out_dir = Path(out_dir)
    cols = columns(rows, params)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(out_dir / "report.csv", buf.getvalue())
    json_path = atomic_write_json(out_dir / "report.json", {"parameters": params, "columns": cols,
                                                            "rows": rows, "failed": failed or []})
    return csv_path, json_path


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_names(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    """Numeric row fields that are metrics (not parameters, counters or timings)."""
    skip = {*params, *NOT_METRICS}
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in skip and k not in names and _numeric(v)]
    return names


def _final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows at the largest generation/step/iter of a run's source (all of them when there is no x)."""
    x = next((c for c in X_COLUMNS if any(c in r for r in rows)), None)
    if x is None:
        return rows
    last = max(r[x] for r in rows if _numeric(r.get(x)))
    return [r for r in rows if r.get(x) == last]


def summary(params: list[str], rows: list[dict[str, Any]], max_metrics: int = 6
            ) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of a per-run summary: parameters, sweep seed, source, final x and the mean of
    each metric over the rows at the final generation/step/iter (e.g. over a run's inner seeds)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["point"], row["source"])].append(row)
    finals = {key: _final_rows(group) for key, group in groups.items()}
    metrics = metric_names([r for f in finals.values() for r in f], params)[:max_metrics]
    x = next((c for c in X_COLUMNS if any(c in r for r in rows)), None)
    header = [*params, "point seed", "source", *([x] if x else []), *metrics]
    body = []
    for (point, source), final in finals.items():
        first = final[0]
        means = []
        for m in metrics:
            vals = [r[m] for r in final if _numeric(r.get(m))]
            means.append(sum(vals) / len(vals) if vals else "")
        seed = _point_seed(point)
        body.append([*(first.get(p, "") for p in params), seed, source,
                     *([first.get(x, "")] if x else []), *means])
    return header, body


def _point_seed(point_id: str) -> str:
    """The sweep seed encoded in a point id (`...__seed-S`), or ''."""
    last = point_id.rsplit("__", 1)[-1]
    return last[len("seed-"):] if last.startswith("seed-") else ""


def _group_label(row: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={row.get(k)}" for k in keys) or "all"


def _mean_curves(rows: list[dict[str, Any]], x: str, y: str, keys: list[str]) -> dict[str, list[dict[str, float]]]:
    """label -> rows {x, y: mean over seeds of y at that x}, for rows grouped by `keys`."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if _numeric(row.get(x)) and _numeric(row.get(y)):
            acc[_group_label(row, keys)][row[x]].append(row[y])
    return {label: [{x: k, y: sum(pts[k]) / len(pts[k])} for k in sorted(pts)] for label, pts in sorted(acc.items())}


def plot_report(out_dir: str | Path, params: list[str], rows: list[dict[str, Any]],
                max_metrics: int = 6) -> list[Path]:
    """Comparison plots: each metric vs generation/step/iter per sweep value (mean over seeds),
    and each metric vs NFE per sampler (or per the non-step parameters) for one-row-per-run metrics."""
    out_dir = Path(out_dir)
    paths = []
    for x in X_COLUMNS:
        sel = [r for r in rows if x in r]
        if sel:
            for y in metric_names(sel, params)[:max_metrics]:
                paths.append(plots.curves(out_dir / f"{y}_vs_{x}.png", _mean_curves(sel, x, y, params), x, [y],
                                          markers=True))
            break
    sel = [r for r in rows if NFE_COLUMN in r]
    if sel:
        keys = ["sampler"] if "sampler" in params else [p for p in params if p != "steps"]
        for y in metric_names(sel, params)[:max_metrics]:
            paths.append(plots.curves(out_dir / f"{y}_vs_nfe.png", _mean_curves(sel, NFE_COLUMN, y, keys),
                                      NFE_COLUMN, [y], log_keys=[y], log_x=True, markers=True))
    return paths


# ---- comparing completed runs (`gentool report --compare RUN...`) -----------------------------------------

COMPARE_TABLE = "compare.csv"


def _run_label(config: dict[str, Any], differing: list[str], fallback: str) -> str:
    return ", ".join(f"{k}={config.get(k)}" for k in differing) or fallback


def load_runs(run_dirs: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, rows) of each completed run directory; labels name the settings in which the runs differ."""
    from gentool.core.run.rundir import DONE as RUN_DONE

    if len(run_dirs) < 1:
        raise BadInput("a comparison needs at least one run directory")
    configs = []
    for run in run_dirs:
        if not (run / RUN_DONE).is_file() or not (run / "metrics.jsonl").is_file():
            raise BadInput(f"{run} holds no completed run (no {RUN_DONE})")
        configs.append(read_json(run / "config.json").get("config", {}))
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    labels = [_run_label(c, differing, run.name) for c, run in zip(configs, run_dirs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{run.name}: {label}" for run, label in zip(run_dirs, labels, strict=True)]
    return [(label, read_jsonl(run / "metrics.jsonl")) for label, run in zip(labels, run_dirs, strict=True)]


def _band_rows(rows: list[dict[str, Any]], x: str, metric: str) -> list[dict[str, Any]]:
    """Per x: the mean of `metric` over rows (seeds) with its 95% CI `mean ± 1.96 std/√count`."""
    groups: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        if _numeric(row.get(x)) and _numeric(row.get(metric)):
            groups[row[x]].append(float(row[metric]))
    out = []
    for xv in sorted(groups):
        v = groups[xv]
        mean = sum(v) / len(v)
        sem = math.sqrt(sum((a - mean) ** 2 for a in v) / (len(v) - 1) / len(v)) if len(v) > 1 else 0.0
        median = sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
        out.append({x: xv, metric: mean, f"{metric}_low": mean - 1.96 * sem, f"{metric}_high": mean + 1.96 * sem,
                    "count": len(v), "sem": sem, "median": median})
    return out


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, metrics: list[str] | None = None,
                 draw: bool = True) -> tuple[list[str], list[list[Any]], list[Path]]:
    """Overlay completed runs: for each metric, mean over a run's rows (seeds) vs generation/step/iter with its
    95% CI band, one curve per run (`compare.png`), and `compare.csv` with every (run, metric, x) point.
    Returns the (header, rows) of a final-x table (mean ± sem, median) and the written paths."""
    runs = load_runs([Path(r) for r in run_dirs])
    every = [r for _, rows in runs for r in rows]
    x = next((c for c in X_COLUMNS if any(c in r for r in every)), None)
    if x is None:
        raise BadInput(f"the runs have no {'/'.join(X_COLUMNS)} column to compare along")
    names = metrics or metric_names(every, [])
    unknown = [m for m in names if not any(m in r for r in every)]
    if unknown:
        raise BadInput(f"unknown metric {unknown[0]!r}; allowed: {', '.join(metric_names(every, []))}")
    bands = {(label, m): _band_rows(rows, x, m) for label, rows in runs for m in names}
    table = [{"run": label, "metric": m, **{k: v for k, v in p.items() if k not in (f"{m}_low", f"{m}_high")}}
             for (label, m), pts in bands.items() for p in pts]
    for row in table:
        row["mean"] = row.pop(row["metric"])
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["run", "metric", x, "count", "mean", "sem", "median"])
    writer.writeheader()
    writer.writerows(table)
    paths = [atomic_write_text(out_dir / COMPARE_TABLE, buf.getvalue())]
    if draw:
        series = {label: [p for m in names for p in bands[(label, m)]] for label, _ in runs}
        paths.append(plots.curves(out_dir / "compare.png", series, x, names))
    header = ["run", x, *(f"{m} (mean ± sem, median)" for m in names[:4])]
    body = []
    for label, _ in runs:
        finals = [bands[(label, m)][-1] if bands[(label, m)] else None for m in names[:4]]
        last = next((f[x] for f in finals if f), "")
        body.append([label, last, *(f"{f[m]:.4g} ± {f['sem']:.2g}, {f['median']:.4g}" if f else "" for f, m in
                                    zip(finals, names[:4], strict=True))])
    return header, body, paths
