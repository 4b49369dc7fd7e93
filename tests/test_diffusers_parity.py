"""gentool's sample job against diffusers' own schedulers on one tiny random UNet2DModel: the same initial draws
z (`init`), the scheduler's config saved beside the model (grid, timestep rule, clipping and final sigma come from
it), the scheduler's defaults expressed as sampler options; float32 on CPU, relative error <= 1e-4. Stochastic
schedulers get the same noise through `noise_sampler`. Not paired: diffusers' third-order `sde-dpmsolver++`
step, whose D2 coefficient `(1 - e^{-2h} - 2h)/(2h)^2 - 1/2` tends to -1 as h -> 0 (its ODE step's, and k-diffusion's
`sample_dpmpp_3m_sde`, tend to 0; gentool's `dpmpp-3m-sde` follows k-diffusion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.core.config import make_config
from gentool.core.diffusion import run_sampler
from gentool.core.diffusion.diffusers_format import load_diffusers
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.diffusion.discrete_denoiser import Clipped
from gentool.core.jobs.sample import SampleConfig, SampleJob
from test_diffusers import tiny_unet

diffusers = pytest.importorskip("diffusers")

STEPS = 10
TOL = 1e-4
SD_TABLE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

# (id, scheduler class, its arguments, step arguments, gentool settings)
PAIRS = [
    ("euler", "EulerDiscreteScheduler", {}, {}, {"sampler": "euler", "grid": "model"}),
    ("euler-trailing", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, {},
     {"sampler": "euler", "grid": "model"}),
    ("euler-karras-leading", "EulerDiscreteScheduler",
     {"use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": 1, **SD_TABLE}, {},
     {"sampler": "euler", "grid": "edm", "sigma_range": "spacing", "convention": "vp"}),
    ("ddim", "DDIMScheduler", {"clip_sample": False}, {}, {"sampler": "ddim", "eta": 0.0, "grid": "model",
                                                           "convention": "vp"}),
    ("ddim-clip", "DDIMScheduler", {"clip_sample": True, "clip_sample_range": 0.5},
     {"use_clipped_model_output": True}, {"sampler": "ddim", "eta": 0.0, "grid": "model", "convention": "vp"}),
    ("ddim-sd", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, **SD_TABLE}, {},
     {"sampler": "ddim", "eta": 0.0, "grid": "model", "convention": "vp"}),
    ("dpmpp-2m", "DPMSolverMultistepScheduler", {}, {},
     {"sampler": "dpmpp-2m", "grid": "model", "convention": "vp", "integer_timesteps": True}),
    ("dpmpp-2m-heun", "DPMSolverMultistepScheduler", {"solver_type": "heun"}, {},
     {"sampler": "dpmpp-2m", "solver": "heun", "grid": "model", "convention": "vp", "integer_timesteps": True}),
    ("dpmpp-2m-threshold", "DPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.5}, {},
     {"sampler": "dpmpp-2m", "grid": "model", "convention": "vp", "integer_timesteps": True}),
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3}, {},
     {"sampler": "dpmpp-3m-kd", "solver": "midpoint", "lower_order_final": True, "grid": "model",
      "convention": "vp", "integer_timesteps": True}),
    ("dpmpp-3m-leading", "DPMSolverMultistepScheduler", {"solver_order": 3, "timestep_spacing": "leading",
                                                         "steps_offset": 1, **SD_TABLE}, {},
     {"sampler": "dpmpp-3m-kd", "solver": "midpoint", "lower_order_final": True, "grid": "model",
      "convention": "vp", "integer_timesteps": True}),
    ("unipc", "UniPCMultistepScheduler", {}, {},
     {"sampler": "unipc", "order": 2, "grid": "model", "convention": "vp", "integer_timesteps": True}),
    ("unipc-3", "UniPCMultistepScheduler", {"solver_order": 3}, {},
     {"sampler": "unipc", "order": 3, "grid": "model", "convention": "vp", "integer_timesteps": True}),
    ("heun", "HeunDiscreteScheduler", {}, {}, {"sampler": "heun", "grid": "model"}),
    ("heun-clip", "HeunDiscreteScheduler", {"clip_sample": True, "clip_sample_range": 0.5}, {},
     {"sampler": "heun", "grid": "model"}),
]


@pytest.fixture(scope="module")
def unet():
    return tiny_unet().eval()


def draws(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def diffusers_loop(sched, unet, z: torch.Tensor, steps: int = STEPS, generator: torch.Generator | None = None,
                   **step_kwargs) -> torch.Tensor:
    """What a pipeline's denoising loop does with latents z."""
    sched.set_timesteps(steps)
    x = z * sched.init_noise_sigma
    extra = {"generator": generator} if generator is not None else {}
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x, **step_kwargs, **extra).prev_sample
    return x


