"""Device names of every command: `auto` (CUDA when available), `cpu`, `cuda`, `cuda:K`."""

from __future__ import annotations

import torch
from gentool.core.errors import BadInput, choose

DEVICES = ("auto", "cpu", "cuda", "cuda:K")


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` → cuda if available else cpu; a CUDA device without CUDA is bad input."""
    if isinstance(name, torch.device):
        return name
    text = str(name).strip()
    kind, _, index = text.partition(":")
    choose("device", kind, ("auto", "cpu", "cuda"))
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if index and (kind != "cuda" or not index.isdigit()):
        raise BadInput(f"unknown device {text!r}; allowed: {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {text!r} requested but CUDA is not available; allowed here: auto, cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise BadInput(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(text)
