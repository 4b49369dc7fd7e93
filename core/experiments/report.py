"""Reports: merge every completed run of a sweep into one tidy table and draw comparison plots.

Tidy table: one row per JSONL row (`*.jsonl` in a run directory) or per `metrics.json`, with
columns `point`, `source`, the sweep parameters, `seed`, then the row's own fields.

Finite or flagged: NaN and ±inf read from a run (JSON's NaN/Infinity) are kept, never dropped from a mean;
`non_finite` lists every such cell so the caller can flag it and exit non-zero. In written JSON they are the
strings "nan", "inf", "-inf" (JSON has no such numbers). A row that is not a JSON object on its line is
refused naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gentool.core import plots
from gentool.core.errors import BadInput
from gentool.core.experiments.sweep import DONE, POINT
from gentool.core.io import atomic_write_json, atomic_write_text

X_COLUMNS = ("generation", "step", "iter", "round")
NFE_COLUMN = "nfe"
POINT_SEED = "point seed"
BOOKKEEPING = ("batch", "samples", "trajectories")  # a unit's counters and sizes (sample, bound rows)
NOT_METRICS = {"seconds", "samples_per_s", "seed", "n_train", NFE_COLUMN, *X_COLUMNS, *BOOKKEEPING}


def completed_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of `sweep_dir` carrying a completion marker, sorted by name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise BadInput(f"sweep directory not found: {sweep_dir}")
    return sorted(d for d in sweep_dir.iterdir() if (d / DONE).is_file() and (d / POINT).is_file())


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Keep scalar fields; lists/dicts are dropped from the tidy table."""
    return {k: v for k, v in row.items() if isinstance(v, str | int | float | bool) or v is None}


def _corrupt(path: Path, line: int, why: str) -> BadInput:
    return BadInput(f"{path} is corrupt (not valid JSON) at line {line}: {why}; re-run that point or delete it")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is corrupt (not valid JSON): not UTF-8 text at byte {exc.start}; re-run that "
                       "point or delete it") from None


def _parse(path: Path) -> Any:
    """The JSON value in a file; invalid JSON is refused naming the file and the line."""
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise _corrupt(path, exc.lineno, exc.msg) from None


