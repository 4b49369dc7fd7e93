"""The other parts of a diffusers pipeline directory (`model_index.json`): a CLIP text encoder with its tokenizer
(prompts -> the net's `encoder_hidden_states`) and an `AutoencoderKL` (sampling runs on its latents; images are
decoded at the end). Nothing is downloaded: every part is read from the directory.

    latents z_0 = vae.encode(image) * scaling_factor,   image = vae.decode(z_0 / scaling_factor)

with the latent side `H / 2^(levels - 1)` for images of side H (`vae_scale_factor`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.diffusers_format import INSTALL_HINT, PIPELINE_FILE, _diffusers_quiet, _read_json
from gentool.core.errors import BadInput

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def require_module(name: str) -> Any:
    """`import name`, or `BadInput` naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BadInput(f"this model needs the {name} package: {INSTALL_HINT}") from None


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """Prompts -> `(B, L, E)` embeddings, as `StableDiffusionPipeline.encode_prompt` (no clip_skip): token ids
    padded to the tokenizer's `model_max_length` (truncated), the encoder's last hidden state."""

    tokenizer: Any
    encoder: torch.nn.Module

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        mask = tokens.attention_mask.to(device) if getattr(self.encoder.config, "use_attention_mask", False) else None
        with torch.no_grad():
            return self.encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


@dataclass(frozen=True, eq=False)
class LatentDecoder:
    """`image = vae.decode(z / scaling_factor)` in batches, images `(n, C, H, W)` in about [-1, 1] (float32,
    on the CPU)."""

    vae: torch.nn.Module
    scaling_factor: float

    @property
    def scale(self) -> int:
        """Image side / latent side: 2^(levels - 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def __call__(self, latents: torch.Tensor, batch: int) -> torch.Tensor:
        device, dtype = next(self.vae.parameters()).device, next(self.vae.parameters()).dtype
        out = []
        with torch.no_grad():
            for chunk in latents.split(batch):
                out.append(self.vae.decode((chunk / self.scaling_factor).to(device, dtype)).sample.float().cpu())
        return torch.cat(out)


@dataclass(frozen=True)
class PipelineParts:
    """What a pipeline directory has besides its denoising net and scheduler."""

    text: TextEncoder | None = None
    decoder: LatentDecoder | None = None


def _component(index: dict[str, Any], name: str) -> tuple[str, str] | None:
    """(library, class) of component `name` in a `model_index.json`, None where it is absent or null."""
    entry = index.get(name)
    if not isinstance(entry, list | tuple) or len(entry) != 2 or entry[1] is None:
        return None
    return str(entry[0]), str(entry[1])


def _load(root: Path, name: str, library: str, cls_name: str, device: torch.device | str,
          dtype: torch.dtype | None) -> Any:
    """Component `name` of the pipeline at `root` (class `cls_name` of `library`), from its subfolder only."""
    if library not in ("diffusers", "transformers"):
        raise BadInput(f"{root / PIPELINE_FILE}: {name} comes from {library!r}; supported: diffusers, transformers")
    module = require_module(library)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise BadInput(f"{root / PIPELINE_FILE}: {name} class {cls_name!r} is not in {module.__name__}")
    kwargs = {"local_files_only": True} | ({"torch_dtype": dtype} if dtype is not None else {})
    try:
        with _diffusers_quiet():
            part = cls.from_pretrained(root / name, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot load the {name} of the pipeline in {root}: {reason}") from None
    return part.to(device).eval().requires_grad_(False) if isinstance(part, torch.nn.Module) else part


def load_parts(root: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> PipelineParts:
    """The text encoder + tokenizer and the VAE that `root/model_index.json` lists (each optional)."""
    if not (root / PIPELINE_FILE).is_file():
        return PipelineParts()
    index = _read_json(root / PIPELINE_FILE)
    names = {n: _component(index, n) for n in ("text_encoder", "tokenizer", "vae")}
    text = None
    if names["text_encoder"] is not None and names["tokenizer"] is not None:
        encoder = _load(root, "text_encoder", *names["text_encoder"], device, dtype)
        text = TextEncoder(_load(root, "tokenizer", *names["tokenizer"], device, None), encoder)
    decoder = None
    if names["vae"] is not None:
        vae = _load(root, "vae", *names["vae"], device, dtype)
        decoder = LatentDecoder(vae, float(vae.config.get("scaling_factor", 0.18215)))
    return PipelineParts(text, decoder)