def model_dir(unet, sched, path: Path) -> Path:
    unet.save_pretrained(path)
    sched.save_pretrained(path)
    return path


def save(tmp: Path, z: torch.Tensor) -> Path:
    np.save(tmp / "z.npy", z.numpy())
    return tmp / "z.npy"


def gentool_job(path: Path, z: torch.Tensor, tmp: Path, **settings) -> torch.Tensor:
    config = make_config(SampleConfig, {"model": str(path), "n": len(z), "steps": STEPS, "init": str(save(tmp, z)),
                                        **settings})
    job = SampleJob(config, seed=0)
    job.advance()
    return job.samples()["x"]


@pytest.mark.parametrize(("cls", "kwargs", "step_kwargs", "settings"), [p[1:] for p in PAIRS],
                         ids=[p[0] for p in PAIRS])
def test_sample_job_equals_diffusers_scheduler(unet, tmp_path, cls: str, kwargs: dict, step_kwargs: dict,
                                               settings: dict) -> None:
    sched = getattr(diffusers, cls)(**kwargs)
    z = draws()
    expected = diffusers_loop(sched, unet, z, **step_kwargs)
    ours = gentool_job(model_dir(unet, sched, tmp_path / "model"), z, tmp_path, **settings)
    assert rel(ours, expected) < TOL


def test_clipping_matters_and_ddim_default_keeps_the_unclipped_epsilon(unet, tmp_path) -> None:
    """Without clipping the result differs; diffusers' DDIM default (unclipped epsilon) is another method, which
    clipped_epsilon false gives."""
    sched = diffusers.DDIMScheduler(clip_sample=True, clip_sample_range=0.5)
    z, path = draws(), model_dir(unet, sched, tmp_path / "model")
    clipped = diffusers_loop(sched, unet, z, use_clipped_model_output=True)
    settings = {"sampler": "ddim", "eta": 0.0, "grid": "model", "convention": "vp"}
    assert rel(gentool_job(path, z, tmp_path, **settings, clip_sample="off"), clipped) > 1e-2
    default = diffusers_loop(sched, unet, z)
    assert rel(default, clipped) > 1e-3
    ours = gentool_job(path, z, tmp_path, **settings, clipped_epsilon=False, ddim_step="stride")
    assert rel(ours, default) < 2 * TOL


def float64_unet(unet):
    out = tiny_unet().eval().double()
    out.load_state_dict(unet.state_dict())
    return out


