"""Diffusers models in gentool: the discrete noise table, `D(x, sigma)` of a `UNet2DModel`, and equality of gentool's
samplers with diffusers' own schedulers on the same initial noise and sigma grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gentool.core.diffusion import edm_grid, run_sampler
from gentool.core.diffusion.diffusers_format import load_diffusers, save_diffusers
from gentool.core.diffusion.discrete import DiscreteSchedule, Spacing, betas_from_config
from gentool.core.diffusion.discrete_denoiser import ClassConditioned, Prediction
from gentool.core.errors import BadInput
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

STEPS = 10
PREDICTIONS = ["epsilon", "v_prediction"]


def tiny_unet(seed: int = 0, num_classes: int | None = None):
    """The issue's tiny random model: 8x8, one channel, block channels (16, 32)."""
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
                                 num_class_embeds=num_classes)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet().eval()


def saved(unet, path: Path, prediction: str, **scheduler) -> Path:
    """`unet` and a DDPM scheduler config saved with `save_pretrained`, as any diffusers user would."""
    unet.save_pretrained(path)
    diffusers.DDPMScheduler(prediction_type=prediction, **scheduler).save_pretrained(path)
    return path


def noise() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_euler_equals_diffusers_euler_karras(unet, tmp_path, prediction: str) -> None:
    sched = diffusers.EulerDiscreteScheduler(prediction_type=prediction, use_karras_sigmas=True)
    sched.set_timesteps(STEPS)
    x = start = noise() * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    model = load_diffusers(saved(unet, tmp_path, prediction))
    ours, nfe = run_sampler(model.denoiser, start, sched.sigmas, "euler")
    assert nfe == STEPS and rel(ours, x) < 1e-4
    # the same grid is gentool's EDM grid over the model's sigma table (the sample job's default range)
    grid = edm_grid(STEPS, model.denoiser.sigma_min, model.denoiser.sigma_max)
    torch.testing.assert_close(grid, sched.sigmas.double(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_dpmpp_2m_equals_diffusers_dpmsolver_karras(unet, tmp_path, prediction: str) -> None:
    sched = diffusers.DPMSolverMultistepScheduler(prediction_type=prediction, algorithm_type="dpmsolver++",
                                                  solver_order=2, use_karras_sigmas=True)
    sched.set_timesteps(STEPS)
    sigmas = sched.sigmas.double()
    z = noise()
    x = z.clone()  # diffusers' DPM-Solver steps the VP sample x~ = x / sqrt(sigma^2 + 1), starting at z
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    # diffusers evaluates the net at rounded timesteps here, hence integer_timesteps
    model = load_diffusers(saved(unet, tmp_path, prediction), integer_timesteps=True)
    ours, nfe = run_sampler(model.denoiser, z * float((sigmas[0] ** 2 + 1).sqrt()), sched.sigmas, "dpmpp-2m")
    assert nfe == STEPS and rel(ours, x) < 1e-4
    fractional = load_diffusers(tmp_path).denoiser  # interpolated timesteps: close, not equal
    assert 1e-5 < rel(run_sampler(fractional, z * float((sigmas[0] ** 2 + 1).sqrt()), sigmas, "dpmpp-2m")[0], x) < 0.05


@pytest.mark.parametrize("spacing", [s.value for s in Spacing])
def test_model_grid_and_timesteps_equal_diffusers_euler(spacing: str) -> None:
    sched = diffusers.EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    sched.set_timesteps(STEPS)
    schedule = DiscreteSchedule.from_config(dict(sched.config))
    torch.testing.assert_close(schedule.model_grid(STEPS), sched.sigmas.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(schedule.sigma_to_t(sched.sigmas[:-1].double()), sched.timesteps.double(),
                               rtol=0, atol=2e-3)


def test_sigma_to_t_equals_diffusers_karras_timesteps() -> None:
    sched = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    sched.set_timesteps(25)
    schedule = DiscreteSchedule.from_config(dict(sched.config))
    torch.testing.assert_close(schedule.sigma_to_t(sched.sigmas[:-1].double()), sched.timesteps.double(),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_noise_table_equals_diffusers(beta_schedule: str) -> None:
    sched = diffusers.DDPMScheduler(beta_schedule=beta_schedule, beta_start=0.00085, beta_end=0.012)
    table = DiscreteSchedule.from_config(dict(sched.config)).sigmas
    abar = sched.alphas_cumprod.double()
    torch.testing.assert_close(table, ((1 - abar) / abar).sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(betas_from_config({"trained_betas": sched.betas.tolist()}), sched.betas)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 999.0))
def test_t_to_sigma_inverts_sigma_to_t(t: float) -> None:
    schedule = DiscreteSchedule.from_config({})
    sigma = schedule.t_to_sigma(torch.tensor([t], dtype=torch.float64))
    assert abs(float(schedule.sigma_to_t(sigma)) - t) < 1e-6
    assert float(schedule.sigma_to_t(sigma, integer=True)) == round(float(schedule.sigma_to_t(sigma)))


def test_sigma_to_t_clamps_outside_the_table() -> None:
    schedule = DiscreteSchedule.from_config({})
    t = schedule.sigma_to_t(torch.tensor([1e-6, schedule.sigma_min, schedule.sigma_max, 1e6], dtype=torch.float64))
    assert t.tolist() == [0.0, 0.0, 999.0, 999.0]


@pytest.mark.parametrize("prediction", list(Prediction))
def test_prediction_types_recover_x0_and_weight_the_plain_mse(prediction: Prediction) -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 150.0], dtype=torch.float64)[:, None]
    alpha, s = 1 / (sigma**2 + 1).sqrt(), sigma / (sigma**2 + 1).sqrt()
    target = {Prediction.EPSILON: eps, Prediction.V: alpha * eps - s * x0, Prediction.SAMPLE: x0}[prediction]
    x = x0 + sigma * eps
    torch.testing.assert_close(prediction.denoised(x, sigma, target), x0)
    wrong = target + 0.1 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    mse = ((wrong - target) ** 2).sum(1)
    torch.testing.assert_close(prediction.loss_weight(sigma[:, 0]) * ((prediction.denoised(x, sigma, wrong) - x0) ** 2)
                               .sum(1), mse)


def test_classifier_free_guidance(tmp_path) -> None:
    model = load_diffusers(saved(tiny_unet(num_classes=4).eval(), tmp_path, "epsilon")).denoiser
    x, sigma = noise().flatten(1), torch.full((4,), 2.0)
    labels = torch.tensor([0, 1, 2, 0])
    cond, uncond = model(x, sigma, labels), model(x, sigma, torch.full((4,), 3))
    torch.testing.assert_close(ClassConditioned(model, labels)(x, sigma), cond)
    torch.testing.assert_close(ClassConditioned(model, labels, 0.0, 3)(x, sigma), uncond)
    torch.testing.assert_close(ClassConditioned(model, labels, 2.5, 3)(x, sigma), uncond + 2.5 * (cond - uncond),
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cond, uncond)


def test_pipeline_layout_and_save_round_trip(unet, tmp_path) -> None:
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "pipe" / "scheduler")
    model = load_diffusers(tmp_path / "pipe")
    assert model.denoiser.prediction is Prediction.V and model.denoiser.sample_shape == (1, 8, 8)
    out = save_diffusers(tmp_path / "flat", model.denoiser, {"num_train_timesteps": 1000}, {"data": "digits"})
    plain = diffusers.UNet2DModel.from_pretrained(out)
    x, t = noise(), torch.tensor([10.0, 200.0, 500.0, 999.0])
    with torch.no_grad():
        torch.testing.assert_close(plain(x, t).sample, unet(x, t).sample)
    again = load_diffusers(out)
    assert again.data == "digits" and again.denoiser.prediction is Prediction.V
    assert json.loads((out / "scheduler_config.json").read_text())["_class_name"] == "DDPMScheduler"


def test_hub_id_resolves_from_the_local_cache_only(unet, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-ddpm"
    saved(unet, repo / "snapshots" / commit, "epsilon")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_diffusers("someone/tiny-ddpm").path == repo / "snapshots" / commit
    with pytest.raises(BadInput, match="neither a local path nor a hub model in the local cache"):
        load_diffusers("someone/other-model")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "scheduler_config.json").unlink(), "no scheduler config"),
    (lambda d: (d / "diffusion_pytorch_model.safetensors").unlink(), "no weights in"),
    (lambda d: (d / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage"), "cannot load the diffusers model"),
    (lambda d: (d / "config.json").write_text('{"_class_name": "UNetMotionModel"}'), "is not supported"),
    (lambda d: (d / "scheduler_config.json").write_text('{"_class_name": "EDMEulerScheduler", "sigma_max": 80}'),
     "no discrete beta schedule"),
    (lambda d: (d / "scheduler_config.json").write_text('{"beta_schedule": "cosine"}'), "unknown beta_schedule"),
])
def test_broken_model_directories_are_bad_input(unet, tmp_path, change, message: str) -> None:
    change(saved(unet, tmp_path, "epsilon"))
    with pytest.raises(BadInput, match=message):
        load_diffusers(tmp_path)
