"""`gentool sample --model DIR` on diffusers models and `gentool train --arch unet`: outputs, settings, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.diffusion import SAMPLERS
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.jobs import run as run_job
from gentool.core.jobs.sample import SAMPLE_GRIDS
from PIL import Image
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
runner = CliRunner()
FD_MAX = 7.0  # measured 5.60 (seed 0, CPU); the real-vs-real floor is 5.9


def gentool(*args: str):
    return runner.invoke(app, [*args, "--no-progress"])


def tiny_model(path: Path, num_classes: int | None = None, meta: dict | None = None) -> Path:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
                                 num_class_embeds=num_classes)
    unet.save_pretrained(path)
    diffusers.DDPMScheduler().save_pretrained(path)
    if meta is not None:
        (path / "gentool.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def test_sample_writes_images_in_batches(model: Path, tmp_path: Path) -> None:
    pngs = tmp_path / "png"
    res = gentool("sample", "--model", str(model), "--sampler", "heun", "--steps", "3", "-n", "10", "--batch-size",
                  "4", "--save-png", str(pngs), "--out", str(tmp_path / "run"))
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    saved = np.load(run / "samples.npz")
    assert saved["x"].shape == (10, 1, 8, 8) and saved["x0"].shape == (10, 1, 8, 8)
    table = DiscreteSchedule.from_config({})
    assert np.isclose(saved["sigmas"][0], table.sigma_max) and np.isclose(saved["sigmas"][-2], table.sigma_min)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # one row per batch: 4 + 4 + 2
    assert json.loads((run / "metrics.json").read_text())["nfe"] == 5
    files = sorted(pngs.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    first = np.asarray(Image.open(files[0]))
    expected = np.rint(np.clip((saved["x"][0, 0] + 1) / 2, 0, 1) * 255)
    assert first.shape == (8, 8) and np.array_equal(first, expected)
    assert Image.open(run / "grid.png").size[0] >= 256


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_on_a_diffusers_model(model: Path, tmp_path: Path, sampler: str) -> None:
    # the adaptive PF-ODE at its default tolerance (1e-5) takes hundreds of UNet calls; 1e-3 runs the same path
    loose = {"rtol": 1e-3, "atol": 1e-3} if sampler == "ode" else {}
    result = run_job("sample", tmp_path, model=str(model), sampler=sampler, steps=4, n=3, plots=False, **loose)
    assert result.summary["nfe"] >= 4
    assert np.isfinite(np.load(tmp_path / "samples.npz")["x"]).all()


@pytest.mark.parametrize("grid", SAMPLE_GRIDS)
def test_every_grid_runs_on_a_diffusers_model(model: Path, tmp_path: Path, grid: str) -> None:
    run_job("sample", tmp_path, model=str(model), sampler="euler", grid=grid, steps=4, n=3, plots=False)
    sigmas = np.load(tmp_path / "samples.npz")["sigmas"]
    assert len(sigmas) == 5 and sigmas[-1] == 0 and np.all(np.diff(sigmas) < 0)


def test_class_conditional_labels_and_guidance(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "cond", num_classes=4, meta={"null_class": 3})
    res = gentool("sample", "--model", str(path), "--steps", "3", "-n", "7", "--batch-size", "4", "--cfg", "2",
                  "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "a" / "samples.npz")["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    res = gentool("sample", "--model", str(path), "--steps", "3", "-n", "3", "--class-label", "2",
                  "--out", str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "b" / "samples.npz")["labels"].tolist() == [2, 2, 2]
    res = gentool("sample", "--model", str(path), "--class-label", "3", "--out", str(tmp_path / "c"))
    assert res.exit_code == 2 and "unknown class_label '3'" in res.output
    plain = tiny_model(tmp_path / "plain", num_classes=4)
    res = gentool("sample", "--model", str(plain), "--cfg", "3", "--out", str(tmp_path / "d"))
    assert res.exit_code == 2 and "needs the model's unconditional class: set null_class" in res.output
    res = gentool("sample", "--model", str(plain), "--null-class", "3", "--cfg", "3", "--steps", "2", "-n", "2",
                  "--out", str(tmp_path / "e"))
    assert res.exit_code == 0, res.output


def test_train_unet_then_sample_and_load_in_diffusers(tmp_path: Path) -> None:
    train = tmp_path / "train"
    res = gentool("train", "--data", "digits", "--arch", "unet", "--width", "8", "--steps", "4", "--batch", "8",
                  "--n-train", "64", "--prediction", "v_prediction", "--out", str(train))
    assert res.exit_code == 0, res.output
    assert not (train / "ckpt.pt").exists()
    unet = diffusers.UNet2DModel.from_pretrained(train / "unet")
    assert unet.config.block_out_channels == [8, 16] and unet.config.sample_size == 8
    assert diffusers.DDPMScheduler.from_pretrained(train / "scheduler").config.prediction_type == "v_prediction"
    pipe = diffusers.DiffusionPipeline.from_pretrained(train)  # the run directory is a DDPMPipeline
    assert type(pipe).__name__ == "DDPMPipeline" and pipe.scheduler.config.prediction_type == "v_prediction"
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    res = gentool("sample", "--model", str(train), "--steps", "3", "-n", "40", "--out", str(tmp_path / "s"))
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["feature_net"] == "digits_classifier" and metrics["frechet_distance"] > 0
    assert {"precision", "recall", "density", "coverage", "sliced_w2_heldout"} <= set(metrics)
    res = gentool("sample", "--model", str(train / "unet"), "--steps", "2", "-n", "40", "--out", str(tmp_path / "u"))
    assert res.exit_code == 0, res.output  # the unet folder alone finds its scheduler beside it


def test_prediction_needs_the_unet(tmp_path: Path) -> None:
    res = gentool("train", "--data", "moons", "--prediction", "v_prediction", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "prediction applies to arch unet, not 'auto'" in res.output
    res = gentool("train", "--data", "moons", "--arch", "unet", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "needs square images" in res.output


@pytest.mark.slow
@pytest.mark.reproduction  # 6000 UNet steps at one torch thread: over 30 CPU-minutes, most of a CI slow stage
def test_digits_unet_samples_digits(tmp_path: Path) -> None:
    """The README's digits UNet (6000 steps, ~8 CPU-minutes of compute): DPM-Solver++(2M) in 20 steps gets close to
    the real-vs-real floor of the feature metrics (held-out vs training digits: Fréchet distance 5.9, precision
    0.98, recall 0.97)."""
    train = tmp_path / "train"
    res = gentool("train", "--data", "digits", "--arch", "unet", "--steps", "6000", "--batch", "128",
                  "--out", str(train))
    assert res.exit_code == 0, res.output
    res = gentool("sample", "--model", str(train / "unet"), "--steps", "20", "-n", "2000", "--batch-size", "500",
                  "--out", str(tmp_path / "s"))
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["frechet_distance"] < FD_MAX and metrics["precision"] > 0.9 and metrics["recall"] > 0.9
    assert diffusers.UNet2DModel.from_pretrained(train / "unet").config.sample_size == 8
