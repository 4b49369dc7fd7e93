"""`gentool report`: every metric by default (long when wide), --metrics with and without --compare, unknown
metrics listed, --format table|csv|json, non-finite values flagged with a non-zero exit, malformed rows named
by file and line. Sweep and run directories are written by hand (the report only reads them)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from gentool.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
METRICS = ("alpha_err", "beta_err", "gamma_err", "delta_err", "eps_err", "mmd", "w2_gauss")


def _point(sweep: Path, method: str, seed: int, rows: list[dict] | str) -> Path:
    d = sweep / f"method-{method}__seed-{seed}__0123abcd"
    d.mkdir(parents=True)
    (d / "point.json").write_text(json.dumps({"point_id": d.name, "params": {"method": method}, "seed": seed}))
    (d / "DONE.json").write_text("{}")
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    (d / "metrics.jsonl").write_text(text)
    return d


def _rows(scale: float) -> list[dict]:
    """Two iterations; every metric at the last one is `scale` times its index + 1."""
    return [{"iter": it, "seconds": 0.1, **{m: scale * (i + 1) * (1 + (1 - it)) for i, m in enumerate(METRICS)}}
            for it in (0, 1)]


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    for method, scale in (("a", 1.0), ("b", 2.0)):
        _point(sweep, method, 0, _rows(scale))
    return sweep


def _report(*args: str, columns: int = 80, **env: str):
    return runner.invoke(app, ["report", *args, "--no-plots"], env={"COLUMNS": str(columns), **env})


def test_all_metrics_by_default_long_when_the_table_is_wide(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    res = _report(str(sweep))
    assert res.exit_code == 0, res.output
    for m in METRICS:  # w2_gauss is the 7th metric alphabetically: it used to be dropped
        assert m in res.output
    assert "metric" in res.output and "value" in res.output  # long: one row per (run, metric)
    wide = _report(str(sweep), columns=400)
    assert wide.exit_code == 0
    assert all(m in wide.output for m in METRICS) and "value" not in wide.output


def test_csv_export_has_every_metric_with_final_means(tmp_path: Path) -> None:
    res = _report(str(_sweep(tmp_path)), "--format", "csv")
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["method"] for r in table] == ["a", "b"]
    assert set(METRICS) <= set(table[0])
    assert float(table[1]["w2_gauss"]) == 2.0 * 7 and float(table[0]["mmd"]) == 6.0  # the last iteration
    assert "wrote" in res.stderr and "wrote" not in res.stdout


def test_json_export_and_metric_selection(tmp_path: Path) -> None:
    res = _report(str(_sweep(tmp_path)), "--format", "json", "--metrics", "w2_gauss,mmd")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["columns"][-2:] == ["w2_gauss", "mmd"] and not set(METRICS[:5]) & set(data["columns"])
    assert [r["w2_gauss"] for r in data["rows"]] == [7.0, 14.0] and data["non_finite"] == []


def test_unknown_metric_exits_2_listing_the_available_ones(tmp_path: Path) -> None:
    res = _report(str(_sweep(tmp_path)), "--metrics", "mmd,w3")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "unknown metric 'w3'" in res.stderr
    assert all(m in res.stderr for m in METRICS)


def test_unknown_format_exits_2(tmp_path: Path) -> None:
    res = _report(str(_sweep(tmp_path)), "--format", "xml")
    assert res.exit_code == 2 and "allowed: csv, json, table" in res.stderr


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_flagged_and_exit_3(tmp_path: Path, bad: str) -> None:
    sweep = _sweep(tmp_path)
    _point(sweep, "c", 0, '{"iter": 0, "mmd": 1.0}\n{"iter": 1, "mmd": ' + bad + '}\n')
    res = _report(str(sweep), columns=400)
    assert res.exit_code == 3
    assert "(non-finite)" in res.stdout
    assert res.stderr.startswith("error: 1 value(s) are not finite") and "column=mmd" in res.stderr
    report = json.loads((sweep / "report.json").read_text())  # strict JSON: non-finite numbers as names
    assert report["non_finite"][0]["value"] == str(float(bad.replace("Infinity", "inf")))
    exported = _report(str(sweep), "--format", "json")
    assert exported.exit_code == 3
    assert json.loads(exported.stdout)["non_finite"][0]["column"] == "mmd"


def test_non_finite_in_a_non_metric_column_is_flagged(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    _point(sweep, "c", 0, '{"iter": 1, "mmd": 1.0, "seconds": NaN}\n')
    res = _report(str(sweep))
    assert res.exit_code == 3 and "column=seconds" in res.stderr


@pytest.mark.parametrize(("text", "line"), [
    ('{"iter": 0, "mmd": 1.0}\n{"iter": 1, "mmd": \n', 2),
    ('{"iter": 0, "mmd": 1.0}\n\n[1, 2]\n', 3),
    ('{"iter": 0, "mmd": 1.0}\n{"iter": 1} {"iter": 2}\n', 2),
])
def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    sweep = _sweep(tmp_path)
    d = _point(sweep, "c", 0, text)
    res = _report(str(sweep))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert f"{d / 'metrics.jsonl'} is corrupt (not valid JSON) at line {line}" in res.stderr
    assert "Traceback" not in res.output


def test_malformed_metrics_json_names_file_and_line(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    d = _point(sweep, "c", 0, [{"iter": 0, "mmd": 1.0}])
    (d / "metrics.json").write_text('{\n  "mmd": 1.0,\n  oops\n}\n')
    res = _report(str(sweep))
    assert res.exit_code == 2 and f"{d / 'metrics.json'} is corrupt (not valid JSON) at line 3" in res.stderr


def _run_dir(path: Path, lr: float, rows: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"command": "x", "config": {"lr": lr}}))
    (path / "DONE.json").write_text("{}")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _runs(tmp_path: Path, last: float = 3.0) -> list[str]:
    rows = [{"generation": g, "seed": s, **{m: float(g + s) for m in METRICS}} for g in (1, 2) for s in (0, 1)]
    other = [{**r, "mmd": last if r["generation"] == 2 else r["mmd"]} for r in rows]
    return [str(_run_dir(tmp_path / "r1", 0.1, rows)), str(_run_dir(tmp_path / "r2", 0.2, other))]


def test_compare_shows_every_metric_and_selects_with_metrics(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    res = _report("--compare", *runs, "--out", str(tmp_path / "cmp"), "--format", "csv")
    assert res.exit_code == 0, res.output
    header = next(csv.reader(io.StringIO(res.stdout)))
    assert header[:2] == ["run", "generation"] and len(header) == 2 + len(METRICS)
    sel = _report("--compare", *runs, "--out", str(tmp_path / "cmp"), "--metrics", "w2_gauss", "--format", "json")
    data = json.loads(sel.stdout)
    assert data["columns"] == ["run", "generation", "w2_gauss (mean ± sem, median)"]
    assert [r["run"] for r in data["rows"]] == ["lr=0.1", "lr=0.2"]
    bad = _report("--compare", *runs, "--out", str(tmp_path / "cmp"), "--metrics", "nope")
    assert bad.exit_code == 2 and "unknown metric 'nope'; available: " + ", ".join(METRICS) in bad.stderr


def test_compare_flags_non_finite(tmp_path: Path) -> None:
    runs = _runs(tmp_path, last=float("inf"))
    res = _report("--compare", *runs, "--out", str(tmp_path / "cmp"), "--metrics", "mmd", columns=300)
    assert res.exit_code == 3
    assert "(non-finite)" in res.stdout and "run=lr=0.2" in res.stderr and "column=mmd" in res.stderr


def test_compare_malformed_row_names_line(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    with open(Path(runs[1]) / "metrics.jsonl", "a") as fh:
        fh.write('{"generation": 3, "mmd": }\n')
    res = _report("--compare", *runs, "--out", str(tmp_path / "cmp"))
    assert res.exit_code == 2 and "metrics.jsonl is corrupt (not valid JSON) at line 5" in res.stderr


def test_unit_counters_and_sizes_are_not_metrics() -> None:
    """A sample run's per-batch rows ({batch, samples, nfe, seconds}) and a bound run's (trajectories) hold
    bookkeeping, not metrics: no table column and no figure for them."""
    from gentool.core.experiments.report import metric_names

    rows = [{"sampler": "euler", "batch": 1, "samples": 50, "nfe": 10, "seconds": 0.1, "trajectories": 8,
             "sliced_w2": 0.2}]
    assert metric_names(rows, ["sampler"]) == ["sliced_w2"]
