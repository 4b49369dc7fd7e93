"""The `sample` job: a diffusion-ODE sampler on an analytic target, a `gentool train` checkpoint or a diffusers
model or pipeline (`gentool.core.diffusion.sources`: text- and class-conditional, latent); one unit = a batch.

Outputs besides the run contract's: `samples.npz` (x, x0, sigmas; labels for class-conditional models; latents for
pipelines with a VAE, whose decoded images go to `images.npz` at the end), `scatter.png`, or for images `grid.png`
(pixels) and with `save_png` one PNG per sample; `metrics.json`: nfe,
seconds, samples/s, and for analytic targets the endpoint error against a float64 reference solve and sliced W2 /
MMD² against exact samples; for models trained on bundled data the distances to held-out data, and for digits the
image metrics on the local feature net (`gentool.core.metrics.images`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core import plots
from gentool.core.config import check_float, check_int, read_array, setting
from gentool.core.data import DATASETS, sample_data
from gentool.core.diffusion import GRIDS, SAMPLERS, SCHEDULES, TARGETS, make_grid
from gentool.core.diffusion.compat import scheduler_settings
from gentool.core.diffusion.discrete import Spacing, TimestepRule
from gentool.core.diffusion.discrete_denoiser import CLIP_MODES, Clipped, ClippedNetEpsilon, Clipping, TextConditioned
from gentool.core.diffusion.grids import SIGMA_LIMIT
from gentool.core.diffusion.pipelines import DTYPES
from gentool.core.diffusion.sampler_defs import ddim_step_ratios
from gentool.core.diffusion.samplers import Option, option_declarations, prepare_sampler
from gentool.core.diffusion.sources import SampleSource, model_source, target_source
from gentool.core.diffusion.targets import (
    ANY_DIM_TARGETS,
    DEFAULT_TARGET,
    MODEL_SOURCE,
    SOURCE,
    MixtureTarget,
    chosen_target,
    reference_flow,
    target_dim,
)
from gentool.core.diffusion.tuning import TunedSchedule, load_tuned, model_identity
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.io import atomic_save_npz, atomic_write_json, check_allocation
from gentool.core.metrics.images import IMAGE_DATA, heldout_image_metrics
from gentool.core.nn import make_generator
from gentool.core.progress import Reports, in_phase, one_step
from gentool.core.run.contract import BatchedUnits, JobSpec, Row

MMD_MAX = 2000  # MMD is O(n^2): computed on the first MMD_MAX samples
MODEL_GRID = "model"  # a discrete-table model's own timesteps (its scheduler's timestep_spacing)
CONVENTIONS = ("sigma", "vp")
COMPAT = ("diffusers",)
SIGMA_RANGES = ("table", "spacing")
DDIM_STEPS = ("next", "stride")
SAMPLE_GRIDS = (*GRIDS, MODEL_GRID)
TUNED_TAKES = ("sampler", "steps", "grid", "schedule", "sigma_min", "sigma_max", "rho", "sigma_range")


DIM_DEFAULT = 2  # the dimension of the analytic targets unless dim says otherwise
RANDN_BLOCK = 16  # torch's CPU randn makes normals in blocks of this many (`SampleJob._draws`)


@dataclass(frozen=True)
class SampleSettings:
    """What to sample (a `target`, gmm-ring by default, or a `model`), with which sampler, on which σ grid. The
    sampler options (eta, order, ...) are added from the sampler registry's declarations (`SampleConfig`)."""

    target: str | None = setting(None, f"Analytic target (exact denoiser; default: {DEFAULT_TARGET} unless a "
                                 "model is given).", choices=TARGETS)
    model: str | None = setting(None, "A `gentool train` checkpoint (file or run directory) or a diffusers model "
                                "(directory, or a hub id in the local cache).", metavar="PATH")
    sampler: str = setting("dpmpp-2m", "Sampler.", choices=tuple(SAMPLERS))
    steps: int = setting(20, "Grid steps (σ levels; the last step goes to 0).")
    n: int = setting(10000, "Number of samples.", short="-n")
    batch_size: int | None = setting(None, "Samples per batch, to bound memory (default: all at once); the samples "
                                     "do not depend on it.")
    dim: int = setting(DIM_DEFAULT, "Dimension for the gaussian, gmm-random and point targets.",
                       applies={"source": ANY_DIM_TARGETS})
    grid: str = setting("edm", "σ grid (model: a diffusers model's own timesteps).", choices=SAMPLE_GRIDS)
    schedule: str = setting("vp-linear", "Schedule of the uniform-t grid.", choices=tuple(SCHEDULES))
    sigma_min: float | None = setting(None, "Smallest nonzero σ (default: 0.002, or the model's noise table).")
    sigma_max: float | None = setting(None, "Largest σ, the initial noise scale (default: 80, or the model's noise "
                                      "table).")
    rho: float = setting(7.0, "ρ of the EDM grid.")
    compile: bool = setting(False, "torch.compile the sampler (inductor; eager with a warning where unavailable).")
    reference: bool = setting(True, "Analytic targets: endpoint error against a float64 reference solve.",
                              applies={"source": TARGETS})
    integer_timesteps: bool = setting(False, "Diffusers models: evaluate at the nearest integer timestep (as "
                                      "diffusers' DPM-Solver does) instead of the interpolated one.",
                                      applies={"source": (MODEL_SOURCE,)})
    class_label: int | None = setting(None, "Class-conditional models: the class of every sample (default: the "
                                      "classes in turn).", applies={"source": (MODEL_SOURCE,)})
    cfg: float = setting(1.0, "Class- and text-conditional models: classifier-free guidance scale (1: none).",
                         applies={"source": (MODEL_SOURCE,)})
    prompt: str | None = setting(None, "Text-conditional pipelines: the prompt of every sample.", metavar="TEXT",
                                 applies={"source": (MODEL_SOURCE,)})
    prompts: str | None = setting(None, "Text-conditional pipelines: a file of prompts, one a line; samples take "
                                  "them in turn.", metavar="FILE", applies={"source": (MODEL_SOURCE,)})
    negative_prompt: str | None = setting(None, "Text-conditional pipelines: what cfg guides away from (default: "
                                          "the empty prompt).", metavar="TEXT", applies={"source": (MODEL_SOURCE,)})
    height: int | None = setting(None, "Image pipelines: image height (a multiple of the VAE factor; default: the "
                                 "net's sample size).", applies={"source": (MODEL_SOURCE,)})
    width: int | None = setting(None, "Image pipelines: image width (default: the net's sample size).",
                                applies={"source": (MODEL_SOURCE,)})
    dtype: str = setting("float32", "Diffusers models: the dtype the nets run in (the sampler state stays "
                         "float32).", choices=tuple(DTYPES), applies={"source": (MODEL_SOURCE,)})
    null_class: int | None = setting(None, "Class-conditional diffusers models: the unconditional class for cfg "
                                     "(default: from the model's gentool.json).", applies={"source": (MODEL_SOURCE,)})
    save_png: str | None = setting(None, "Image models: also write one PNG per sample into this directory.",
                                   metavar="DIR", applies={"source": (MODEL_SOURCE,)})
    init: str | None = setting(None, "Start from these standard normal draws z (.npy of shape (n, *sample shape)) "
                               "instead of drawing them from the seed, as a diffusers pipeline's latents=z.",
                               metavar="FILE")
    convention: str = setting("sigma", "States at both ends: sigma: x₀ = z σ₀, samples x (k-diffusion, EDM); vp: "
                              "x₀ = z sqrt(σ₀² + 1), samples x / sqrt(σ_N² + 1) (the VP sample of a diffusers "
                              "pipeline with DDIM, DDPM, DPM-Solver or UniPC, or Euler/Heun with leading spacing: "
                              "the same seed then gives the pipeline's latents).", choices=CONVENTIONS)
    clip_sample: str | None = setting(None, "Clip the denoised x₀ (diffusers' clip_sample: to ±clip_sample_range; "
                                      "dynamic: thresholding) before every step (default: what a diffusers "
                                      "model's scheduler config asks for, else off).", choices=CLIP_MODES,
                                      applies={"source": (MODEL_SOURCE,)})
    timestep_spacing: str | None = setting(None, "Diffusers models: how grid model places its timesteps "
                                           "(default: the scheduler config's).", choices=tuple(Spacing),
                                           applies={"source": (MODEL_SOURCE,)})
    timestep_rule: str | None = setting(None, "Diffusers models: whose set_timesteps grid model follows (euler: "
                                        "Euler/Heun; ddim: DDIM/DDPM/PNDM; dpm-solver: DPM-Solver/UniPC; default: "
                                        "the scheduler config's class).", choices=tuple(TimestepRule),
                                        applies={"source": (MODEL_SOURCE,)})
    tuned: str | None = setting(None, "A `gentool tune` schedule (tuned.json or its run directory): sampler, NFE, "
                                "σ grid and corrections from the file, for the model it was tuned for.",
                                metavar="PATH")
    compat: str | None = setting(None, "diffusers: sample as the model's own scheduler config does (its sampler, "
                                 "options, grid, timestep rule, integer timesteps and state convention replace "
                                 "those settings), so that a seed gives a pipeline's images.", choices=COMPAT,
                                 applies={"source": (MODEL_SOURCE,)})
    ddim_step: str = setting("next", "ddim on grid model: from timestep t to the next grid timestep (next), or to "
                             "t − T//N (stride: diffusers' DDIMScheduler; another level under linspace and trailing "
                             "spacing), the VP sample then taken to the next grid level.", choices=DDIM_STEPS,
                             applies={"sampler": ("ddim",)})
    clipped_epsilon: bool = setting(True, "ddim with clip_sample: step with the noise estimate of the clipped x₀ "
                                    "(diffusers' use_clipped_model_output), or with the net's own (false: diffusers' "
                                    "DDIM pipelines' default).", applies={"sampler": ("ddim",)})
    sigma_range: str = setting("table", "Diffusers models: the default σ range of the edm, log-sigma and uniform-t "
                               "grids: the whole noise table (diffusers' DPM-Solver with Karras sigmas), or the "
                               "ends of grid model's timesteps (spacing: diffusers' Euler and Heun).",
                               choices=SIGMA_RANGES, applies={"source": (MODEL_SOURCE,)})

    source = SOURCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", chosen_target(self.target, self.model, DEFAULT_TARGET))
        choose("sampler", self.sampler, SAMPLERS)
        choose("grid", self.grid, SAMPLE_GRIDS)
        choose("schedule", self.schedule, SCHEDULES)
        choose("convention", self.convention, CONVENTIONS)
        if self.compat is not None:
            choose("compat", self.compat, COMPAT)
        choose("sigma_range", self.sigma_range, SIGMA_RANGES)
        choose("ddim_step", self.ddim_step, DDIM_STEPS)
        require(self.ddim_step == "next" or self.grid == MODEL_GRID, f"ddim_step {self.ddim_step!r} needs grid "
                f"{MODEL_GRID!r} (a model's own timesteps); got grid {self.grid!r}")
        if self.clip_sample is not None:
            choose("clip_sample", self.clip_sample, CLIP_MODES)
        if self.timestep_spacing is not None:
            choose("timestep_spacing", self.timestep_spacing, tuple(Spacing))
        if self.timestep_rule is not None:
            choose("timestep_rule", self.timestep_rule, tuple(TimestepRule))
        check_int("steps", self.steps, 1, 100_000)
        check_int("n", self.n, 1, 10**9)
        require(self.target is None or self.n >= 2, f"n must be >= 2 for an analytic target (its metrics compare "
                f"sample sets), got {self.n}")
        check_int("dim", self.dim, 1, 100_000)
        require(self.model is None or self.dim == DIM_DEFAULT, "dim applies to analytic targets (gaussian, gmm-random, "
                "point); a model has its own dimension")
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        if self.sigma_min is not None:
            check_float("sigma_min", self.sigma_min, 0.0, lo_open=True)
        if self.sigma_max is not None:
            check_float("sigma_max", self.sigma_max, self.sigma_min or 0.0, SIGMA_LIMIT, lo_open=True)
        check_float("rho", self.rho, 0.0, lo_open=True)
        check_float("cfg", self.cfg, 0.0)
        choose("dtype", self.dtype, DTYPES)
        require(self.prompt is None or self.prompts is None, "give at most one of prompt and prompts")
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, 65536)
        for name in ("class_label", "null_class"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0)
        SAMPLERS[self.sampler].resolve(self.given_options())
        if self.tuned is not None:
            defaults = {f.name: f.default for f in dataclasses.fields(SampleSettings)}
            taken = [n for n in TUNED_TAKES if getattr(self, n) != defaults[n]] + list(self.given_options())
            require(not taken, f"tuned takes the sampler, its options, steps and the σ grid from the schedule; "
                    f"do not also set {', '.join(taken)}")

    def given_options(self) -> dict[str, Any]:
        """The sampler options set (not None); the sampler refuses those it does not take."""
        return {k: getattr(self, k) for k in option_declarations() if getattr(self, k, None) is not None}


