"""`gentool sample` and `gentool train` through the Typer app: outputs, metrics, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [*args, "--no-progress"])


def test_sample_gmm_ring_writes_outputs(tmp_path) -> None:
    res = run(
        "sample",
        "--target",
        "gmm-ring",
        "--sampler",
        "dpmpp-2m",
        "--steps",
        "10",
        "-n",
        "2000",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    for name in ("samples.npz", "scatter.png", "metrics.json", "config.json"):
        assert (tmp_path / name).is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["nfe"] == 10
    assert 0 < metrics["endpoint_rmse"] < 1 and 0 < metrics["sliced_w2"] < 1
    assert np.load(tmp_path / "samples.npz")["x"].shape == (2000, 2)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["sampler"] == "dpmpp-2m"


def test_sample_point_euler_is_exact(tmp_path) -> None:
    res = run(
        "sample",
        "--target",
        "point",
        "--sampler",
        "euler",
        "--steps",
        "3",
        "-n",
        "50",
        "--dim",
        "3",
        "--out",
        str(tmp_path),
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["endpoint_max"] < 1e-12


def test_train_then_sample_model_and_resume(tmp_path) -> None:
    args = [
        "train",
        "--data",
        "moons",
        "--width",
        "16",
        "--depth",
        "2",
        "--batch",
        "32",
        "--n-train",
        "200",
        "--out",
        str(tmp_path),
        "--checkpoint-every",
        "5",
    ]
    assert run(*args, "--steps", "10").exit_code == 0
    for name in ("ckpt.pt", "loss.png", "metrics.json", "config.json"):
        assert (tmp_path / name).is_file()
    first = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert first["kind"] == "gentool-denoiser" and first["step"] == 10
    res = run(*args, "--steps", "15", "--resume")
    assert res.exit_code == 0, res.output
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert state["step"] == 15 and state["losses"][:10] == first["losses"]
    out = tmp_path / "s"
    res = run("sample", "--model", str(tmp_path / "ckpt.pt"), "--steps", "5", "-n", "100", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "sliced_w2_heldout" in json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["sample", "--target", "gmm-ring", "--sampler", "rk9"], "sampler"),
        (["sample", "--target", "banana"], "target"),
        (["sample", "--target", "gaussian", "--steps", "0"], "steps"),
        (["sample", "--target", "gaussian", "--grid", "uniform-t", "--schedule", "vp-square"], "schedule"),
        (["sample", "--model", "MISSING/ckpt.pt"], "not found"),
        (["train", "--data", "spiral"], "unknown data"),
        (["train", "--data", "moons", "--steps", "0"], "steps"),
    ],
)
def test_bad_input_exit_2(tmp_path, args: list[str], word: str) -> None:
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    res = run(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert word in res.output and "Traceback" not in res.output


def test_wrong_checkpoint_kind_exit_2(tmp_path) -> None:
    torch.save({"kind": "gentool-gan"}, tmp_path / "gan.pt")
    res = run("sample", "--model", str(tmp_path / "gan.pt"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "kind" in res.output


def test_sde_sampler_with_its_option_runs(tmp_path) -> None:
    """`gentool sample --sampler dpmpp-2m-sde --eta 0.5` (the issue's command: no target or model, so the default
    target gmm-ring) runs and records the option and the target it sampled."""
    import json

    from gentool.cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["sample", "--sampler", "dpmpp-2m-sde", "--eta", "0.5", "-n", "200", "--steps",
                                      "10", "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert config["eta"] == 0.5 and config["target"] == "gmm-ring" and config["model"] is None
