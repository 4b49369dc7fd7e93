"""Denoiser checkpoints: a dict with `"kind": "gentool-denoiser"`, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.denoisers import EDMPrecond
from gentool.core.diffusion.discrete_denoiser import DiscreteDenoiser
from gentool.core.diffusion.training import KIND, LEGACY_MLP_NOISE_FEATURES, TrainConfig, build_denoiser
from gentool.core.errors import BadInput
from gentool.core.io import atomic_torch_save, load_torch_file

CHECKPOINT_KEYS = ("config", "dim", "sigma_data", "model", "ema")


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
    state = load_torch_file(path, "checkpoint")
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind != KIND:
        raise BadInput(f"checkpoint {path} has kind {kind!r}; expected {KIND!r}")
    return state


def denoiser_from_state(
    state: dict[str, Any], device: torch.device | str = "cpu", ema: bool = True
) -> EDMPrecond | DiscreteDenoiser:
    """Rebuild the (EMA by default) denoiser of a checkpoint dict, in eval mode.

    The dict is checked against the network its config describes (keys, tensor names and shapes) before
    anything runs; a mismatch is one `BadInput` line naming the first problem.
    """
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise BadInput(f"checkpoint lacks {', '.join(missing)}; expected keys {', '.join(CHECKPOINT_KEYS)}")
    try:
        config = {"mlp_noise_features": LEGACY_MLP_NOISE_FEATURES, **state["config"]}  # older configs lack it
        model = build_denoiser(TrainConfig(**config), int(state["dim"]), float(state["sigma_data"]))
        model.load_state_dict(state["ema" if ema else "model"])
    except BadInput as exc:
        raise BadInput(f"checkpoint config is invalid: {exc}") from None
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError) as exc:
        reason = " ".join((str(exc).strip() or type(exc).__name__).split())[:300]
        raise BadInput(f"checkpoint does not match the denoiser its config describes: {reason}") from None
    return model.to(device).eval().requires_grad_(False)


SNAPSHOTS = "snapshots"  # the folder of a train run directory holding its snapshots (train's snapshots setting)


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """Where a train run keeps the EMA denoiser after `step` optimisation steps."""
    return Path(run_dir) / SNAPSHOTS / f"step_{step:09d}.pt"


def training_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """`(step, path)` of every checkpoint of a train run directory, by step: its snapshots and the final
    `ckpt.pt` (left out when a snapshot has its step); `BadInput` when there are no snapshots."""
    run_dir = Path(run_dir)
    found = {int(p.stem.removeprefix("step_")): p for p in sorted((run_dir / SNAPSHOTS).glob("step_*.pt"))
             if p.stem.removeprefix("step_").isdigit()}
    if not found:
        raise BadInput(f"{run_dir} has no training snapshots ({SNAPSHOTS}/step_*.pt); train with snapshots on")
    final = run_dir / "ckpt.pt"
    if final.is_file():
        step = int(load_checkpoint(final).get("step", -1))
        if step >= 0 and step not in found:
            found[step] = final
    return sorted(found.items())


def load_denoiser(path: str | Path, device: torch.device | str = "cpu") -> EDMPrecond | DiscreteDenoiser:
    """The EMA denoiser `D(x, sigma)` saved at `path` (a file, or a run directory holding `ckpt.pt`)."""
    return denoiser_from_state(load_checkpoint(path), device)
