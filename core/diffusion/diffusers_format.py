"""Diffusers model directories <-> `DiscreteDenoiser`: find, load (local path or a hub id in the local cache;
nothing is downloaded) and save.

A directory holds a diffusers model either flat (`config.json` with `_class_name`, the weights and
`scheduler_config.json`: what `gentool train` writes and `UNet2DModel.from_pretrained(dir)` reads) or as a
pipeline (`unet/` and `scheduler/` subfolders). The scheduler config gives the noise table (betas), the
`prediction_type` and the `timestep_spacing`. An optional `gentool.json` records what gentool knows about the
model (`data`: the bundled data set it was trained on; `null_class`: the unconditional class of a class-conditional
model trained for classifier-free guidance).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.discrete import DiscreteSchedule
from gentool.core.diffusion.discrete_denoiser import Clipping, DiscreteDenoiser, Prediction
from gentool.core.errors import BadInput
from gentool.core.io import atomic_write_bytes, atomic_write_json

SUPPORTED_MODELS = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel")
NET_FOLDERS = ("unet", "transformer")  # where a pipeline keeps its denoising net
SCHEDULER_FILE, META_FILE, MODEL_FILE = "scheduler_config.json", "gentool.json", "config.json"
PIPELINE_FILE = "model_index.json"
WEIGHTS = "diffusion_pytorch_model"  # diffusers' weight files: WEIGHTS.safetensors, WEIGHTS.bin, sharded WEIGHTS-...
INSTALL_HINT = "pip install 'gentool[diffusers]'"


@dataclass(frozen=True)
class DiffusersModel:
    """A loaded model: its denoiser, where it came from, the number of classes of a class-conditional net (None:
    unconditional), what `gentool.json` says (`data`, `null_class`), the x_0 clipping its scheduler config
    asks for and that config (`scheduler`)."""

    denoiser: DiscreteDenoiser
    path: Path
    num_classes: int | None = None
    data: str | None = None
    null_class: int | None = None
    clipping: Clipping = Clipping()
    scheduler: Mapping[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path} is not a JSON object")
    return value


def _is_model_dir(path: Path) -> bool:
    if not (path / MODEL_FILE).is_file():
        return False
    try:
        return "_class_name" in json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


def find_model_dir(root: Path) -> Path | None:
    """The diffusers model directory in `root`: `root` itself (flat) or `root/unet`, `root/transformer`
    (pipeline), else None."""
    return next((d for d in (root, *(root / f for f in NET_FOLDERS)) if _is_model_dir(d)), None)


def resolve(ref: str | Path) -> Path:
    """A local directory, or the cached snapshot of hub id `ref` (never downloaded); else `BadInput`."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise BadInput(f"model not found: {ref} (hub ids need the diffusers extra: {INSTALL_HINT})") from None
    try:
        return Path(snapshot_download(str(ref), local_files_only=True))
    except HFValidationError:
        raise BadInput(f"model not found: {ref}") from None
    except OSError:  # LocalEntryNotFoundError: not in the local hub cache
        raise BadInput(f"model not found: {ref} is neither a local path nor a hub model in the local cache "
                       "(nothing is downloaded at run time)") from None


def _scheduler_config(root: Path, model_dir: Path) -> tuple[Path, dict[str, Any]]:
    for path in (model_dir / SCHEDULER_FILE, root / "scheduler" / SCHEDULER_FILE, root / SCHEDULER_FILE,
                 model_dir.parent / "scheduler" / SCHEDULER_FILE):
        if path.is_file():
            return path, _read_json(path)
    raise BadInput(f"no scheduler config for the diffusers model in {model_dir} ({SCHEDULER_FILE} there, or "
                   f"scheduler/{SCHEDULER_FILE} beside it)")


def _schedule(path: Path, config: Mapping[str, Any]) -> tuple[DiscreteSchedule, Prediction]:
    """Noise table and prediction type of a scheduler config; a config of another kind is `BadInput` naming it."""
    if not any(k in config for k in ("beta_schedule", "trained_betas", "beta_start")):
        raise BadInput(f"{path}: scheduler {config.get('_class_name')!r} has no discrete beta schedule; only "
                       "DDPM-family (discrete VP) models are supported")
    try:
        return DiscreteSchedule.from_config(config), Prediction.named(config.get("prediction_type", "epsilon"))
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None


def _model_class(model_dir: Path) -> type:
    name = _read_json(model_dir / MODEL_FILE).get("_class_name")
    if name not in SUPPORTED_MODELS:
        raise BadInput(f"{model_dir / MODEL_FILE}: model class {name!r} is not supported; supported: "
                       f"{', '.join(SUPPORTED_MODELS)}")
    try:
        import diffusers
    except ImportError:
        raise BadInput(f"reading diffusers models needs the diffusers package: {INSTALL_HINT}") from None
    return getattr(diffusers, name)