@pytest.mark.parametrize("steps", [7, 10])
@pytest.mark.parametrize(("spacing", "offset"), [("linspace", 0), ("leading", 1), ("trailing", 0)])
def test_ddim_compat_equals_the_schedulers_default(unet, tmp_path, spacing: str, offset: int, steps: int) -> None:
    """DDIMScheduler(clip_sample=True) as its pipelines step it (use_clipped_model_output False, from t to
    t - T//N): compat diffusers, float32. Its own float32 and float64 loops are ~6e-5 apart at 10 steps (the net's
    epsilon is not recomputed from the clipped x_0: rounding is not damped), the bound for ours."""
    sched = diffusers.DDIMScheduler(clip_sample=True, timestep_spacing=spacing, steps_offset=offset)
    z = draws()
    expected = diffusers_loop(sched, unet, z, steps=steps)
    config = make_config(SampleConfig, {"model": str(model_dir(unet, sched, tmp_path / "model")), "n": len(z),
                                        "steps": steps, "init": str(save(tmp_path, z)), "compat": "diffusers"})
    job = SampleJob(config, seed=0)
    assert (job.config.ddim_step, job.config.clipped_epsilon) == ("stride", False)
    job.advance()
    assert rel(job.samples()["x"], expected) < TOL


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize(("spacing", "offset"), [("linspace", 0), ("leading", 1), ("trailing", 0)])
def test_ddim_step_rule_and_net_epsilon_are_exact(unet, tmp_path, spacing: str, offset: int, eta: float) -> None:
    """In float64 (net and state), with the same noise: gentool's ddim with the scheduler's targets t - T//N and
    ClippedNetEpsilon equals diffusers' DDIM default to its float32 noise table's precision (1e-5), for every
    spacing; stepping to the next grid level instead differs where t - T//N is not on the grid (linspace)."""
    from gentool.core.diffusion.discrete_denoiser import ClippedNetEpsilon
    from gentool.core.diffusion.sampler_defs import ddim_step_ratios

    sched = diffusers.DDIMScheduler(clip_sample=True, clip_sample_range=0.5, timestep_spacing=spacing,
                                    steps_offset=offset)
    net = float64_unet(unet)
    z = draws().double()
    expected = diffusers_loop(sched, net, z, eta=eta, generator=torch.Generator().manual_seed(3))
    model = load_diffusers(model_dir(unet, sched, tmp_path / "model"))
    model.denoiser.net = net
    table = model.denoiser.schedule
    grid, targets = table.model_grid(STEPS), tuple(float(t) for t in table.ddim_targets(STEPS))
    g = torch.Generator().manual_seed(3)
    results = []
    for to in (targets, None):
        g.manual_seed(3)
        denoiser = ClippedNetEpsilon.for_ddim(model.denoiser, model.clipping, grid,
                                              ddim_step_ratios(grid.tolist(), to, eta))
        x, _ = run_sampler(denoiser, z * float((grid[0] ** 2 + 1).sqrt()), grid, "ddim", eta=eta, targets=to,
                           noise_sampler=lambda s, s1: torch.randn(z.shape, generator=g, dtype=z.dtype))
        results.append(rel(x / float((grid[-1] ** 2 + 1).sqrt()), expected))
    assert results[0] < 1e-5
    assert (results[1] > 1e-3) == (spacing == "linspace")


@pytest.mark.parametrize(("cls", "kwargs", "sampler", "opts"), [
    ("EulerAncestralDiscreteScheduler", {}, "euler-ancestral", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "dpmpp-2m-sde", {}),
    ("DDPMScheduler", {"clip_sample": False}, "ddim", {"eta": 1.0}),
    ("DDPMScheduler", {"clip_sample": True, "clip_sample_range": 0.5}, "ddim", {"eta": 1.0}),
], ids=["euler-ancestral", "dpmpp-2m-sde", "ddpm", "ddpm-clip"])
def test_stochastic_samplers_equal_diffusers_with_the_same_noise(unet, tmp_path, cls: str, kwargs: dict,
                                                                 sampler: str, opts: dict) -> None:
    sched = getattr(diffusers, cls)(**kwargs)
    z = draws()
    expected = diffusers_loop(sched, unet, z, generator=torch.Generator().manual_seed(7))
    model = load_diffusers(model_dir(unet, sched, tmp_path / "model"), integer_timesteps=cls.startswith("DPM"))
    g = torch.Generator().manual_seed(7)
    sigmas = sched.sigmas.double() if hasattr(sched, "sigmas") else model.denoiser.schedule.model_grid(STEPS)
    start = z * float(sched.init_noise_sigma) * (1 if cls.startswith("Euler") else float((sigmas[0] ** 2 + 1).sqrt()))
    denoiser = model.denoiser if model.clipping.mode == "off" else Clipped(model.denoiser, model.clipping)
    ours, _ = run_sampler(denoiser, start, sigmas, sampler,
                          noise_sampler=lambda s, s1: torch.randn(z.shape, generator=g), **opts)
    assert rel(ours, expected) < TOL


