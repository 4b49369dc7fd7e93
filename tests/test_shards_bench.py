"""`gentool bench samplers|solvers --shards K`: the cases split over tasks (each case with its peers and floor
timed in one task), merged into the unsharded run's table: the same cases and columns in the same order, finite
ratios (timings differ by nature; the accuracy column, a computation, is equal)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.jobs.bench import BENCHES
from typer.testing import CliRunner

runner = CliRunner()
SAMPLERS = ["bench", "samplers", "--batch-sizes", "8,16", "--nfe", "3,5", "--samplers", "euler,heun", "--device", "cpu",
            "--repeats", "1", "--accuracy-n", "50", "--no-progress"]
SOLVERS = ["bench", "solvers", "--batch-sizes", "8,16", "--steps", "2", "--methods", "euler", "--adaptive", "bosh3",
           "--fields", "mlp2", "--device", "cpu", "--repeats", "1", "--no-progress"]
CASE_KEYS = {"samplers": ("sampler", "batch", "nfe", "steps", "clock", "endpoint_rmse"),
             "fixed": ("field", "method", "batch", "steps"),
             "adaptive": ("method", "batch", "rtol", "controller", "gentool_nfe_mean", "gentool_nfe_max",
                          "torchdiffeq_nfe", "torchode")}


def _header(output: str) -> list[str]:
    """The printed tables' column names (header rows, without the padding that the values' widths set)."""
    return [[c.strip() for c in line.split("┃")] for line in output.splitlines() if line.startswith("┃")]


def _run(argv: list[str], out: Path) -> tuple[dict, str]:
    res = runner.invoke(app, [*argv, "--out", str(out)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    return json.loads((out / f"{argv[1]}.json").read_text()), res.output


@pytest.mark.parametrize(("argv", "tables"), [(SAMPLERS, ("samplers",)), (SOLVERS, ("fixed", "adaptive"))])
def test_a_sharded_bench_merges_to_the_unsharded_table(tmp_path: Path, argv: list[str], tables: tuple[str, ...]
                                                       ) -> None:
    plain, plain_out = _run(argv, tmp_path / "plain")
    merged, merged_out = _run([*argv, "--shards", "3", "--executor", "debug"], tmp_path / "sharded")
    assert "3 shards merged" in merged_out
    assert _header(merged_out) == _header(plain_out) and _header(plain_out)
    assert set(merged) == set(plain) == {"machine", *tables}
    for table in tables:
        assert len(merged[table]) == len(plain[table]) > 0
        for a, b in zip(merged[table], plain[table], strict=True):
            assert list(a) == list(b)  # the same columns in the same order
            assert {k: a.get(k) for k in CASE_KEYS[table]} == {k: b.get(k) for k in CASE_KEYS[table]}
            times = [v for k, v in a.items() if k.endswith("_s") or k.endswith("_ratio")]
            assert times and all(math.isfinite(v) and v > 0 for v in times)
    parts = sorted(p.name for p in (tmp_path / "sharded" / "parts").iterdir() if p.name[0].isdigit())
    assert len(parts) == 3 and parts[0].startswith("0000-units-1-")


def test_bench_cases_are_the_table_order() -> None:
    """The job's units are the benchmark's cases in the order the unsharded bench measures them."""
    from gentool.core.diffusion.benchmark import SamplerBenchConfig
    from gentool.core.solvers.benchmark import BenchConfig

    cfg = SamplerBenchConfig(batch_sizes=(8, 16), nfes=(3,), samplers=("euler", "heun"))
    assert [c for _, c in BENCHES["bench samplers"].cases(cfg)] == [("euler", 8, 3), ("euler", 16, 3),
                                                                    ("heun", 8, 3), ("heun", 16, 3)]
    cfg = BenchConfig(batch_sizes=(8,), fixed_methods=("euler",), adaptive_methods=("bosh3", "dopri5"),
                      fields=("mlp2",))
    assert BENCHES["bench solvers"].cases(cfg) == [("fixed", ("mlp2", "euler", 8)), ("adaptive", ("bosh3", 8)),
                                                   ("adaptive", ("dopri5", 8))]


@pytest.mark.parametrize(("extra", "message"), [
    (["--executor", "local"], "executor applies to a benchmark run with shards"),
    (["--shards", "0"], "shards must be an integer in [1, 8]"),
    (["--shards", "9"], "shards must be an integer in [1, 8]"),
    (["--shards", "2", "--executor", "nope"], "unknown executor 'nope'"),
])
def test_bad_bench_sharding_is_one_line_and_writes_nothing(tmp_path: Path, extra: list[str], message: str) -> None:
    res = runner.invoke(app, [*SAMPLERS, *extra, "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "device:" not in res.output and list(tmp_path.iterdir()) == []


def test_a_sharded_bench_on_slurm_dry_run_prints_the_sbatch_script_and_writes_nothing(tmp_path: Path) -> None:
    res = runner.invoke(app, [*SOLVERS, "--shards", "2", "--executor", "slurm", "--dry-run", "--account", "a",
                              "--qos", "q", "--constraint", "c", "--setup", "module load x", "--out",
                              str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    for line in ("#SBATCH --account=a", "#SBATCH --qos=q", "#SBATCH --constraint=c", "#SBATCH --array=0-1%2",
                 "module load x"):
        assert line in res.output.splitlines(), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--account", "a"], "account given without shards"),
    (["--shards", "2", "--executor", "debug", "--qos", "q"], "qos given with executor 'debug'"),
    (["--dry-run"], "dry_run applies to a run with shards"),
    (["--model", "some/model", "--shards", "2"], "shards applies to the plan-sampler benchmark"),
])
def test_slurm_resources_and_dry_run_of_a_bench_need_slurm_shards(tmp_path: Path, extra: list[str], message: str
                                                                  ) -> None:
    res = runner.invoke(app, [*SAMPLERS, *extra, "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert list(tmp_path.iterdir()) == []
