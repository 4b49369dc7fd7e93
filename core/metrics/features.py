"""Features of 8x8 digits from a small MLP classifier trained locally (no downloads), cached on disk."""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path

import torch
from gentool.core.data import digits_split
from gentool.core.errors import BadInput
from gentool.core.io import atomic_torch_save
from gentool.core.metrics._checks import as_samples
from gentool.core.nn import make_generator, mlp, seeded
from torch import nn

SIZES = (64, 128, 64, 10)
FORMAT = 2  # bump when the architecture or training recipe changes; stale caches are retrained
SEED, EPOCHS, BATCH, LR, WEIGHT_DECAY = 0, 25, 64, 2e-3, 1e-4


def cache_path() -> Path:
    """`$GENTOOL_CACHE/digits_classifier.pt`, else `~/.cache/gentool/digits_classifier.pt`."""
    root = os.environ.get("GENTOOL_CACHE") or Path.home() / ".cache" / "gentool"
    return Path(root) / "digits_classifier.pt"


def _new_model(seed: int) -> nn.Sequential:
    """The 64-128-64-10 ReLU MLP with weights initialised from `seed` (global RNG state left untouched)."""
    with seeded(seed):
        return mlp(SIZES, "relu")


def train_digits_classifier(seed: int = SEED) -> nn.Sequential:
    """Train the classifier on `digits_split("train")` with Adam and seeded mini-batches (CPU, float32)."""
    x, y = digits_split("train")
    x = x.float()
    model = _new_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    g = make_generator(seed)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x), generator=g).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval().requires_grad_(False)


def classifier_accuracy(model: nn.Module, split: str = "test") -> float:
    """Share of `digits_split(split)` classified correctly."""
    x, y = digits_split(split)
    with torch.no_grad():
        pred = model(x.to(next(model.parameters()).dtype)).argmax(dim=1)
    return float((pred == y).double().mean())


def _load(path: Path) -> nn.Sequential | None:
    """The cached classifier, or None when the file is missing, unreadable or of another format."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != FORMAT:
            return None
        model = _new_model(SEED)
        model.load_state_dict(blob["state_dict"])
        return model.eval().requires_grad_(False)
    except (OSError, EOFError, RuntimeError, KeyError, AttributeError, ValueError, pickle.UnpicklingError):
        return None


@lru_cache(maxsize=4)
def _cached_classifier(path: Path) -> nn.Sequential:
    model = _load(path)
    if model is None:
        model = train_digits_classifier()
        atomic_torch_save(path, {"format": FORMAT, "state_dict": model.state_dict(),
                                 "test_accuracy": classifier_accuracy(model)})
    return model


def digits_classifier(device: torch.device | str | None = None) -> nn.Sequential:
    """The digits classifier (float32, eval mode, frozen) on `device`: loaded from the cache, else trained
    (a few seconds on CPU) and cached atomically. Returns a fresh copy, safe to move or modify."""
    model = _new_model(SEED)
    model.load_state_dict(_cached_classifier(cache_path()).state_dict())
    return model.eval().requires_grad_(False).to(device or "cpu")


def digits_features(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Penultimate-layer (64-d, after ReLU) features of flattened digits `x (n, 64)` in [-1, 1].

    Returned on `device` (default: the device of `x`) in the dtype of `x`.
    """
    x = as_samples(x)
    if x.shape[1] != SIZES[0]:
        raise BadInput(f"digits_features expects (n, 64) flattened 8x8 digits, got shape {tuple(x.shape)}")
    device = torch.device(device) if device is not None else x.device
    body = digits_classifier(device)[:-1]
    with torch.no_grad():
        return body(x.to(device, torch.float32)).to(x.dtype)
