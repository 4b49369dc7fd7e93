"""Sharded job commands on the command line: Slurm resources (`--account ...`, from the one `Resources`
declaration), `--dry-run`, and `--resume` with `--shards`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gentool.cli.main import app
from gentool.core.experiments.resources import Resources
from typer.testing import CliRunner

runner = CliRunner()
RING = ["sample", "--target", "gmm-ring", "--n", "400", "--batch-size", "100", "--steps", "4", "--device", "cpu",
        "--no-progress", "--no-plots", "--no-reference"]
KNOBS = ["--account", "a", "--qos", "q", "--constraint", "c", "--setup", "module load x"]


@pytest.mark.parametrize("command", [RING, ["mad-loop", "--seeds", "4", "--generations", "2", "--no-progress"]])
def test_slurm_dry_run_of_a_sharded_job_prints_the_sbatch_script_and_writes_nothing(tmp_path: Path,
                                                                                   command: list[str]) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, [*command, "--shards", "2", "--executor", "slurm", "--dry-run", *KNOBS, "--time", "30",
                              "--gpus-per-node", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for line in ("#SBATCH --account=a", "#SBATCH --qos=q", "#SBATCH --constraint=c", "#SBATCH --time=30",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-1%2", "module load x"):
        assert line in res.output.splitlines(), line
    assert "2 points: 0 complete, 0 queued, 2 to submit" in res.output
    assert list(tmp_path.iterdir()) == []


def test_every_resources_field_is_an_option_of_a_sharded_command() -> None:
    """The options come from the `Resources` declaration (as `gentool sweep`'s), not from a second list."""
    res = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in Resources.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in res.output, name


@pytest.mark.parametrize(("extra", "named"), [
    (["--shards", "2", "--account", "a"], "account given with executor 'local'"),
    (["--shards", "2", "--executor", "debug", "--qos", "q", "--setup", "x"], "qos, setup given with executor 'debug'"),
    (["--constraint", "c"], "constraint given without shards"),
    (["--dry-run"], "dry_run applies to a run with shards"),
    (["--shards", "2", "--executor", "slurm", "--dry-run", "--time", "0"], "time must be"),
    (["--shards", "2", "--executor", "slurm", "--dry-run", "--account", "a b"], "account must be a name"),
])
def test_slurm_resources_without_slurm_shards_are_refused(tmp_path: Path, extra: list[str], named: str) -> None:
    res = runner.invoke(app, [*RING, *extra, "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert named in res.output and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_resume_with_shards_refuses_a_directory_without_a_sharded_run(tmp_path: Path) -> None:
    """As the unsharded `--resume`: nothing to resume is exit 2 and nothing is written."""
    res = runner.invoke(app, [*RING, "--shards", "2", "--executor", "debug", "--resume", "--out",
                              str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "nothing to resume" in res.output
    assert list(tmp_path.iterdir()) == []
    plain = tmp_path / "plain"
    assert runner.invoke(app, [*RING, "--out", str(plain)]).exit_code == 0
    res = runner.invoke(app, [*RING, "--shards", "2", "--executor", "debug", "--resume", "--out", str(plain)])
    assert res.exit_code == 2 and "no sharded sample run" in res.output, res.output


def test_resume_with_shards_keeps_the_stored_settings_and_refuses_other_ones(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, [*RING, "--seed", "5", "--shards", "2", "--executor", "debug", "--out", str(out)])
    assert res.exit_code == 0, res.output
    merged = (out / "samples.npz").read_bytes()
    (out / "parts" / "0001-units-3-4" / "DONE.json").unlink()  # a part to finish
    res = runner.invoke(app, ["sample", "--shards", "2", "--executor", "debug", "--resume", "--no-progress", "--out",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert "2 shards merged, 4 units" in res.output
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 5 and config["config"]["n"] == 400 and config["config"]["steps"] == 4
    assert (out / "samples.npz").read_bytes() == merged
    for extra, named in ((["--shards", "4"], "resume it with shards 2"), (["--shards", "2", "--n", "800"], "(n)"),
                         (["--shards", "2", "--seed", "6"], "(seed)")):
        res = runner.invoke(app, ["sample", *extra, "--executor", "debug", "--resume", "--out", str(out)])
        assert res.exit_code == 2 and named in res.output, res.output