def _option_help(declared: list[tuple[str, Option]]) -> str:
    """One help text for an option name from every sampler's declaration of it."""
    groups: dict[int, tuple[Option, list[str]]] = {}
    for sampler, opt in declared:
        groups.setdefault(id(opt), (opt, []))[1].append(sampler)
    return " ".join(f"{', '.join(names)}: {opt.help} {opt.bounds()}, default {opt.default}."
                    for opt, names in groups.values())


def sampler_option_fields(samplers: Iterable[str] | None = None) -> list[tuple[str, Any, Any]]:
    """A config field for every option name of `samplers` (default: all; default None: the sampler's own
    default)."""
    out = []
    for name, declared in option_declarations(samplers).items():
        first = declared[0][1]
        out.append((name, first.kind | None, setting(None, _option_help(declared), choices=first.choices or None)))
    return out


SampleConfig = dataclasses.make_dataclass("SampleConfig", sampler_option_fields(), bases=(SampleSettings,),
                                          frozen=True)
SampleConfig.__module__ = __name__
SampleConfig.__doc__ = SampleSettings.__doc__


def sample_bytes(n: int, batch: int, numel: int, steps: int, itemsize: int) -> float:
    """About the memory a sample run holds: the kept samples and their initial states (2 n numel), and per
    batch the sampler's registers and model intermediates (about 16 copies of the state) plus a pre-drawn noise
    row per step."""
    return float(itemsize) * numel * (2 * n + batch * (16 + steps))


