"""Diffusers pipelines in gentool: a tiny random Stable-Diffusion-style pipeline (CLIP tokenizer from a local vocab,
CLIPTextModel, UNet2DConditionModel, AutoencoderKL) and a tiny DiT, built offline here. With `compat diffusers`
(the pipeline's own scheduler config) gentool's latents and images equal `StableDiffusionPipeline`'s and
`DiTPipeline`'s for the same seed (float32, CPU); missing optional packages are one line, exit 2, no output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.config import make_config
from gentool.core.errors import BadInput
from gentool.core.jobs.sample import SampleConfig, SampleJob
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
runner = CliRunner()
TOL = 1e-4
PROMPT = "a cat"
SCHEDULERS = {  # pipeline scheduler: arguments over the SD table (leading spacing, steps_offset 1)
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp-3m": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "dpmpp-2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}


def tiny_tokenizer():
    """A CLIP tokenizer over letters only (every letter a token, word ends marked), 12 tokens long."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters]:
        vocab[token] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=12)


def tiny_vae():
    torch.manual_seed(2)
    return diffusers.AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
                                   down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16)


def tiny_sd(path: Path):
    """A tiny StableDiffusionPipeline (8x8 latents, 16x16 images) with SD 1.x's DDIM scheduler config, saved."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=12, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                          layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                          attention_head_dim=4, norm_num_groups=8)
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=tiny_vae().eval(), text_encoder=text.eval(), tokenizer=tokenizer,
                                             unet=unet.eval(),
                                             scheduler=sched, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    path = tmp_path_factory.mktemp("sd")
    return path, tiny_sd(path)


def with_scheduler(sd, tmp_path: Path, name: str):
    """The SD pipeline directory with scheduler `name` of SCHEDULERS (the other parts linked), and the pipeline."""
    root, pipe = sd
    cls, kwargs = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config, **kwargs)
    path = tmp_path / "pipe"
    path.mkdir()
    for part in ("unet", "vae", "text_encoder", "tokenizer", "model_index.json"):
        (path / part).symlink_to(root / part)
    pipe.scheduler.save_pretrained(path / "scheduler")
    return path, pipe


def job(path: Path, seed: int = 0, **settings) -> SampleJob:
    """The sample job in compat diffusers, one batch run."""
    config = make_config(SampleConfig, {"model": str(path), "compat": "diffusers", **settings})
    sample_job = SampleJob(config, seed=seed)
    sample_job.advance()
    return sample_job


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def pipeline_latents(pipe, steps: int, **kwargs) -> torch.Tensor:
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0),
                output_type="latent", **kwargs).images


def test_sd_latents_equal_the_pipelines_dpmpp_2m(sd, tmp_path) -> None:
    path, pipe = with_scheduler(sd, tmp_path, "dpmpp-2m")
    ours = job(path, n=1, steps=4, prompt=PROMPT, cfg=7.5)
    assert ours.config.sampler == "dpmpp-2m" and ours.config.convention == "vp"
    assert rel(ours.samples()["x"], pipeline_latents(pipe, 4)) < TOL


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_sd_latents_equal_the_pipelines(sd, tmp_path, name: str) -> None:
    path, pipe = with_scheduler(sd, tmp_path, name)
    expected = pipeline_latents(pipe, 8, negative_prompt="dog", num_images_per_prompt=2)
    ours = job(path, n=2, steps=8, prompt=PROMPT, negative_prompt="dog", cfg=7.5)
    assert rel(ours.samples()["x"], expected) < TOL


def test_sd_ddim_clip_equals_the_pipeline_to_its_own_rounding(sd, tmp_path) -> None:
    """DDIMScheduler(clip_sample=True) as the pipeline steps it (the net's epsilon with the clipped x_0, from t to
    t - T//N). That step does not damp rounding: with cfg 7.5 the pipeline's own float32 and float64 latents are
    ~3e-4 apart, so ours (float32) are checked against its float64 latents: as close as its float32 ones, within
    a factor 2 (exactness in float64 on a bare UNet: tests/test_diffusers_parity.py)."""
    import copy

    root, pipe = sd
    pipe = copy.deepcopy(pipe)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True)
    path = tmp_path / "pipe"
    path.mkdir()
    for part in ("unet", "vae", "text_encoder", "tokenizer", "model_index.json"):
        (path / part).symlink_to(root / part)
    pipe.scheduler.save_pretrained(path / "scheduler")
    kwargs = {"negative_prompt": "dog", "num_images_per_prompt": 2}
    theirs = pipeline_latents(pipe, 8, **kwargs)
    z = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(0))
    exact = pipeline_latents(pipe.to(torch.float64), 8, latents=z.double(), **kwargs)
    ours = job(path, n=2, steps=8, prompt=PROMPT, negative_prompt="dog", cfg=7.5).samples()["x"]
    assert rel(ours.double(), exact) < 2 * rel(theirs.double(), exact)


@pytest.mark.slow
def test_cli_images_equal_the_pipelines(sd, tmp_path) -> None:
    """`gentool sample --model SD --prompt ... --steps 20 --cfg 7.5 --seed 0` = `pipe(prompt, 20 steps, 7.5,
    manual_seed(0))`, image for image (the pipeline's own DDIM scheduler)."""
    root, pipe = sd
    pipe.scheduler = diffusers.DDIMScheduler.from_pretrained(root / "scheduler")
    expected = pipe(PROMPT, num_inference_steps=20, guidance_scale=7.5, generator=torch.Generator().manual_seed(0),
                    output_type="np").images
    out = tmp_path / "out"
    res = runner.invoke(app, ["sample", "--model", str(root), "--prompt", PROMPT, "--steps", "20", "--cfg", "7.5",
                              "--seed", "0", "--compat", "diffusers", "-n", "1", "--save-png", str(tmp_path / "png"),
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    images = np.load(out / "images.npz")["images"]
    ours = np.clip(images / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)
    assert (out / "grid.png").is_file() and (tmp_path / "png" / "000000.png").is_file()


def test_prompts_file_and_sizes(sd, tmp_path) -> None:
    """Prompts in turn from a file; height/width set the latent size through the VAE factor (2 here)."""
    root, _ = sd
    (tmp_path / "prompts.txt").write_text("a cat\n\na dog\n")
    ours = job(root, n=3, steps=2, prompts=str(tmp_path / "prompts.txt"), height=8, width=24, cfg=2.0)
    assert ours.samples()["x"].shape == (3, 4, 4, 12)
    prompts, _ = ours.embeds  # the two non-empty lines, taken in turn
    assert len(prompts) == 2 and not torch.allclose(prompts[1], prompts[0])
    with pytest.raises(BadInput, match="height must be a positive multiple of 2"):
        job(root, n=1, steps=2, prompt="x", height=7)


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "is text-conditional: give prompt or prompts"),
    ({"prompt": "a", "prompts": "p.txt"}, "at most one of prompt and prompts"),
    ({"prompts": "missing.txt"}, "prompts: cannot read"),
])
def test_text_settings_are_checked(sd, settings: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        job(sd[0], n=1, steps=2, **settings)


def test_prompt_needs_a_text_model(tmp_path) -> None:
    from test_diffusers import saved, tiny_unet

    path = saved(tiny_unet(), tmp_path / "m", "epsilon")
    with pytest.raises(BadInput, match="prompt needs a text-conditional pipeline"):
        job(path, n=1, steps=2, prompt="a cat")


def tiny_dit(path: Path):
    torch.manual_seed(3)
    dit = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                          num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000)
    pipe = diffusers.DiTPipeline(transformer=dit.eval(), vae=tiny_vae().eval(),  # eval: no label dropout
                                 scheduler=diffusers.DPMSolverMultistepScheduler())
    pipe.save_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_dit_images_equal_the_pipelines(tmp_path) -> None:
    pipe = tiny_dit(tmp_path / "dit")
    expected = pipe(class_labels=[3, 3], guidance_scale=4.0, num_inference_steps=5,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    out = tmp_path / "out"
    res = runner.invoke(app, ["sample", "--model", str(tmp_path / "dit"), "--class-label", "3", "--cfg", "4",
                              "--steps", "5", "--seed", "0", "--compat", "diffusers", "-n", "2", "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    ours = np.clip(np.load(out / "images.npz")["images"] / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)
    assert json.loads((out / "config.json").read_text())["config"]["compat"] == "diffusers"


@pytest.mark.parametrize("package", ["transformers", "diffusers"])
def test_missing_optional_packages_are_one_line(sd, tmp_path, monkeypatch, package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails
    out = tmp_path / "out"
    res = runner.invoke(app, ["sample", "--model", str(sd[0]), "--prompt", "a cat", "--steps", "2", "-n", "1",
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "pip install 'gentool[diffusers]'" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def half_precision_runs(sd, tmp_path: Path, dtype: str, device: str) -> dict[str, torch.Tensor]:
    """The tiny SD pipeline's latents (DPM-Solver++(2M), cfg 7.5) with the nets in float32 and in `dtype`."""
    path, _ = with_scheduler(sd, tmp_path, "dpmpp-2m")
    settings = {"model": str(path), "compat": "diffusers", "n": 2, "steps": 8, "prompt": PROMPT, "cfg": 7.5}
    runs = {}
    for kind in ("float32", dtype):
        sample_job = SampleJob(make_config(SampleConfig, {**settings, "dtype": kind}), seed=0, device=device)
        assert sample_job.source.denoiser.net.dtype == getattr(torch, kind)
        sample_job.advance()
        runs[kind] = sample_job.samples()["x"]
        assert runs[kind].dtype == torch.float32  # the sampler state stays float32
    return runs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_sampling_on_cuda(sd, tmp_path, dtype: str) -> None:
    """The nets in half precision on the GPU (graph-captured sampler), close to float32."""
    runs = half_precision_runs(sd, tmp_path, dtype, "cuda")
    assert torch.isfinite(runs[dtype]).all()
    assert 0 < rel(runs[dtype], runs["float32"]) < 5e-2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_sampling_on_cpu(sd, tmp_path, dtype: str) -> None:
    """The same on the CPU (eager): the nets really run in the half type (results differ from float32: bfloat16
    1.3e-2, float16 2e-3 here) and stay close."""
    runs = half_precision_runs(sd, tmp_path, dtype, "cpu")
    assert torch.isfinite(runs[dtype]).all()
    assert 0 < rel(runs[dtype], runs["float32"]) < 5e-2


def test_bench_samplers_model_times_gentool_and_diffusers(sd, tmp_path) -> None:
    """`gentool bench samplers --model DIR`: one row per batch size, for a text pipeline and a bare UNet."""
    from test_diffusers import tiny_unet

    unet_dir = tmp_path / "unet"
    tiny_unet().save_pretrained(unet_dir)
    diffusers.DDIMScheduler().save_pretrained(unet_dir)
    for model in (sd[0], unet_dir):
        res = runner.invoke(app, ["bench", "samplers", "--model", str(model), "--steps", "2", "--repeats", "1",
                                  "--batch-sizes", "1,2"])
        assert res.exit_code == 0, res.output
        rows = [line for line in res.output.splitlines() if line.startswith("│")]
        assert len(rows) == 2 and "gentool/diffusers" in res.output