@pytest.mark.parametrize("steps", [1, 2, 7, 10])
@pytest.mark.parametrize("kwargs", [{}, {"set_alpha_to_one": False, **SD_TABLE}], ids=["default", "sd"])
def test_pndm_equals_the_scheduler(unet, tmp_path, kwargs: dict, steps: int) -> None:
    """PNDMScheduler(skip_prk_steps=True, leading spacing, steps_offset 1): compat diffusers gives pndm (a Heun
    step, then Adams-Bashforth on the direction up to order 4, also on the last step)."""
    sched = diffusers.PNDMScheduler(skip_prk_steps=True, steps_offset=1, **kwargs)
    z = draws()
    expected = diffusers_loop(sched, unet, z, steps=steps)
    config = make_config(SampleConfig, {"model": str(model_dir(unet, sched, tmp_path / "model")), "n": len(z),
                                        "steps": steps, "init": str(save(tmp_path, z)), "compat": "diffusers"})
    job = SampleJob(config, seed=0)
    assert job.config.sampler == "pndm"
    job.advance()
    assert rel(job.samples()["x"], expected) < TOL
    assert job.nfe == steps + (steps > 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"skip_prk_steps": False}, "skip_prk_steps"),
    ({"skip_prk_steps": True, "timestep_spacing": "linspace"}, "supported: leading"),
])
def test_pndm_configs_gentool_cannot_follow_are_refused(kwargs: dict, message: str) -> None:
    from gentool.core.diffusion.compat import scheduler_settings
    from gentool.core.errors import BadInput

    config = {**diffusers.PNDMScheduler(**kwargs).config, "_class_name": "PNDMScheduler"}
    with pytest.raises(BadInput, match=message):
        scheduler_settings(config)


class DiffusersTimes:
    """A noise sampler that asks `tree` at the times diffusers' DPMSolverSDEScheduler computes (in float32: sigma
    -> t = -log sigma -> exp(-t), the midpoint exp(-(t + (t' - t)/2))) for the (sigma, sigma_mid) and (sigma,
    sigma') that gentool's dpmpp-sde asks for on `grid`. A Brownian path moves by ~sqrt(dt) between times dt
    apart, so float32 rounding of the query times (~1e-7 relative) alone moves the noise by ~1e-4."""

    def __init__(self, tree, grid: torch.Tensor) -> None:
        t = -grid[:-1].float().log()
        self.tree, self.grid = tree, grid[:-1].double()
        self.at = (-t).exp()
        self.next = torch.cat([self.at[1:], torch.zeros(1)])
        self.mid = (-(t[:-1] + (t[1:] - t[:-1]) * 0.5)).exp()

    def __call__(self, s: float, s1: float) -> torch.Tensor:
        i = int((self.grid - float(s)).abs().argmin())
        to = self.next[i] if i + 1 == len(self.grid) or abs(float(s1) / float(self.grid[i + 1]) - 1) < 1e-6 \
            else self.mid[i]
        return self.tree(self.at[i], to)


@pytest.mark.parametrize("kwargs", [{}, {"use_karras_sigmas": True},
                                    {"timestep_spacing": "leading", "steps_offset": 1, **SD_TABLE}],
                         ids=["linspace", "karras", "leading"])
def test_dpm_solver_sde_equals_dpmpp_sde_with_its_brownian_tree(unet, tmp_path, kwargs: dict) -> None:
    """DPMSolverSDEScheduler is k-diffusion's DPM-Solver++ SDE (gentool's dpmpp-sde, eta 1, r 1/2) on the Euler
    family's grid and initial scale (compat diffusers gives the settings); with the noise of the same seeded
    torchsde BrownianInterval, asked at diffusers' float32 times, the samples agree."""
    pytest.importorskip("torchsde")
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler
    from gentool.core.jobs.sample import sigma_grid

    sched = diffusers.DPMSolverSDEScheduler(noise_sampler_seed=11, **kwargs)
    z = draws()
    expected = diffusers_loop(sched, unet, z)
    config = make_config(SampleConfig, {"model": str(model_dir(unet, sched, tmp_path / "model")), "n": len(z),
                                        "steps": STEPS, "init": str(save(tmp_path, z)), "compat": "diffusers"})
    job = SampleJob(config, seed=0)
    assert job.config.sampler == "dpmpp-sde"
    sigmas = sigma_grid(job.config, job.source)
    start = job.initial_state(0, len(z))
    tree = BrownianTreeNoiseSampler(start, float(sched.sigmas[-2]), float(sched.sigmas[0]), 11)
    ours, _ = run_sampler(job.source.denoiser, start, sigmas, "dpmpp-sde", noise_sampler=DiffusersTimes(tree, sigmas))
    assert rel(job.output(ours), expected) < TOL
    other, _ = run_sampler(job.source.denoiser, start, sigmas, "dpmpp-sde", seed=11)
    assert rel(job.output(other), expected) > 1e-2  # gentool's own Brownian path: same law, other draws


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "DDIMScheduler", "DDPMScheduler",
                                 "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