def open_source(cfg: SampleConfig, device: torch.device) -> SampleSource:
    """The source `cfg` names, checked against the settings that only some sources take."""
    if cfg.model is None:
        require(not cfg.integer_timesteps and cfg.null_class is None,
                "integer_timesteps and null_class apply to diffusers models, not to analytic targets")
        source = target_source(cfg.target, target_dim(cfg.target, cfg.dim))
    else:
        source = model_source(cfg.model, device, cfg.integer_timesteps, cfg.null_class, DTYPES[cfg.dtype],
                              (cfg.height, cfg.width))
    require(cfg.save_png is None or source.image_shape is not None,
            f"save_png needs a model of images; {source.name} draws samples of shape {source.shape}")
    require(cfg.grid != MODEL_GRID or source.schedule is not None,
            f"grid {MODEL_GRID!r} needs a model with a discrete noise table (a diffusers model)")
    discrete = {"timestep_spacing": cfg.timestep_spacing, "timestep_rule": cfg.timestep_rule,
                "sigma_range": None if cfg.sigma_range == "table" else cfg.sigma_range,
                "clip_sample": None if cfg.clip_sample == "off" else cfg.clip_sample}
    for name, given in discrete.items():
        require(given is None or source.schedule is not None, f"{name} applies to diffusers models; {source.name} "
                "has no discrete noise table")
    texts = {"prompt": cfg.prompt, "prompts": cfg.prompts, "negative_prompt": cfg.negative_prompt}
    for name, given in texts.items():
        require(given is None or source.text is not None, f"{name} needs a text-conditional pipeline (text_encoder "
                f"and tokenizer); {source.name} has none")
    if source.text is not None:
        require(cfg.prompt is not None or cfg.prompts is not None, f"{source.name} is text-conditional: give "
                "prompt or prompts")
    elif cfg.class_label is not None or cfg.cfg != 1.0 or source.classes:
        check_conditioning(cfg, source)
    return with_timesteps(source, cfg)


