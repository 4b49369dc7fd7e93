"""Denoiser checkpoints: a dict with `"kind": "gentool-denoiser"`, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.denoisers import EDMPrecond
from gentool.core.diffusion.discrete_denoiser import DiscreteDenoiser
from gentool.core.diffusion.training import KIND, TrainConfig, build_denoiser
from gentool.core.errors import BadInput
from gentool.core.io import atomic_torch_save


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write checkpoint `state` to `path` atomically."""
    return atomic_torch_save(path, state)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; a missing file or one of another kind is `BadInput`."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise BadInput(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise BadInput(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind != KIND:
        raise BadInput(f"checkpoint {path} has kind {kind!r}; expected {KIND!r}")
    return state


def denoiser_from_state(
    state: dict[str, Any], device: torch.device | str = "cpu", ema: bool = True
) -> EDMPrecond | DiscreteDenoiser:
    """Rebuild the (EMA by default) denoiser of a checkpoint dict, in eval mode."""
    model = build_denoiser(TrainConfig(**state["config"]), int(state["dim"]), float(state["sigma_data"]))
    model.load_state_dict(state["ema" if ema else "model"])
    return model.to(device).eval().requires_grad_(False)


def load_denoiser(path: str | Path, device: torch.device | str = "cpu") -> EDMPrecond | DiscreteDenoiser:
    """The EMA denoiser `D(x, sigma)` saved at `path` (a file, or a run directory holding `ckpt.pt`)."""
    return denoiser_from_state(load_checkpoint(path), device)