def read_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; anything else is refused naming the file and the line."""
    obj = _parse(path)
    if not isinstance(obj, dict):
        raise _corrupt(path, 1, f"expected an object, got {type(obj).__name__}")
    return obj


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file, each line one object; a malformed line is refused naming it."""
    rows = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _corrupt(path, number, exc.msg) from None
        if not isinstance(row, dict):
            raise _corrupt(path, number, f"expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def run_rows(run_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(parameter columns, tidy rows) of one completed run directory."""
    point = _parse(run_dir / POINT)
    try:
        base = {"point": point["point_id"], **point["params"], "seed": point["seed"]}
    except (KeyError, TypeError):
        raise BadInput(f"{run_dir / POINT} is corrupt (missing point_id/params/seed)") from None
    rows = []
    for path in sorted(run_dir.glob("*.jsonl")):
        rows += [{**base, "source": path.name, **_flat(r)} for r in read_rows(path)]
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        rows.append({**base, "source": metrics.name, **_flat(read_object(metrics))})
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


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by its name ("nan", "inf", "-inf"), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_table(out_dir: str | Path, params: list[str], rows: list[dict[str, Any]],
                failed: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write `report.csv` and `report.json` (atomically; `failed`: the sweep's failed points with their
    reasons, see `sweep.failures`; `non_finite`: every NaN/inf cell, see `non_finite`); return their paths."""
    out_dir = Path(out_dir)
    cols = columns(rows, params)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(out_dir / "report.csv", buf.getvalue())
    json_path = atomic_write_json(out_dir / "report.json", json_safe(
        {"parameters": params, "columns": cols, "rows": rows, "failed": failed or [],
         "non_finite": non_finite(rows, ("point", "source"))}))
    return csv_path, json_path


def _number(value: Any) -> bool:
    """A real number (finite or not; booleans are not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def non_finite(rows: list[dict[str, Any]], where: Iterable[str]) -> list[dict[str, Any]]:
    """Every non-finite number in `rows`: {the `where` fields of its row, "column", "value"}."""
    where = list(where)
    return [{**{k: row.get(k) for k in where}, "column": k, "value": v}
            for row in rows for k, v in row.items() if _number(v) and not math.isfinite(v)]


def describe_non_finite(cells: list[dict[str, Any]]) -> str:
    """One line naming how many cells are not finite and where the first few are."""
    shown = "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in cells[:3])
    more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
    return f"{len(cells)} value(s) are not finite ({shown}{more})"


def metric_names(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    """Numeric row fields that are metrics (not parameters, counters or timings)."""
    skip = {*params, *NOT_METRICS}
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in skip and k not in names and _number(v)]
    return names


def select_metrics(available: list[str], requested: list[str] | None) -> list[str]:
    """`requested` (all of `available` when None), each checked to be one of `available`."""
    if not requested:
        return list(available)
    for name in requested:
        if name not in available:
            raise BadInput(f"unknown metric {name!r}; available: {', '.join(available) or '(none)'}")
    return list(dict.fromkeys(requested))


def _x_column(rows: list[dict[str, Any]]) -> str | None:
    return next((c for c in X_COLUMNS if any(c in r for r in rows)), None)


def _final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows at the largest generation/step/iter of a run's source (all of them when there is no x)."""
    x = _x_column(rows)
    xs = [r[x] for r in rows if _numeric(r.get(x))] if x else []
    if not xs:
        return rows
    return [r for r in rows if r.get(x) == max(xs)]


def _mean(values: list[float]) -> float | str:
    """The mean (NaN/inf propagate, so a non-finite value is never hidden), '' for no values."""
    return sum(values) / len(values) if values else ""


def summary(params: list[str], rows: list[dict[str, Any]], metrics: list[str] | None = None
            ) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of a per-run summary: parameters, sweep seed, source, final x and the mean of
    each metric (all of them, or `metrics`) over the rows at the final generation/step/iter (e.g. over a
    run's inner seeds)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["point"], row["source"])].append(row)
    finals = {key: _final_rows(group) for key, group in groups.items()}
    names = select_metrics(metric_names([r for f in finals.values() for r in f], params), metrics)
    x = _x_column(rows)
    header = [*params, POINT_SEED, "source", *([x] if x else []), *names]
    body = []
    for (point, source), final in finals.items():
        first = final[0]
        means = [_mean([r[m] for r in final if _number(r.get(m))]) for m in names]
        body.append([*(first.get(p, "") for p in params), _point_seed(point), source,
                     *([first.get(x, "")] if x else []), *means])
    return header, body


def summary_metrics(header: list[str], params: list[str]) -> list[str]:
    """The metric columns of a `summary` header: those after the parameters, point seed, source and x."""
    return [h for h in header if h not in (*params, POINT_SEED, "source", *X_COLUMNS)]


def long_table(header: list[str], body: list[list[Any]], metrics: list[str]) -> tuple[list[str], list[list[Any]]]:
    """A wide summary made long: the columns before the metrics, then `metric` and `value`, one row per
    (run, metric) with a value."""
    keep = [i for i, name in enumerate(header) if name not in metrics]
    where = {name: header.index(name) for name in metrics}
    out = [[*(line[i] for i in keep), name, line[where[name]]]
           for line in body for name in metrics if line[where[name]] != ""]
    return [*(header[i] for i in keep), "metric", "value"], out


FORMATS = ("table", "csv", "json")


def render(header: list[str], body: list[list[Any]], fmt: str, non_finite_cells: list[dict[str, Any]]) -> str:
    """A summary table as CSV (non-finite numbers as nan/inf) or as JSON: {"columns", "rows" (one object per
    line), "non_finite"}, non-finite numbers as the strings "nan", "inf", "-inf"."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buf.getvalue()
    rows = [dict(zip(header, line, strict=True)) for line in body]
    return json.dumps(json_safe({"columns": header, "rows": rows, "non_finite": non_finite_cells}), indent=2) + "\n"


def _point_seed(point_id: str) -> str:
    """The sweep seed encoded in a point id (`...__seed-S`, optionally followed by `__HASH`), or ''."""
    seeds = [part[len("seed-"):] for part in point_id.split("__") if part.startswith("seed-")]
    return seeds[-1] if seeds else ""


def _group_label(row: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={row.get(k)}" for k in keys) or "all"


def _mean_curves(rows: list[dict[str, Any]], x: str, y: str, keys: list[str]) -> dict[str, list[dict[str, float]]]:
    """label -> rows {x, y: mean over seeds of y at that x}, for rows grouped by `keys`."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if _numeric(row.get(x)) and _numeric(row.get(y)):
            acc[_group_label(row, keys)][row[x]].append(row[y])
    return {label: [{x: k, y: sum(pts[k]) / len(pts[k])} for k in sorted(pts)] for label, pts in sorted(acc.items())}


def _seeds_note(rows: list[dict[str, Any]], x: str, y: str, keys: list[str]) -> str:
    """What a point of `_mean_curves` averages: "mean over N seeds" (or "N1-N2 seeds" when points differ)."""
    counts: dict[tuple[str, Any], int] = defaultdict(int)
    for row in rows:
        if _numeric(row.get(x)) and _numeric(row.get(y)):
            counts[(_group_label(row, keys), row[x])] += 1
    lo, hi = min(counts.values(), default=0), max(counts.values(), default=0)
    if hi <= 1:
        return "one seed per point (no average)"
    return f"mean over {lo if lo == hi else f'{lo}-{hi}'} seeds per point"


def plot_report(out_dir: str | Path, params: list[str], rows: list[dict[str, Any]],
                metrics: list[str] | None = None) -> list[Path]:
    """Comparison plots: each metric (all, or `metrics`) vs generation/step/iter per sweep value (mean over
    seeds), and each metric vs NFE per sampler (or per the non-step parameters) for one-row-per-run metrics.
    Non-finite values are left out of the curves (the table and the exit code flag them)."""
    out_dir = Path(out_dir)
    paths = []
    x = _x_column(rows)
    sel = [r for r in rows if x in r] if x else []
    for y in _plotted(sel, params, metrics):
        paths.append(plots.curves(out_dir / f"{y}_vs_{x}.png", _mean_curves(sel, x, y, params), x, [y],
                                  markers=True, title=_seeds_note(sel, x, y, params)))
    sel = [r for r in rows if NFE_COLUMN in r]
    keys = ["sampler"] if "sampler" in params else [p for p in params if p != "steps"]
    for y in _plotted(sel, params, metrics):
        paths.append(plots.curves(out_dir / f"{y}_vs_nfe.png", _mean_curves(sel, NFE_COLUMN, y, keys),
                                  NFE_COLUMN, [y], log_keys=[y], log_x=True, markers=True,
                                  title=_seeds_note(sel, NFE_COLUMN, y, keys)))
    return paths


def _plotted(rows: list[dict[str, Any]], params: list[str], metrics: list[str] | None) -> list[str]:
    """The metrics of `rows` to plot: all, or those of `metrics` present (with a finite value) in `rows`."""
    names = [m for m in metric_names(rows, params) if any(_numeric(r.get(m)) for r in rows)]
    return names if metrics is None else [m for m in metrics if m in names]


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
        config = read_object(run / "config.json").get("config", {})
        configs.append(config if isinstance(config, dict) else {})
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    labels = [_run_label(c, differing, run.name) for c, run in zip(configs, run_dirs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{run.name}: {label}" for run, label in zip(run_dirs, labels, strict=True)]
    return [(label, read_rows(run / "metrics.jsonl")) for label, run in zip(labels, run_dirs, strict=True)]


def _band_rows(rows: list[dict[str, Any]], x: str, metric: str) -> list[dict[str, Any]]:
    """Per x: the mean of `metric` over rows (seeds) with its 95% CI `mean ± 1.96 std/√count` (a non-finite
    value makes the mean non-finite; it is not dropped)."""
    groups: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        if _numeric(row.get(x)) and _number(row.get(metric)):
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


def _final_cell(point: dict[str, Any] | None, metric: str) -> str:
    """'mean ± sem, median' of a final point, marked when not finite."""
    if point is None:
        return ""
    text = f"{point[metric]:.4g} ± {point['sem']:.2g}, {point['median']:.4g}"
    finite = all(math.isfinite(point[k]) for k in (metric, "sem", "median"))
    return text if finite else f"{text} (non-finite)"


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, metrics: list[str] | None = None,
                 draw: bool = True) -> tuple[list[str], list[list[Any]], list[Path], list[dict[str, Any]]]:
    """Overlay completed runs: for each metric, mean over a run's rows (seeds) vs generation/step/iter with its
    95% CI band, one curve per run (`compare.png`), and `compare.csv` with every (run, metric, x) point.
    Returns the (header, rows) of a final-x table (mean ± sem, median; every selected metric), the written
    paths and the non-finite cells of the compared metrics (see `non_finite`)."""
    runs = load_runs([Path(r) for r in run_dirs])
    every = [r for _, rows in runs for r in rows]
    x = _x_column(every)
    if x is None:
        raise BadInput(f"the runs have no {'/'.join(X_COLUMNS)} column to compare along")
    names = select_metrics(metric_names(every, []), metrics)
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
        paths.append(plots.curves(out_dir / "compare.png", series, x, names,
                                  title="each run: mean over its seeds, band: 95% CI"))
    header = ["run", x, *(f"{m} (mean ± sem, median)" for m in names)]
    body = []
    for label, _ in runs:
        finals = [bands[(label, m)][-1] if bands[(label, m)] else None for m in names]
        last = next((f[x] for f in finals if f), "")
        body.append([label, last, *(_final_cell(f, m) for f, m in zip(finals, names, strict=True))])
    bad = [{"run": label, **c} for label, rows in runs
           for c in non_finite([{x: r.get(x), **{m: r[m] for m in names if m in r}} for r in rows], [x])]
    return header, body, paths, bad
