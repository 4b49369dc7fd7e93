"""No code execution from data: every checkpoint, run state, unit, snapshot and array file gentool reads is
read without unpickling arbitrary objects. Each case plants a pickle whose `__reduce__` would create a marker
file in a file the command reads; the command must exit 2 with one line naming the file, and the marker must
never appear."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.io import load_numpy_file, load_torch_file
from gentool.core.run.rundir import read_snapshot
from typer.testing import CliRunner

runner = CliRunner()


class Payload:
    """Unpickling this runs `touch MARK`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, kind: str, marker: Path) -> Path:
    """Write a file of `kind` at `path` whose loading with pickle enabled would create `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    evil = Payload(marker)
    if kind == "raw-pickle":
        path.write_bytes(pickle.dumps(evil))
    elif kind == "torch-dict":
        torch.save({"kind": "gentool-denoiser", "units_done": 1, "job": evil, "config": evil}, path)
    elif kind == "npy":
        np.save(path, np.array([evil, 1.0], dtype=object), allow_pickle=True)
    elif kind == "npz":
        np.savez(path, x=np.array([evil], dtype=object), t=np.array(1.0))
    elif kind == "jsonl":
        path.write_bytes(pickle.dumps(evil))
    return path


def _assert_refused(argv: list[str], marker: Path, fragment: str) -> None:
    res = runner.invoke(app, [*argv, "--no-progress", "--no-plots"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert not marker.exists(), f"{argv}: the planted pickle ran"
    assert res.exit_code == 2, (argv, res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-dict"])
def test_checkpoint_model_file(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARK"
    ckpt = _plant(tmp_path / "evil.pt", kind, marker)
    _assert_refused(["sample", "--model", str(ckpt), "--out", str(tmp_path / "out")], marker, str(ckpt))
    assert not (tmp_path / "out").exists()


def test_checkpoint_in_a_run_directory(tmp_path: Path) -> None:
    """`--model DIR` reads DIR/ckpt.pt."""
    marker = tmp_path / "MARK"
    _plant(tmp_path / "trained" / "ckpt.pt", "torch-dict", marker)
    _assert_refused(["sample", "--model", str(tmp_path / "trained"), "--out", str(tmp_path / "out")], marker,
                    "ckpt.pt")


def test_diffusers_weights(tmp_path: Path) -> None:
    """A diffusers model directory whose `.bin` weights are a pickle payload."""
    marker, model = tmp_path / "MARK", tmp_path / "unet"
    model.mkdir()
    (model / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, '
                                       '"out_channels": 1, "block_out_channels": [8], "layers_per_block": 1, '
                                       '"down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"], '
                                       '"norm_num_groups": 4}')
    (model / "scheduler_config.json").write_text('{"beta_schedule": "linear", "prediction_type": "epsilon", '
                                                 '"num_train_timesteps": 10}')
    _plant(model / "diffusion_pytorch_model.bin", "torch-dict", marker)
    _assert_refused(["sample", "--model", str(model), "--out", str(tmp_path / "out")], marker, str(model))


def _small_run(out: Path) -> list[str]:
    argv = ["optimize", "topk", "--x", "3,1,2", "--k", "1", "--out", str(out)]
    assert runner.invoke(app, [*argv, "--no-progress", "--no-plots"]).exit_code == 0
    return argv


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-dict"])
def test_state_before_resume(tmp_path: Path, kind: str) -> None:
    marker, out = tmp_path / "MARK", tmp_path / "run"
    argv = _small_run(out)
    (out / "DONE.json").unlink()
    config_before = (out / "config.json").read_bytes()
    _plant(out / "state.pt", kind, marker)
    _assert_refused([*argv, "--resume"], marker, "state.pt")
    assert (out / "config.json").read_bytes() == config_before


def test_unit_file_before_resume(tmp_path: Path) -> None:
    """Unit files are JSON Lines: a pickle planted there is corrupt rows, never unpickled."""
    marker, out = tmp_path / "MARK", tmp_path / "run"
    argv = _small_run(out)
    (out / "DONE.json").unlink()
    _plant(out / "units" / "000001.jsonl", "jsonl", marker)
    _assert_refused([*argv, "--resume"], marker, "000001.jsonl")


@pytest.mark.parametrize(("command", "option"), [
    (["optimize", "particles"], "--init"),
    (["optimize", "simplex"], "--x"),
    (["monoflow", "--steps", "2"], "--data"),
    (["mad-loop", "--generations", "1", "--seeds", "1"], "--truth"),
])
@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_array_data_files(tmp_path: Path, command: list[str], option: str, kind: str) -> None:
    marker = tmp_path / "MARK"
    data = _plant(tmp_path / f"evil.{kind}", kind, marker)
    _assert_refused([*command, option, str(data), "--out", str(tmp_path / "out")], marker, str(data))
    assert not (tmp_path / "out").exists()


def test_snapshot_file(tmp_path: Path) -> None:
    """Snapshots (read back for the final figures) go through the same loader."""
    marker = tmp_path / "MARK"
    _plant(tmp_path / "snapshots" / "000001.npz", "npz", marker)
    with pytest.raises(BadInput, match="000001.npz:x holds object values"):
        read_snapshot(tmp_path, 1)
    assert not marker.exists()


def test_loaders_accept_what_gentool_writes(tmp_path: Path) -> None:
    """The safe loaders read the project's own files: tensors, generator states, nested plain data."""
    state = {"units_done": 3, "job": {"x": torch.randn(2, 3), "rng": torch.Generator().manual_seed(1).get_state(),
                                      "history": [{"step": 1, "loss": 0.5}], "name": "a", "t": (1, 2.0)}}
    torch.save(state, tmp_path / "state.pt")
    back = load_torch_file(tmp_path / "state.pt", "state file")
    assert torch.equal(back["job"]["x"], state["job"]["x"]) and back["job"]["history"] == state["job"]["history"]
    np.savez(tmp_path / "a.npz", x=np.arange(6.0).reshape(2, 3), n=np.array(4))
    arrays = load_numpy_file(tmp_path / "a.npz", "data")
    assert arrays["x"].shape == (2, 3) and int(arrays["n"]) == 4


def test_npy_header_checked_before_allocation(tmp_path: Path) -> None:
    """A header claiming 8 PB is refused with the estimate; nothing is allocated."""
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**6)})
    with pytest.raises(BadInput, match=r"shape \(1000000000, 1000000\) needs about 7.11 PiB of memory"):
        load_numpy_file(path, "data")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.write(path, "x.npy")
    with pytest.raises(BadInput, match=r"huge.npz:x of shape"):
        load_numpy_file(tmp_path / "huge.npz", "data")