@contextmanager
def _diffusers_quiet() -> Iterator[None]:
    """Silence diffusers' log (a failed load is reported once, as `BadInput`), then restore its level."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _load_net(model_dir: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    cls = _model_class(model_dir)
    if not any(model_dir.glob(f"{WEIGHTS}*")):
        raise BadInput(f"no weights in {model_dir} ({WEIGHTS}.safetensors or .bin)")
    try:
        with _diffusers_quiet():
            net = cls.from_pretrained(model_dir, torch_dtype=dtype, low_cpu_mem_usage=False, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot load the diffusers model in {model_dir}: {reason}") from None
    return net.to(device).eval().requires_grad_(False)


def _sample_shape(config: Mapping[str, Any]) -> tuple[int, int, int]:
    size = config.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(config.get("in_channels", 3)), int(h), int(w))


def _classes(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(number of class labels, the unconditional one): a UNet's `num_class_embeds` (no null class known);
    a DiT's `num_embeds_ada_norm` classes plus its classifier-free-guidance label, the last."""
    if config.get("num_embeds_ada_norm") is not None and config.get("norm_type") == "ada_norm_zero":
        n = int(config["num_embeds_ada_norm"])
        return n + 1, n
    return config.get("num_class_embeds"), None


def load_diffusers(ref: str | Path, device: torch.device | str = "cpu", integer_timesteps: bool = False,
                   dtype: torch.dtype = torch.float32) -> DiffusersModel:
    """Load the diffusers model at `ref` (a directory, flat or pipeline, or a cached hub id) as `D(x, sigma)`;
    the net in `dtype`."""
    root = resolve(ref)
    model_dir = find_model_dir(root) if root.is_dir() else None
    if model_dir is None:
        raise BadInput(f"no model in {root}: expected ckpt.pt (gentool train) or a diffusers model ({MODEL_FILE} "
                       f"with _class_name, or unet/{MODEL_FILE})")
    sched_path, sched_config = _scheduler_config(root, model_dir)
    schedule, prediction = _schedule(sched_path, sched_config)
    net = _load_net(model_dir, device, dtype)
    meta = _read_json(model_dir / META_FILE) if (model_dir / META_FILE).is_file() else {}
    denoiser = DiscreteDenoiser(net, schedule, prediction, _sample_shape(net.config), integer_timesteps)
    num_classes, null = _classes(net.config)
    return DiffusersModel(denoiser, model_dir, num_classes, meta.get("data"), meta.get("null_class", null),
                          Clipping.from_config(sched_config), sched_config)


def save_diffusers(path: str | Path, denoiser: DiscreteDenoiser, scheduler: Mapping[str, Any],
                   meta: Mapping[str, Any]) -> Path:
    """Write `denoiser`'s net in diffusers format to directory `path` (flat: weights, `scheduler_config.json` of a
    `DDPMScheduler` with `scheduler` and the denoiser's prediction type, `gentool.json` with `meta`, then
    `config.json` last), each file atomically. `UNet2DModel.from_pretrained(path)` and `load_diffusers` read it."""
    from diffusers import DDPMScheduler

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        denoiser.net.save_pretrained(tmp)
        DDPMScheduler.from_config({**scheduler, "prediction_type": denoiser.prediction.value}).save_pretrained(tmp)
        files = sorted(Path(tmp).iterdir(), key=lambda f: (f.name == MODEL_FILE, f.name))
        for f in files[:-1]:
            atomic_write_bytes(path / f.name, f.read_bytes())
        atomic_write_json(path / META_FILE, dict(meta))
        atomic_write_bytes(path / files[-1].name, files[-1].read_bytes())
    return path


def save_pipeline(root: str | Path, denoiser: DiscreteDenoiser, scheduler: Mapping[str, Any],
                  meta: Mapping[str, Any]) -> Path:
    """Write `denoiser`'s net as a diffusers `DDPMPipeline` into `root`: `unet/` (weights, `config.json`,
    `gentool.json` with `meta`), `scheduler/scheduler_config.json` (a `DDPMScheduler` with `scheduler` and the
    prediction type) and `model_index.json` last, each file atomically; other files in `root` are left alone.
    `DiffusionPipeline.from_pretrained(root)` and `load_diffusers(root)` (or `root/unet`) read it."""
    from diffusers import DDPMPipeline, DDPMScheduler

    root = Path(root)
    sched = DDPMScheduler.from_config({**scheduler, "prediction_type": denoiser.prediction.value})
    with tempfile.TemporaryDirectory() as tmp, _diffusers_quiet():
        DDPMPipeline(unet=denoiser.net, scheduler=sched).save_pretrained(tmp)
        files = sorted((f for f in Path(tmp).rglob("*") if f.is_file()),
                       key=lambda f: (f.name == PIPELINE_FILE, f.name == MODEL_FILE, str(f)))
        for f in files:
            if f.name == PIPELINE_FILE:
                atomic_write_json(root / "unet" / META_FILE, dict(meta))
            atomic_write_bytes(root / f.relative_to(tmp), f.read_bytes())
    return root