def with_scheduler(cfg: SampleConfig, source: SampleSource) -> SampleConfig:
    """`cfg` with the sampler settings of the model's diffusers scheduler config (compat diffusers)."""
    require(source.scheduler is not None, f"compat {cfg.compat!r} needs a diffusers model; {source.name} has no "
            "scheduler config")
    settings = scheduler_settings(source.scheduler)
    options = {k: None for k in option_declarations()}  # the scheduler's options replace those given
    return dataclasses.replace(cfg, **{**options, **settings})


def read_prompts(cfg: SampleConfig) -> list[str]:
    """The prompt setting, or the non-empty lines of the prompts file."""
    if cfg.prompt is not None:
        return [cfg.prompt]
    try:
        lines = Path(cfg.prompts).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"prompts: cannot read {cfg.prompts}: {type(exc).__name__}") from None
    prompts = [line for line in lines if line.strip()]
    require(bool(prompts), f"prompts: {cfg.prompts} has no prompt")
    return prompts


def with_timesteps(source: SampleSource, cfg: SampleConfig) -> SampleSource:
    """The source with the timestep spacing and rule of the settings, where given."""
    changes = {"spacing": Spacing(cfg.timestep_spacing) if cfg.timestep_spacing is not None else None,
               "rule": TimestepRule(cfg.timestep_rule) if cfg.timestep_rule is not None else None}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        source = dataclasses.replace(source, schedule=dataclasses.replace(source.schedule, **changes))
    return source


