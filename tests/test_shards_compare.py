"""`gentool optimize compare --shards K`: ranges of the table's entries run as parts, merged into the
unsharded comparison (table, rows and final distributions equal, timings aside)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from gentool.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
ARGS = ["optimize", "compare", "--objective", "softmax", "--x", "1,0.5,-1,0.2", "--fw-steps", "away,line-search",
        "--steps", "300", "--lr", "0.5", "--no-progress", "--no-plots"]


def _table(run: Path) -> list[dict[str, str]]:
    with (run / "table.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _same_comparison(a: Path, b: Path) -> None:
    assert _table(a) == _table(b) and _rows(a) == _rows(b)
    with np.load(a / "final.npz") as x, np.load(b / "final.npz") as y:
        assert x.files == y.files and all(x[k].tobytes() == y[k].tobytes() for k in x.files)
    summaries = [json.loads((d / "DONE.json").read_text())["summary"] for d in (a, b)]
    for s in summaries:
        s["table"] = [{k: v for k, v in row.items() if k != "seconds"} for row in s["table"]]
    assert summaries[0] == summaries[1]
    configs = [json.loads((d / "config.json").read_text()) for d in (a, b)]
    assert configs[0]["config"] == configs[1]["config"]


def test_compare_over_3_shards_merges_to_the_unsharded_comparison(tmp_path: Path) -> None:
    """Five entries (frank-wolfe with two steps, three other methods; they converge after different numbers of
    iterations, so the shards run different numbers of units) over 3 shards, the second holding one of
    frank-wolfe's steps and another method (a part keeps the defaults of settings none of its methods uses:
    lr without a gradient method): the merge equals the plain run; `gentool merge` redoes it."""
    res = runner.invoke(app, [*ARGS, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sharded"
    res = runner.invoke(app, [*ARGS, "--shards", "3", "--executor", "debug", "--out", str(out)])
    assert res.exit_code == 0 and "3 shards merged" in res.output, res.output
    parts = sorted(p.name for p in (out / "parts").glob("000?-*"))
    assert parts == ["0000-entries-1-1", "0001-entries-2-3", "0002-entries-4-5"]
    first, second, third = (json.loads((out / "parts" / p / "config.json").read_text())["config"] for p in parts)
    assert first["methods"] == ["frank-wolfe"] and first["fw_steps"] == ["away"] and first["lr"] == 1.0  # unused
    assert second["methods"] == ["frank-wolfe", "exponentiated-gradient"] and second["fw_steps"] == ["line-search"]
    assert third["methods"] == ["projected-gradient", "softmax-gd"] and third["lr"] == 0.5
    _same_comparison(tmp_path / "plain", out)
    res = runner.invoke(app, ["merge", str(out)])
    assert res.exit_code == 0, res.output
    _same_comparison(tmp_path / "plain", out)
    res = runner.invoke(app, [*ARGS, "--shards", "6", "--executor", "debug", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "shards must be an integer in [1, 5]" in res.output and "entries" in res.output
