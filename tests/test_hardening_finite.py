"""Finite or refused: NaN/inf in input data files and command-line vectors is bad input naming the file (or
setting), row and column; only real numeric dtypes are accepted (complex, object, text -> exit 2); extreme
values end as exit 2 or a numerical-failure exit naming the knob, never a traceback; `--out ''` is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gentool.cli.main import app
from gentool.core.config import parse_matrix, parse_vector, read_array
from gentool.core.errors import BadInput
from typer.testing import CliRunner

runner = CliRunner()


def _one_line(argv: list[str], code: int, out: Path) -> str:
    res = runner.invoke(app, [*argv, "--no-progress", "--no-plots"] + ([] if "--out" in argv else
                                                                        ["--out", str(out)]))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    return lines[0]


def _write(path: Path, arr: np.ndarray) -> Path:
    if path.suffix == ".npy":
        np.save(path, arr)
    elif path.suffix == ".npz":
        np.savez(path, a=arr)
    else:
        np.savetxt(path, arr, delimiter="," if path.suffix == ".csv" else " ")
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".txt"])
@pytest.mark.parametrize(("bad", "where"), [(np.nan, "row 3, column 2"), (np.inf, "row 3, column 2"),
                                            (-np.inf, "row 3, column 2")])
def test_non_finite_data_names_file_row_and_column(tmp_path: Path, suffix: str, bad: float, where: str) -> None:
    arr = np.ones((4, 2))
    arr[2, 1] = bad
    path = _write(tmp_path / f"x{suffix}", arr)
    with pytest.raises(BadInput, match=rf"init: {path}(:a)? must be finite: it holds {bad} at {where}"):
        read_array(str(path), "init")
    line = _one_line(["optimize", "particles", "--init", str(path)], 2, tmp_path / "out")
    assert str(path) in line and where in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arr", [np.array([[1 + 2j, 0.5], [1.0, 2.0]]), np.array([["a", "b"], ["c", "d"]]),
                                 np.array([[1, None], [2, 3]], dtype=object)], ids=["complex", "text", "object"])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_only_real_numeric_dtypes(tmp_path: Path, arr: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, arr, allow_pickle=True)
    else:
        np.savez(path, a=arr)
    line = _one_line(["optimize", "particles", "--init", str(path)], 2, tmp_path / "out")
    assert "only real numbers (bool, integer, float) are accepted" in line and str(path) in line


@pytest.mark.parametrize("text", ["1,nan,2", "1,inf", "-inf,0", "1,2;3,nan"])
def test_command_line_vectors_must_be_finite(text: str) -> None:
    with pytest.raises(BadInput, match=r"^v must be finite: it holds -?(nan|inf) at (entry|row)"):
        (parse_matrix if ";" in text else parse_vector)(text, "v")


def test_vectors_from_lists_must_be_real_and_finite() -> None:
    with pytest.raises(BadInput, match="v must be finite"):
        parse_vector([1.0, float("inf")], "v")
    with pytest.raises(BadInput, match="v must be real numbers"):
        parse_vector([1 + 1j, 2.0], "v")


@pytest.mark.parametrize(("argv", "code", "fragment"), [
    (["optimize", "particles", "--time", "1e308", "--step-size", "1e-300"], 2,
     "time / step_size = inf steps, more than 1e+09: raise step_size"),
    (["optimize", "simplex", "--method", "projected-gradient", "--no-backtrack", "--lr", "1e308", "--steps", "5"],
     3, "overflowed at lr 1e+308; lower lr"),
    (["monoflow", "--dt", "0.1"], 2, "dt applies to mode particles, exact"),
    (["monoflow", "--mode", "particles", "--dt", "1e308"], 2, "dt must be below 1e+38 (float32)"),
    (["optimize", "particles", "--method", "kde-flow", "--bandwidth", "1e308"], 2,
     "bandwidth must be a finite number in (0, 1e+150]"),
    (["mad-loop", "--family", "diffusion", "--train-steps", str(2**63)], 2, "train_steps must be an integer in"),
    (["optimize", "particles", "--target", "gaussian", "--target-mean", "nan,0"], 2, "target_mean must be finite"),
    (["optimize", "topk", "--x", "1,2,-inf", "--k", "1"], 2, "x must be finite: it holds -inf at entry 3"),
    (["train", "--steps", str(2**63)], 2, "steps must be an integer in [1, 1000000000]"),
    (["optimize", "particles", "--step-size", "1e308"], 2, "the flow takes no step; lower step_size"),
    (["monoflow", "--lr-d", "1e308"], 2, "lr_d must be below 1e+38 (float32)"),
    (["sample", "--target", "gaussian", "--sigma-max", "1e308"], 2, "sigma_max must be a finite number in"),
    (["monoflow", "--hidden", "100000", "--depth", "1000"], 2, "monoflow networks (hidden=100000, depth=1000"),
])
def test_extreme_values_name_the_knob(tmp_path: Path, argv: list[str], code: int, fragment: str) -> None:
    assert fragment in _one_line(argv, code, tmp_path / "out")


@pytest.mark.parametrize("command", [["optimize", "topk", "--x", "3,1,2", "--k", "1"],
                                     ["mad-loop", "--generations", "1", "--seeds", "1"]])
def test_an_empty_out_is_refused(tmp_path: Path, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "the run directory (out) is empty" in _one_line([*command, "--out", ""], 2, tmp_path / "unused")
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


RECIPE = 'description = "probe"\ncommand = "optimize topk"\n[options]\nx = [3, 1, 2]\nk = 1\n[sweep]\nseeds = [0]\n'


@pytest.mark.parametrize(("argv", "what"), [
    (["sweep", "RECIPE", "--executor", "debug", "--out", ""], "the sweep directory (out) is empty"),
    (["run", "RECIPE", "--out", ""], "the run directory (out) is empty"),
    (["run", ""], "the recipe (recipe) is empty; name a file"),
    (["report", ""], "the sweep directory (paths) is empty"),
    (["report", "--compare", ""], "a run directory (paths) is empty"),
    (["report", "HERE", "--out", ""], "the report directory (out) is empty"),
    (["merge", ""], "the run directory (out) is empty"),
    (["sample", "--target", "gaussian", "-n", "8", "--batch-size", "4", "--shards", "2", "--out", ""],
     "the run directory (out) is empty"),
])
def test_an_empty_path_is_refused_by_every_command(tmp_path: Path, argv: list[str], what: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """'' is not the current directory (Path('') is): refused, naming the option, and nothing is written."""
    (tmp_path / "probe.toml").write_text(RECIPE)
    recipe = str(tmp_path / "probe.toml")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, [{"RECIPE": recipe, "HERE": "."}.get(a, a) for a in argv])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and what in lines[0], res.output
    assert list(work.iterdir()) == []


def test_an_unbounded_float_setting_names_nan_without_a_stray_space() -> None:
    from gentool.core.config import check_float

    with pytest.raises(BadInput, match=r"^tol must be a finite number, got nan$"):
        check_float("tol", float("nan"))
    with pytest.raises(BadInput, match=r"^lr must be a finite number > 0, got nan$"):
        check_float("lr", float("nan"), 0.0, lo_open=True)