def check_conditioning(cfg: SampleConfig, source: SampleSource) -> None:
    """Class label and guidance settings against the model's classes."""
    require(bool(source.classes), f"class_label and cfg need a class-conditional model; {source.name} has no "
            "class embedding")
    if cfg.class_label is not None:
        choose("class_label", str(cfg.class_label), [str(c) for c in source.classes])
    if source.null_class is not None:
        check_int("null_class", source.null_class, 0, source.num_classes - 1)
    require(cfg.cfg == 1.0 or source.null_class is not None,
            f"cfg {cfg.cfg:g} needs the model's unconditional class: set null_class")


def sigma_grid(cfg: SampleConfig, source: SampleSource) -> torch.Tensor:
    """The σ grid of `cfg`; σ range from the settings, else the source's default (with sigma_range = spacing,
    the first and last nonzero σ of the model grid)."""
    if cfg.grid == MODEL_GRID:
        return source.schedule.model_grid(cfg.steps)
    default = source.sigma_range
    if cfg.sigma_range == "spacing":
        spaced = source.schedule.model_grid(cfg.steps)
        default = (float(spaced[-2]), float(spaced[0]))
    lo = cfg.sigma_min if cfg.sigma_min is not None else default[0]
    hi = cfg.sigma_max if cfg.sigma_max is not None else default[1]
    if not lo < hi:
        raise BadInput(f"sigma_max must be a finite number > {lo:g} (sigma_min), got {hi:g}")
    return make_grid(cfg.grid, cfg.steps, sigma_min=lo, sigma_max=hi, rho=cfg.rho, schedule=cfg.schedule)


