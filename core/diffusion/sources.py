"""What `gentool sample` samples from: an analytic target, a `gentool train` checkpoint or a diffusers model, as one
`SampleSource` (the denoiser and what the sampler and the outputs need to know about it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.checkpoints import denoiser_from_state, load_checkpoint
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.diffusion.diffusers_format import NET_FOLDERS, load_diffusers
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.diffusion.discrete_denoiser import ClassConditioned, Clipping, DiscreteDenoiser
from gentool.core.diffusion.models import image_shape
from gentool.core.diffusion.pipelines import LatentDecoder, TextEncoder, load_parts
from gentool.core.diffusion.targets import make_target
from gentool.core.errors import BadInput

EDM_SIGMA_RANGE = (0.002, 80.0)  # EDM's defaults, for denoisers defined at every sigma


@dataclass(frozen=True)
class SampleSource:
    """`denoiser` draws samples of `shape`; `sigma_range` is its default `(sigma_min, sigma_max)`; `schedule`
    the noise table of a discrete-table model; `image_shape` `(C, H, W)` when samples are images; `data` the
    bundled data set it was trained on; `num_classes`/`null_class` for class-conditional models; `clipping` the
    x_0 clipping of a diffusers model's scheduler config; `text` the prompt encoder of a text-conditional
    pipeline; `decoder` the VAE of a latent one (samples are latents of `shape`, decoded to images);
    `scheduler` a diffusers model's scheduler config."""

    denoiser: Denoiser
    shape: tuple[int, ...]
    name: str
    sigma_range: tuple[float, float] = EDM_SIGMA_RANGE
    schedule: DiscreteSchedule | None = None
    image_shape: tuple[int, int, int] | None = None
    data: str | None = None
    num_classes: int | None = None
    null_class: int | None = None
    clipping: Clipping = Clipping()
    text: TextEncoder | None = None
    decoder: LatentDecoder | None = None
    scheduler: Mapping[str, Any] | None = None

    @property
    def classes(self) -> tuple[int, ...]:
        """The labels a sample may carry (the null class excluded); empty for unconditional models."""
        return tuple(c for c in range(self.num_classes or 0) if c != self.null_class)

    def conditioned(self, labels: torch.Tensor, cfg: float) -> Denoiser:
        """The denoiser for a batch with class `labels`, guided with scale `cfg` against the null class."""
        if not isinstance(self.denoiser, DiscreteDenoiser):
            raise BadInput(f"{self.name} is not class-conditional")
        return ClassConditioned(self.denoiser, labels, cfg, self.null_class)


def target_source(name: str, dim: int) -> SampleSource:
    """Analytic target `name` (exact denoiser; `dim` for the targets of any dimension)."""
    target = make_target(name, dim)
    return SampleSource(target, (target.dim,), name)


def _discrete_source(denoiser: DiscreteDenoiser, shape: tuple[int, ...], name: str, data: str | None,
                     **classes: int | None) -> SampleSource:
    return SampleSource(denoiser, shape, name, (denoiser.sigma_min, denoiser.sigma_max), denoiser.schedule,
                        denoiser.sample_shape, data, **classes)


def checkpoint_source(path: str | Path, device: torch.device | str) -> SampleSource:
    """A `gentool train` checkpoint (file or run directory); flattened samples, images when the dim is square
    and the data are images."""
    state = load_checkpoint(path)
    denoiser, dim, data = denoiser_from_state(state, device), int(state["dim"]), state.get("data")
    if isinstance(denoiser, DiscreteDenoiser):
        return _discrete_source(denoiser, (dim,), "model", data)
    return SampleSource(denoiser, (dim,), "model", image_shape=image_shape(dim) if data == "digits" else None,
                        data=data)


def diffusers_source(ref: str | Path, device: torch.device | str, integer_timesteps: bool = False,
                     null_class: int | None = None, dtype: torch.dtype = torch.float32,
                     size: tuple[int | None, int | None] = (None, None)) -> SampleSource:
    """A diffusers model or pipeline (directory or cached hub id); samples of its `(C, H, W)` (latents of images
    of `size` (height, width) when given: the VAE factor divides them). `null_class` overrides the unconditional
    class recorded in `gentool.json` (or a DiT's own); the nets run in `dtype`."""
    model = load_diffusers(ref, device, integer_timesteps, dtype)
    null = null_class if null_class is not None else model.null_class
    parts = load_parts(model.path.parent, device, dtype) if model.path.name in NET_FOLDERS else load_parts(
        model.path, device, dtype)
    denoiser = model.denoiser
    if size != (None, None):
        denoiser.sample_shape = latent_shape(denoiser.sample_shape, size, parts.decoder)
    source = _discrete_source(denoiser, denoiser.sample_shape, model.path.name, model.data,
                              num_classes=model.num_classes, null_class=null)
    return dataclasses.replace(source, clipping=model.clipping, text=parts.text, decoder=parts.decoder,
                               scheduler=model.scheduler)


def latent_shape(shape: tuple[int, int, int], size: tuple[int | None, int | None],
                 decoder: LatentDecoder | None) -> tuple[int, int, int]:
    """`(C, height/f, width/f)` (f the VAE factor, 1 without a VAE); a side not given keeps the net's."""
    f = decoder.scale if decoder is not None else 1
    sides = []
    for name, side, default in zip(("height", "width"), size, shape[1:], strict=True):
        if side is not None and (side % f or side < f):
            raise BadInput(f"{name} must be a positive multiple of {f} (the VAE's factor), got {side}")
        sides.append(default if side is None else side // f)
    return (shape[0], *sides)


def is_checkpoint(ref: str | Path) -> bool:
    """True when `ref` names a gentool checkpoint: an existing file, or a directory holding `ckpt.pt`."""
    path = Path(ref).expanduser()
    return path.is_file() or (path / "ckpt.pt").is_file()


def model_source(ref: str | Path, device: torch.device | str, integer_timesteps: bool = False,
                 null_class: int | None = None, dtype: torch.dtype = torch.float32,
                 size: tuple[int | None, int | None] = (None, None)) -> SampleSource:
    """A gentool checkpoint when `ref` is one, else a diffusers model (the options apply to diffusers models)."""
    if is_checkpoint(ref):
        if integer_timesteps or null_class is not None or dtype != torch.float32 or size != (None, None):
            raise BadInput("integer_timesteps, null_class, dtype, height and width apply to diffusers models, not "
                           "to gentool checkpoints")
        return checkpoint_source(ref, device)
    return diffusers_source(ref, device, integer_timesteps, null_class, dtype, size)