@pytest.mark.parametrize(("spacing", "offset"), [("linspace", 0), ("leading", 1), ("trailing", 0)])
def test_model_timesteps_equal_each_schedulers_own(cls: str, spacing: str, offset: int) -> None:
    for steps in (1, 2, 7, 10, 25):
        sched = getattr(diffusers, cls)(timestep_spacing=spacing, steps_offset=offset)
        sched.set_timesteps(steps)
        expected = sched.timesteps.double()
        if cls.startswith("Heun"):
            expected = torch.cat([expected[:1], expected[1::2]])
        ours = DiscreteSchedule.from_config({**sched.config, "_class_name": cls}).inference_timesteps(steps)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("clip", [False, True])
def test_same_seed_gives_the_pipelines_initial_latents(unet, tmp_path, clip: bool) -> None:
    """convention vp and the seed: the job's first draws are `torch.randn(shape, generator=manual_seed(seed))`,
    what a pipeline's `prepare_latents` draws; its samples equal the DDIM pipeline's (clip_sample: compat
    diffusers, the pipeline's default epsilon)."""
    sched = diffusers.DDIMScheduler(clip_sample=clip)
    path = model_dir(unet, sched, tmp_path / "model")
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=sched)
    image = pipe(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=STEPS, eta=0.0,
                 output_type="np").images
    settings = {"compat": "diffusers"} if clip else {"sampler": "ddim", "eta": 0.0, "grid": "model",
                                                     "convention": "vp"}
    config = make_config(SampleConfig, {"model": str(path), "n": 3, "steps": STEPS, **settings})
    job = SampleJob(config, seed=5)
    job.advance()
    ours = (job.samples()["x"] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, image, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("cls", "kwargs", "settings"), [
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, {"sampler": "dpmpp-3m-kd"}),
    ("DDIMScheduler", {"clip_sample": False, **SD_TABLE}, {"sampler": "ddim", "eta": 0.0}),
    ("EulerDiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1, **SD_TABLE}, {"sampler": "euler"}),
], ids=["3m-kdiffusion-defaults", "ddim-sigma-convention", "euler-leading-sigma-convention"])
def test_the_diffusers_settings_matter(unet, tmp_path, cls: str, kwargs: dict, settings: dict) -> None:
    """Without the scheduler's own options (solver, lower_order_final; the vp convention) the results differ."""
    sched = getattr(diffusers, cls)(**kwargs)
    z = draws()
    expected = diffusers_loop(sched, unet, z)
    ours = gentool_job(model_dir(unet, sched, tmp_path / "model"), z, tmp_path, grid="model", integer_timesteps=True,
                       **settings)
    assert rel(ours, expected) > 1e-3


@pytest.mark.parametrize(("settings", "message"), [
    ({"sampler": "ddim", "ddim_step": "stride"}, "ddim_step 'stride' needs grid 'model'"),
    ({"sampler": "euler", "clipped_epsilon": False}, "clipped_epsilon"),
    ({"sampler": "dpmpp-2m", "grid": "model", "ddim_step": "stride"}, "ddim_step"),
])
def test_ddim_settings_are_checked(settings: dict, message: str) -> None:
    from gentool.core.errors import BadInput

    with pytest.raises(BadInput, match=message):
        make_config(SampleConfig, {"target": "gmm-ring", **settings})


def test_init_is_checked(unet, tmp_path) -> None:
    from gentool.core.errors import BadInput

    path = model_dir(unet, diffusers.DDIMScheduler(), tmp_path / "model")
    with pytest.raises(BadInput, match=r"init must hold n = 4 draws of shape \(1, 8, 8\)"):
        gentool_job(path, draws(3), tmp_path, n=4)
    np.save(tmp_path / "bad.npy", np.full((4, 64), np.nan))
    config = {"model": str(path), "n": 4, "steps": 2, "init": str(tmp_path / "bad.npy")}
    with pytest.raises(BadInput, match="must be finite: it holds nan at row 1, column 1"):
        SampleJob(make_config(SampleConfig, config))