class SampleJob(BatchedUnits, Reports):
    """State: the generator, the finished batches (x, x0 and class labels) and the NFE and time spent."""

    command = "sample"
    hint = "use more steps or a smaller sigma_max"

    def __init__(self, config: SampleConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.source = open_source(config, self.device)
        if config.compat is not None:  # the scheduler's settings, on the model just loaded
            self.config = config = with_scheduler(config, self.source)
            self.source.denoiser.integer_timesteps = config.integer_timesteps
            self.source = with_timesteps(self.source, config)
        self.tuned = self._tuned()
        self.sigmas = sigma_grid(config, self.source) if self.tuned is None else torch.tensor(
            self.tuned.sigmas, dtype=torch.float64)
        self.dtype = torch.float64 if self.analytic else torch.float32
        check_allocation(sample_bytes(config.n, self.batch, math.prod(self.source.shape), config.steps,
                                      self.dtype.itemsize), f"sample (n={config.n}, batch_size={config.batch_size}, "
                         f"sample shape {tuple(self.source.shape)})", self.device)
        self.clipping = self._clipping()
        self.targets = self._ddim_targets()
        self.prepared = None if self.tuned is not None else prepare_sampler(
            self.sigmas, config.sampler, **config.given_options(), **({} if self.targets is None else
                                                                         {"targets": self.targets}))
        self.init = self._init()
        self.embeds = self._embeds()
        self.g = make_generator(seed)
        self.xs: list[torch.Tensor] = []
        self.x0s: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.nfe, self.seconds = 0, 0.0
        self.skipped = 0  # batches before this job's first (a shard, `start_at`)

    def _tuned(self) -> TunedSchedule | None:
        """The tuned schedule of the tuned setting, refused unless it was made for this model."""
        cfg = self.config
        if cfg.tuned is None:
            return None
        schedule = load_tuned(cfg.tuned)
        here = model_identity(cfg.target, cfg.dim, cfg.model)
        require(schedule.model == here, f"tuned schedule {cfg.tuned} was made for {schedule.model}, not for this "
                f"model ({here}); tune it for this model with gentool tune")
        return schedule

    @property
    def sampler(self) -> str:
        return self.config.sampler if self.tuned is None else self.tuned.sampler

    def _clipping(self) -> Clipping:
        """The model's x_0 clipping, or the clip_sample setting with the model's numbers."""
        mode = self.config.clip_sample
        return self.source.clipping if mode is None else dataclasses.replace(self.source.clipping, mode=mode)

    def _ddim_targets(self) -> tuple[float, ...] | None:
        """ddim_step stride: the level each step of grid model goes to (diffusers' t - T//N); else None."""
        cfg = self.config
        if cfg.sampler != "ddim" or cfg.ddim_step == "next" or self.tuned is not None:
            return None
        return tuple(float(s) for s in self.source.schedule.ddim_targets(cfg.steps))

    def clipped(self, denoiser: Any) -> Any:
        """`denoiser` with the x_0 clipping: D_c, or for ddim without clipped_epsilon `ClippedNetEpsilon`."""
        if self.clipping.mode == "off":
            return denoiser
        if self.sampler != "ddim" or self.config.clipped_epsilon:
            return Clipped(denoiser, self.clipping)
        eta = SAMPLERS["ddim"].resolve(self.config.given_options())["eta"]
        ratios = ddim_step_ratios(self.sigmas.tolist(), self.targets, eta)
        return ClippedNetEpsilon.for_ddim(denoiser, self.clipping, self.sigmas, ratios, self.device)

    def _embeds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Text pipelines: the prompts' embeddings (P, L, E) and the negative prompt's (1, L, E)."""
        if self.source.text is None:
            return None
        return self.source.text(read_prompts(self.config)), self.source.text([self.config.negative_prompt or ""])

    def conditioned(self, first: int, b: int) -> Any:
        """The denoiser of samples `first .. first + b - 1`: with their prompts or class labels (guided by cfg),
        and the x_0 clipping."""
        labels, denoiser = self._labels(first, b), self.source.denoiser
        if self.embeds is not None:
            embeds, negative = self.embeds
            rows = torch.arange(first, first + b) % len(embeds)
            denoiser = TextConditioned(denoiser, embeds[rows], negative.expand(b, *negative.shape[1:]), self.config.cfg)
        elif labels is not None:
            denoiser = self.source.conditioned(labels, self.config.cfg)
        return self.clipped(denoiser)

    def _init(self) -> torch.Tensor | None:
        """The standard normal draws of the init setting, (n, *sample shape), checked."""
        if self.config.init is None:
            return None
        z = torch.as_tensor(read_array(self.config.init, "init"), dtype=self.dtype)
        shape = (self.config.n, *self.source.shape)
        flat = (self.config.n, math.prod(self.source.shape))
        require(tuple(z.shape) in (shape, flat), f"init must hold n = {self.config.n} draws of shape "
                f"{self.source.shape}, i.e. an array of shape {shape}; got {tuple(z.shape)}")
        require(bool(torch.isfinite(z).all()), "init contains non-finite values")
        return z.reshape(shape)

    def initial_state(self, first: int, b: int) -> torch.Tensor:
        """`x_0 = z sigma_0` (convention sigma) or `z sqrt(sigma_0^2 + 1)` (vp), z the init rows or the next b
        samples' draws from the seeded generator (`_draws`)."""
        z = self.init[first:first + b] if self.init is not None else self._draws(b)
        s0 = float(self.sigmas[0])
        return (z * (s0 if self.config.convention == "sigma" else math.sqrt(s0**2 + 1))).to(self.device)

    def _draws(self, b: int) -> torch.Tensor:
        """The next b samples' standard normal draws from the seeded generator's stream: each sample takes the
        next `padded` numbers (its size rounded up to a multiple of `RANDN_BLOCK`; torch's CPU randn makes its
        normals in blocks of 16, so a draw that ends on a block's end leaves the stream where any split of it
        would) and keeps the first ones. So a sample's z does not depend on the batch size, and for sample
        sizes that are a multiple of 16 (images, latents) the run's z is a pipeline's `randn((n, ...),
        generator)`, whatever the batches."""
        numel = math.prod(self.source.shape)
        padded = -(-numel // RANDN_BLOCK) * RANDN_BLOCK
        z = torch.randn(b, padded, generator=self.g, dtype=self.dtype)
        return (z if padded == numel else z[:, :numel]).reshape(b, *self.source.shape)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The sample in the convention: x (sigma), or the VP sample `x / sqrt(sigma_N^2 + 1)` (vp)."""
        return x if self.config.convention == "sigma" else x / math.sqrt(float(self.sigmas[-1]) ** 2 + 1)

    @property
    def analytic(self) -> bool:
        return isinstance(self.source.denoiser, MixtureTarget)

    @property
    def units_done(self) -> int:
        return self.skipped + len(self.xs)

    def start_at(self, unit: int) -> None:
        """Begin at batch `unit + 1` of the run (a shard): the seed's noise stream is advanced past the draws
        of batches 1..unit, so every later batch gets the same z as in the whole run."""
        for k in range(unit):
            if self.init is None:
                self._draws(min(self.batch, self.config.n - k * self.batch))
        self.skipped = unit

    @staticmethod
    def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
        """The state of the whole run from its consecutive shards' final states: batches, x0 and labels in
        order, NFE the max, seconds the sum, the generator where the last shard left it."""
        return {"xs": [x for s in states for x in s["xs"]], "x0s": [x for s in states for x in s["x0s"]],
                "labels": [y for s in states for y in s.get("labels", [])], "nfe": max(s["nfe"] for s in states),
                "seconds": sum(s["seconds"] for s in states), "rng": states[-1]["rng"]}

    def _labels(self, first: int, b: int) -> torch.Tensor | None:
        """Class labels of samples `first .. first + b - 1` for class-conditional models: the `class_label`
        setting, else the classes in turn; None for unconditional ones."""
        classes, label = self.source.classes, self.config.class_label
        if not classes:
            return None
        return torch.full((b,), label) if label is not None else torch.tensor(classes)[torch.arange(first, first + b)
                                                                                       % len(classes)]

    def advance(self) -> list[Row]:
        cfg = self.config
        first, b = self.next_batch()
        x0 = self.initial_state(first, b)
        labels = self._labels(first, b)
        denoiser = self.conditioned(first, b)
        start = time.perf_counter()
        if self.tuned is not None:
            x, nfe = self.tuned.run(denoiser, x0), self.tuned.nfe
        else:
            x, nfe = self.prepared.run(denoiser, x0, seed=self.seed, first_index=first, compile=cfg.compile)
        seconds = time.perf_counter() - start
        if not bool(torch.isfinite(x).all()):
            raise NumericalFailure(f"sampler {self.sampler} produced non-finite samples at {len(self.sigmas) - 1} "
                                   f"steps; {self.hint}")
        self.xs.append(self.output(x).cpu())
        self.x0s.append(x0.cpu())
        self.labels += [] if labels is None else [labels]
        self.nfe, self.seconds = max(self.nfe, nfe), self.seconds + seconds
        return [{"batch": self.units_done, "samples": b, "nfe": nfe, "seconds": seconds}]

    def state_dict(self) -> dict[str, Any]:
        return {"xs": self.xs, "x0s": self.x0s, "labels": self.labels, "nfe": self.nfe, "seconds": self.seconds,
                "rng": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.xs, self.x0s, self.nfe, self.seconds = state["xs"], state["x0s"], state["nfe"], state["seconds"]
        self.labels = state.get("labels", [])
        self.g.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        labels = {"labels": torch.cat(self.labels)} if self.labels else {}
        return {"x": torch.cat(self.xs), "x0": torch.cat(self.x0s), "sigmas": self.sigmas, **labels}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        x, x0 = torch.cat(self.xs), torch.cat(self.x0s)
        metrics: dict[str, Any] = {"nfe": self.nfe, "seconds": self.seconds, "samples_per_s": len(x) / self.seconds}
        if self.analytic:
            metrics.update(self._analytic_metrics(x0, x))
        elif self.source.data in DATASETS:  # a model trained on bundled data: distance to held-out data
            metrics.update(self._heldout_metrics(x.flatten(1)))
        atomic_write_json(out / "metrics.json", metrics)
        images = self.images(out, x)
        if images is not None and self.config.save_png is not None:
            plots.image_pngs(self.config.save_png, images)
        if plots_on and images is not None:
            plots.image_grid_png(out / "grid.png", images)
        elif plots_on:
            title = f"{self.source.name} {self.sampler} NFE={self.nfe}"
            with one_step(self.progress, "figure"):
                plots.sample_panels(out / "scatter.png", [(title, x)], self._plot_reference(len(x)))
        return metrics

    def images(self, out: Path, x: torch.Tensor) -> torch.Tensor | None:
        """The samples as images (n, C, H, W): decoded by the pipeline's VAE in batches (then also written to
        images.npz), or reshaped; None for samples that are not images."""
        if self.source.decoder is None:
            shape = self.source.image_shape
            return None if shape is None else x.reshape(len(x), *shape)
        images = self.source.decoder(x, self.batch)
        atomic_save_npz(out / "images.npz", images=images.numpy())
        return images

    def _plot_reference(self, n: int) -> torch.Tensor | None:
        """What the scatter draws under the samples: exact target samples, or held-out data (None otherwise)."""
        n = min(n, 5000)
        if self.analytic:
            return self.source.denoiser.sample(n, make_generator(self.seed + 54321))
        data = self.source.data
        return sample_data(data, n, make_generator(self.seed + 54321), split="test") if data in DATASETS else None

    def _heldout_metrics(self, x: torch.Tensor) -> dict[str, Any]:
        data = self.source.data
        held_out = sample_data(data, len(x), make_generator(self.seed + 12345), split="test")
        with one_step(self.progress, "metrics vs held-out data"):
            out: dict[str, Any] = {f"{k}_heldout": v for k, v in distribution_errors(x, held_out, self.seed).items()}
            if data in IMAGE_DATA:
                out.update(heldout_image_metrics(x, data))
        return out

    def _analytic_metrics(self, x0: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.config.reference:
            ref = reference_flow(self.source.denoiser, x0, float(self.sigmas[0]),
                                 progress=in_phase(self.progress, "reference solve"))
            err = ((x - ref) ** 2).sum(1).sqrt()
            out.update(endpoint_rmse=float(err.pow(2).mean().sqrt()), endpoint_max=float(err.max()))
        exact = self.source.denoiser.sample(x.shape[0], make_generator(self.seed + 12345))
        with one_step(self.progress, "sliced W2, MMD vs exact samples"):
            out.update(distribution_errors(x, exact, self.seed))
        return out


def distribution_errors(x: torch.Tensor, ref: torch.Tensor, seed: int) -> dict[str, float]:
    """Sliced W2 and MMD² of samples `x` against reference samples `ref` (gentool.core.metrics)."""
    from gentool.core.metrics import mmd2, sliced_w2

    x, ref = x.double().cpu(), ref.double().cpu()
    return {"sliced_w2": float(sliced_w2(x, ref, generator=make_generator(seed))),
            "mmd2": float(mmd2(x[:MMD_MAX], ref[:MMD_MAX]))}


SPEC = JobSpec("sample", SampleConfig, SampleJob,
               "Sample with a diffusion-ODE sampler; write samples.npz, a plot, metrics.json and config.json.")
