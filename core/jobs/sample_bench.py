"""Diffusers-model sampler benchmark: microseconds per step of the sample job in compat mode diffusers on a diffusers
model against the diffusers scheduler's own loop on the same net, measured in one run (interleaved repeats, best
kept). Both start from the same latents and run the same number of steps; text pipelines are timed through
`pipe(..., output_type="latent")` (prompt encoding included, as a pipeline does it per call), other models through
the loop every pipeline runs:

    for t in scheduler.timesteps:  x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x).prev_sample
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gentool.core.config import make_config
from gentool.core.diffusion.diffusers_format import PIPELINE_FILE
from gentool.core.diffusion.pipelines import require_module
from gentool.core.io import read_json
from gentool.core.jobs.sample import SampleConfig, SampleJob
from gentool.core.solvers.benchmark import best_times

PROMPT = "a cat"


def _scheduler_loop(job: SampleJob, steps: int, x0: torch.Tensor) -> Any:
    """The diffusers scheduler of the model stepping the bare net (unconditional, or the first class)."""
    diffusers = require_module("diffusers")
    config = dict(job.source.scheduler)
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    net, z = job.source.denoiser.net, x0 / float(job.sigmas[0] ** 2 + 1) ** 0.5
    labels = {"class_labels": torch.zeros(len(z), dtype=torch.long, device=z.device)} if job.source.classes else {}

    def loop() -> torch.Tensor:
        scheduler.set_timesteps(steps, device=z.device)
        x = z * scheduler.init_noise_sigma
        with torch.no_grad():
            for t in scheduler.timesteps:
                out = net(scheduler.scale_model_input(x, t), t.expand(len(x)), **labels)
                x = scheduler.step(getattr(out, "sample", out), t, x).prev_sample
        return x

    return loop


def _text_pipeline(job: SampleJob, steps: int, batch: int, cfg: float, device: torch.device) -> Any:
    diffusers = require_module("diffusers")
    pipe = diffusers.DiffusionPipeline.from_pretrained(job.config.model, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)

    def loop() -> torch.Tensor:
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, num_images_per_prompt=batch,
                    generator=torch.Generator().manual_seed(0), output_type="latent").images

    return loop


def pipeline_bench(model: str, steps: int, batch: int, cfg: float, device: torch.device, repeats: int,
                   clock: str = "wall") -> dict[str, Any]:
    """One row: the model, gentool's sampler, steps, batch and µs per step of gentool and of diffusers."""
    text = is_text_pipeline(model)
    settings: dict[str, Any] = {"model": model, "compat": "diffusers", "n": batch, "steps": steps}
    job = SampleJob(make_config(SampleConfig, settings | ({"prompt": PROMPT, "cfg": cfg} if text else {})),
                    device=device)
    denoiser, x0 = job.conditioned(0, batch), job.initial_state(0, batch)
    def ours() -> torch.Tensor:
        return job.prepared.run(denoiser, x0, seed=0, compile=job.config.compile)[0]

    theirs = _text_pipeline(job, steps, batch, cfg, device) if text else _scheduler_loop(job, steps, x0)
    times = best_times({"gentool": ours, "diffusers": theirs}, device, repeats, clock=clock)
    return {"model": model, "sampler": job.config.sampler, "steps": steps, "batch": batch,
            "cfg": cfg if text else None, "gentool_us": times["gentool"] / steps * 1e6,
            "diffusers_us": times["diffusers"] / steps * 1e6}


def is_text_pipeline(model: str) -> bool:
    """Whether `model` is a pipeline directory that lists a text encoder."""
    index = Path(model) / PIPELINE_FILE
    return index.is_file() and bool((read_json(index).get("text_encoder") or [None])[0])
