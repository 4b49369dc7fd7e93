"""Diffusion-ODE sampling and small-model training in the EDM sigma-form `x = x_0 + sigma eps`.

res = train_denoiser(x, TrainConfig(), generator=g)
x, nfe = sample(res.denoiser, 1000, 2, sampler="dpmpp-2m", steps=20, generator=g)

model = load_diffusers("runs/digits-unet/unet")          # a diffusers UNet2DModel as D(x, sigma)
sigmas = edm_grid(10, model.denoiser.sigma_min, model.denoiser.sigma_max)
x, nfe = run_sampler(model.denoiser, sigmas[0] * torch.randn(16, 1, 8, 8), sigmas, "dpmpp-2m")
sampler = prepare_sampler(sigmas, "dpmpp-2m-sde", eta=0.5)   # checked once, then batch after batch
x, nfe = sampler.run(model.denoiser, sigmas[0] * torch.randn(16, 1, 8, 8), seed=0, first_index=16)

schedule = tune(target, "unipc", 5, x0, x_exact, sigma_max=80.0, sigma_min=0.002)   # a learned 5-NFE sampler
x = schedule.run(target, x0_new)
"""

from gentool.core.diffusion.checkpoints import load_checkpoint, load_denoiser, save_checkpoint
from gentool.core.diffusion.denoisers import EDMPrecond, EpsDenoiser, VDenoiser, edm_coefficients
from gentool.core.diffusion.diffusers_format import DiffusersModel, load_diffusers, save_diffusers
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.diffusion.discrete_denoiser import ClassConditioned, DiscreteDenoiser, Prediction
from gentool.core.diffusion.grids import GRIDS, edm_grid, make_grid
from gentool.core.diffusion.samplers import (
    SAMPLERS,
    PreparedSampler,
    prepare_sampler,
    run_sampler,
    sample,
    sampler_table,
    solve_sampler,
)
from gentool.core.diffusion.schedules import SCHEDULES, Schedule, get_schedule
from gentool.core.diffusion.targets import TARGETS, MixtureTarget, make_target
from gentool.core.diffusion.training import DenoiserTrainer, TrainConfig, TrainResult, train_denoiser
from gentool.core.diffusion.tuning import TunedSchedule, load_tuned, tune

__all__ = [
    "train_denoiser",
    "DenoiserTrainer",
    "TrainConfig",
    "TrainResult",
    "sample",
    "solve_sampler",
    "sampler_table",
    "run_sampler",
    "prepare_sampler",
    "PreparedSampler",
    "SAMPLERS",
    "load_denoiser",
    "load_checkpoint",
    "save_checkpoint",
    "EDMPrecond",
    "EpsDenoiser",
    "VDenoiser",
    "edm_coefficients",
    "DiffusersModel",
    "load_diffusers",
    "save_diffusers",
    "DiscreteSchedule",
    "DiscreteDenoiser",
    "ClassConditioned",
    "Prediction",
    "GRIDS",
    "edm_grid",
    "make_grid",
    "SCHEDULES",
    "Schedule",
    "get_schedule",
    "TARGETS",
    "MixtureTarget",
    "make_target",
    "tune",
    "TunedSchedule",
    "load_tuned",
]
